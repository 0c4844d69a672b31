package nft

import (
	"context"
	"strings"
	"testing"

	"github.com/svcproxy/svcproxy/proxy"
	"github.com/svcproxy/svcproxy/sandbox"
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

// lineDiff shows the lines only in want (-) and only in got (+).
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	count := map[string]int{}
	for _, l := range g {
		count[l]++
	}
	var b strings.Builder
	for _, l := range w {
		if count[l] > 0 {
			count[l]--
			continue
		}
		b.WriteString("- " + l + "\n")
	}
	wc := map[string]int{}
	for _, l := range w {
		wc[l]++
	}
	for _, l := range g {
		if wc[l] > 0 {
			wc[l]--
			continue
		}
		b.WriteString("+ " + l + "\n")
	}
	return b.String()
}

func TestKernelListingEqualsRender(t *testing.T) {
	sandbox.Require(t, "nft")
	ns := sandbox.New(t, "nft")
	b := New(WithNetNS(ns.FD()))
	syncAndCompare(t, ns, b, demoState(t))
}
