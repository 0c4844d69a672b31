package iptables

import (
	"context"
	"testing"
	"time"

	"github.com/svcproxy/svcproxy/golden"
	"github.com/svcproxy/svcproxy/sandbox"
)

// TestGoldenKernel: every golden case (testdata/golden), synced into a
// fresh network namespace with each iptables variant, lists (both
// families, canonical form) exactly as the case's iptables section says.
// When the golden files are being regenerated (SVCPROXY_UPDATE_GOLDEN=1),
// the listing is compared with Render instead, as the files may be
// rewritten concurrently.
func TestGoldenKernel(t *testing.T) {
	cases, err := golden.Load("../testdata/golden")
	if err != nil {
		t.Fatal(err)
	}
	eachMode(t, func(t *testing.T, m Mode) {
		start := time.Now()
		for _, c := range cases {
			t.Run(c.Name, func(t *testing.T) {
				st, mprobs := c.State()
				if len(mprobs) > 0 {
					t.Fatalf("manifest problems: %v", mprobs)
				}
				want := c.IPTables
				if golden.Update() {
					want = Render(st)
				}
				ns := sandbox.New(t, "gold")
				b := New(WithNetNS(ns.Name), WithMode(m))
				if err := b.Sync(context.Background(), st); err != nil {
					t.Fatalf("Sync: %v", err)
				}
				if d := golden.Diff(want, kernelListing(t, ns, m)); d != "" {
					t.Errorf("kernel listing (got) differs from the golden iptables section (want):\n%s", d)
				}
			})
		}
		t.Logf("%s: %d cases in %v", m, len(cases), time.Since(start).Round(time.Millisecond))
	})
}
