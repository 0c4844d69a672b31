package nft

import (
	"context"
	"testing"

	"github.com/svcproxy/svcproxy/proxy"
	"github.com/svcproxy/svcproxy/sandbox"
	"github.com/svcproxy/svcproxy/textdiff"
)

// listing returns the canonical form of the kernel's own listing of our
// tables in ns.
func listing(t *testing.T, ns *sandbox.NS) string {
	t.Helper()
	out := ns.MustRun(t, "nft", "list", "ruleset")
	c, err := Canonical(out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return c
}

func syncAndCompare(t *testing.T, ns *sandbox.NS, b *Backend, s *proxy.State) {
	t.Helper()
	if err := b.Sync(context.Background(), s); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if got, want := listing(t, ns), Render(s); got != want {
		t.Fatalf("kernel listing differs from Render:\n%s", lineDiff(want, got))
	}
}

// lineDiff is a unified diff from what Render says to what the kernel holds.
func lineDiff(want, got string) string {
	return textdiff.Unified("want (Render)", "got (kernel)", want, got)
}

func TestKernelListingEqualsRender(t *testing.T) {
	sandbox.Require(t, "nft")
	ns := sandbox.New(t, "nft")
	b := New(WithNetNS(ns.FD()))
	syncAndCompare(t, ns, b, demoState(t))
}
