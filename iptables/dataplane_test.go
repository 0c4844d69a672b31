package iptables

import (
	"testing"

	"github.com/svcproxy/svcproxy/dptest"
	"github.com/svcproxy/svcproxy/proxy"
)

// TestDataplane runs the shared real-packet scenarios through the iptables
// backend, legacy and nft variants, and after every sync checks the
// kernel's iptables-save against Render.
func TestDataplane(t *testing.T) {
	eachMode(t, func(t *testing.T, m Mode) {
		var env *dptest.Env
		dptest.Run(t, func(e *dptest.Env) proxy.Backend {
			env = e
			return New(WithNetNS(e.Node.Name), WithMode(m))
		}, func(t *testing.T, s *proxy.State) {
			compare(t, env.Node, m, s)
		})
	})
}
