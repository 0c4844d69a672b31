package nft

import (
	"context"
	"strings"
	"testing"

	"github.com/svcproxy/svcproxy/proxy"
	"github.com/svcproxy/svcproxy/sandbox"
	"github.com/svcproxy/svcproxy/scale"
)

// smallPrefills makes every completed element message of a full sync's
// new endpoint maps a transaction of its own, for the test's duration.
func smallPrefills(t *testing.T) {
	old := prefillBytes
	prefillBytes = 1
	t.Cleanup(func() { prefillBytes = old })
}

// A cold full sync fills new endpoint maps in transactions of their own
// before the publishing one, and sets larger than one message in several;
// a restarted backend then adopts that table with other endpoint counts:
// maps that exist are refilled in the publishing transaction, new ones
// prefilled, and the old count's chain and maps go. Each time the kernel
// lists exactly Render.
func TestFullSyncInManyTransactions(t *testing.T) {
	sandbox.Require(t, "nft")
	smallPrefills(t)
	ns := sandbox.New(t, "split")
	in := scale.Cluster(300, 10) // the 10-endpoint map: 3,000+ elements, several messages
	in.EndpointSlices[299] = scale.Slice(299, 10, 3)
	b := New(WithNetNS(ns.FD()))
	before := b.txs
	syncAndCompare(t, ns, b, proxy.Build(in, scale.Config()))
	if n := b.txs - before; n < 4 {
		t.Errorf("cold sync in %d transactions; want chains, at least two prefills, and the publishing one", n)
	}

	in.EndpointSlices[299] = scale.Slice(299, 10, 0)
	in.EndpointSlices[298] = scale.Slice(298, 10, 5)
	syncAndCompare(t, ns, New(WithNetNS(ns.FD())), proxy.Build(in, scale.Config()))
}

// A full sync whose publishing transaction is refused, after its other
// transactions committed (chains, and the prefilled endpoint maps), leaves
// nothing reachable that was not before: here nothing, as the table was
// new. The next sync, a full one, completes the table.
func TestFailedFullSyncExposesNothing(t *testing.T) {
	sandbox.Require(t, "nft")
	smallPrefills(t)
	ns := sandbox.New(t, "halfway")
	st := proxy.Build(scale.Cluster(300, 10), scale.Config())

	// Someone made @service-ips too small for 300 services: it is adopted
	// as it is, and refilling it is refused.
	ns.MustRun(t, "nft", "add", "table", "ip", TableName)
	ns.MustRun(t, "nft", "add", "map", "ip", TableName, mapServiceIPs, "{ type ipv4_addr . inet_proto . inet_service : verdict; size 10; }")
	b := New(WithNetNS(ns.FD()))
	err := b.Sync(context.Background(), st)
	if err == nil {
		t.Fatal("the kernel accepted 300 elements into a map of size 10")
	}
	t.Logf("refused as expected: %v", err)
	if b.txs < 3 {
		t.Fatalf("%d transactions committed before the failure; the test wants chains and prefills among them", b.txs)
	}
	if !strings.Contains(listing(t, ns), "numgen random mod 10 map @clusterip-") {
		t.Fatal("the shared chains were not committed before the publishing transaction")
	}
	for _, set := range [][2]string{{"map", mapServiceIPs}, {"map", mapNodePorts}, {"map", mapFirewall}, {"map", mapNoEndpoints}, {"set", setHairpin}} {
		if out := ns.MustRun(t, "nft", "list", set[0], "ip", TableName, set[1]); strings.Contains(out, "elements") {
			t.Errorf("after the refused sync, @%s has elements:\n%s", set[1], out)
		}
	}
	ns.MustRun(t, "nft", "flush", "chain", "ip", TableName, chainServices)
	ns.MustRun(t, "nft", "delete", "map", "ip", TableName, mapServiceIPs)
	syncAndCompare(t, ns, b, st)
	if !b.LastSyncFull() {
		t.Error("the sync after a failure was not a full one")
	}
}

// An incremental sync too large for one transaction becomes a full sync,
// and none of the incremental transaction's queued messages reach the
// kernel.
func TestLargeIncrementalSyncFallsBackToFull(t *testing.T) {
	sandbox.Require(t, "nft")
	ns := sandbox.New(t, "fallback")
	b := New(WithNetNS(ns.FD()))
	in := scale.Cluster(20, 10)
	syncAndCompare(t, ns, b, proxy.Build(in, scale.Config()))

	old := maxMessages
	maxMessages = 50
	t.Cleanup(func() { maxMessages = old })
	for i := range 10 { // new count buckets: new chains and maps, removed ones
		in.EndpointSlices[i] = scale.Slice(i, 10, 1+i%5)
	}
	syncAndCompare(t, ns, b, proxy.Build(in, scale.Config()))
	if !b.LastSyncFull() {
		t.Fatal("the large change was synced incrementally")
	}
	in.EndpointSlices[3] = scale.Slice(3, 10, 0)
	syncAndCompare(t, ns, b, proxy.Build(in, scale.Config()))
}
