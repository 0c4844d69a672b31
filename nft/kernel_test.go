package nft

import (
	"context"
	"testing"

	"github.com/svcproxy/svcproxy/proxy"
	"github.com/svcproxy/svcproxy/sandbox"
	"github.com/svcproxy/svcproxy/scale"
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

// TestEndpointCountChanges changes endpoint counts back and forth, so that
// shared chains and their endpoint maps are created, shared, and deleted
// by incremental syncs; after each one the kernel holds exactly Render's
// table (no map or chain outlives its last user).
func TestEndpointCountChanges(t *testing.T) {
	sandbox.Require(t, "nft")
	ns := sandbox.New(t, "nft")
	b := New(WithNetNS(ns.FD()))
	in := scale.Cluster(5, 10) // svc-0 ClusterIP, svc-1 NodePort, svc-2 LoadBalancer (Local), svc-3 affinity, svc-4 ClusterIP
	steps := []struct {
		name       string
		svc, fewer int
	}{
		{"start", 0, 0},
		{"svc-4 to 9: same bucket, same chain", 4, 1},
		{"svc-4 to 8: a new clusterip chain (bucket 5–8)", 4, 2},
		{"svc-0 to 8: shares it", 0, 2},
		{"svc-4 back to 10", 4, 0},
		{"svc-0 back to 10: the 5–8 chain is gone", 0, 0},
		{"svc-1 to 7: new nodeport chains", 1, 3},
		{"svc-2 to 8: new external and nodeport chains", 2, 2},
		{"svc-2 to 0: no endpoints", 2, 10},
		{"svc-1 back to 10", 1, 0},
		{"svc-2 back to 10", 2, 0},
		{"svc-3 to 5: affinity", 3, 5},
	}
	for _, s := range steps {
		in.EndpointSlices[s.svc] = scale.Slice(s.svc, 10, s.fewer)
		syncAndCompare(t, ns, b, proxy.Build(in, scale.Config()))
	}
	// The table is back to where it started but for svc-3: its listing
	// must equal a fresh full sync's.
	b.RequestFullSync()
	syncAndCompare(t, ns, b, proxy.Build(in, scale.Config()))
}
