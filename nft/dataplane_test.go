package nft

import (
	"testing"

	"github.com/svcproxy/svcproxy/dptest"
	"github.com/svcproxy/svcproxy/proxy"
)

// TestDataplane runs the shared real-packet scenarios through the nftables
// backend, and after every sync checks the kernel's listing against Render.
func TestDataplane(t *testing.T) {
	var env *dptest.Env
	dptest.Run(t, func(e *dptest.Env) proxy.Backend {
		env = e
		return New(WithNetNS(e.Node.FD()))
	}, func(t *testing.T, s *proxy.State) {
		if got, want := listing(t, env.Node), Render(s); got != want {
			t.Fatalf("kernel listing differs from Render:\n%s", lineDiff(want, got))
		}
	})
}
