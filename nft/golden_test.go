package nft

import (
	"context"
	"testing"
	"time"

	"github.com/svcproxy/svcproxy/golden"
	"github.com/svcproxy/svcproxy/sandbox"
)

// TestGoldenKernel: every golden case (testdata/golden), synced into a
// fresh network namespace, lists in the kernel exactly as the case's
// nftables section says. When the golden files are being regenerated
// (SVCPROXY_UPDATE_GOLDEN=1), the listing is compared with Render instead,
// as the files may be rewritten concurrently.
func TestGoldenKernel(t *testing.T) {
	sandbox.Require(t, "nft")
	cases, err := golden.Load("../testdata/golden")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			st, mprobs := c.State()
			if len(mprobs) > 0 {
				t.Fatalf("manifest problems: %v", mprobs)
			}
			want := c.NFT
			if golden.Update() {
				want = Render(st)
			}
			ns := sandbox.New(t, "gold")
			b := New(WithNetNS(ns.FD()))
			t.Cleanup(func() { b.Close() })
			if err := b.Sync(context.Background(), st); err != nil {
				t.Fatalf("Sync: %v", err)
			}
			if d := golden.Diff(want, listing(t, ns)); d != "" {
				t.Errorf("kernel listing (got) differs from the golden nftables section (want):\n%s", d)
			}
		})
	}
	t.Logf("%d cases in %v", len(cases), time.Since(start).Round(time.Millisecond))
}
