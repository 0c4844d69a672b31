package nft

import (
	"context"
	"net/netip"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/svcproxy/svcproxy/dptest"
	"github.com/svcproxy/svcproxy/proxy"
	"github.com/svcproxy/svcproxy/sandbox"
)

func baseState(t *testing.T) *proxy.State { return dptest.Scenarios[0].Build(t) }

// chainHandles lists "table chain handle" for our tables: a chain that is
// deleted and created again gets a new handle.
func chainHandles(t *testing.T, ns *sandbox.NS) []string {
	out := ns.MustRun(t, "nft", "-a", "list", "ruleset")
	var table string
	var hs []string
	re := regexp.MustCompile(`^\s*chain (\S+) \{ # handle (\d+)`)
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "table ") {
			table = l
		}
		if m := re.FindStringSubmatch(l); m != nil && strings.Contains(table, TableName) {
			hs = append(hs, table+" "+m[1]+" "+m[2])
		}
	}
	sort.Strings(hs)
	return hs
}

// traffic sends requests in a loop until stopped and counts failures.
type traffic struct {
	stop           chan struct{}
	wg             sync.WaitGroup
	ok, failed     atomic.Int64
	mu             sync.Mutex
	stickyAnswerer map[string]bool
	lastErr        error
}

func startTraffic(env *dptest.Env) *traffic {
	tr := &traffic{stop: make(chan struct{}), stickyAnswerer: map[string]bool{}}
	for _, target := range []struct {
		proto, to string
		sticky    bool
	}{{"tcp", "10.96.0.10:80", false}, {"udp", "10.96.0.11:53", false}, {"tcp", "10.96.0.13:80", true}, {"tcp", "192.168.50.2:30080", false}} {
		tr.wg.Add(1)
		go func() {
			defer tr.wg.Done()
			for {
				select {
				case <-tr.stop:
					return
				default:
				}
				a, err := env.Request(env.Client, target.proto, netip.MustParseAddrPort(target.to), 2*time.Second)
				if err != nil {
					tr.failed.Add(1)
					tr.mu.Lock()
					tr.lastErr = err
					tr.mu.Unlock()
					continue
				}
				tr.ok.Add(1)
				if target.sticky {
					tr.mu.Lock()
					tr.stickyAnswerer[a.Pod] = true
					tr.mu.Unlock()
				}
			}
		}()
	}
	return tr
}

func (tr *traffic) finish() { close(tr.stop); tr.wg.Wait() }

// A new svcproxy process adopts the rules of the previous one: no
// connection fails, no wanted chain is recreated, affinity is kept.
func TestRestartAdoptsWithoutInterruption(t *testing.T) {
	env := dptest.NewEnv(t)
	st := baseState(t)
	if err := New(WithNetNS(env.Node.FD())).Sync(context.Background(), st); err != nil {
		t.Fatal(err)
	}
	before := chainHandles(t, env.Node)
	tr := startTraffic(env)
	time.Sleep(300 * time.Millisecond)
	restarted := New(WithNetNS(env.Node.FD()))
	if err := restarted.Sync(context.Background(), st); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	tr.finish()
	if tr.failed.Load() != 0 || tr.ok.Load() < 20 {
		t.Fatalf("%d requests failed (last: %v), %d succeeded", tr.failed.Load(), tr.lastErr, tr.ok.Load())
	}
	if len(tr.stickyAnswerer) != 1 {
		t.Errorf("affinity lost across the restart: answers from %v", tr.stickyAnswerer)
	}
	if after := chainHandles(t, env.Node); strings.Join(before, "\n") != strings.Join(after, "\n") {
		t.Errorf("chains were recreated:\nbefore %v\nafter  %v", before, after)
	}
	if got, want := listing(t, env.Node), Render(st); got != want {
		t.Fatalf("after adoption:\n%s", lineDiff(want, got))
	}
	t.Logf("%d requests during the restart, none failed", tr.ok.Load())
}

// Someone else flushes or deletes our table, or slips a rule into one of
// our chains: the next full sync restores exactly what Render says.
func TestFullSyncRepairsTampering(t *testing.T) {
	sandbox.Require(t, "nft")
	ns := sandbox.New(t, "tamper")
	st := baseState(t)
	b := New(WithNetNS(ns.FD()))
	syncAndCompare(t, ns, b, st)
	for _, tamper := range [][]string{
		{"nft", "flush", "table", "ip", TableName},
		{"nft", "delete", "table", "ip6", TableName},
		{"nft", "insert", "rule", "ip", TableName, "services", "drop"},
		{"nft", "flush", "map", "ip", TableName, mapServiceIPs},
	} {
		ns.MustRun(t, tamper...)
		if got := listing(t, ns); got == Render(st) {
			t.Fatalf("%v changed nothing", tamper)
		}
		before := b.Repairs()
		b.RequestFullSync()
		syncAndCompare(t, ns, b, st)
		if b.Repairs() != before+1 {
			t.Errorf("%v: repairs %d → %d, want one more", tamper, before, b.Repairs())
		}
	}
	// A full sync with nothing changed is no repair.
	before := b.Repairs()
	b.RequestFullSync()
	syncAndCompare(t, ns, b, st)
	if b.Repairs() != before {
		t.Errorf("an untouched table counted as repaired")
	}
}

// A requested full sync is skipped only while the kernel's ruleset
// generation proves that no one committed anything since our last
// transaction; any commit, even to another table, makes it run.
func TestFullSyncSkippedOnlyWhenNothingCommitted(t *testing.T) {
	sandbox.Require(t, "nft")
	ns := sandbox.New(t, "gen")
	st := baseState(t)
	b := New(WithNetNS(ns.FD()))
	syncAndCompare(t, ns, b, st)

	b.RequestFullSync()
	syncAndCompare(t, ns, b, st)
	if b.SkippedFullSyncs() != 1 || b.lastMessages != 0 {
		t.Fatalf("untouched: skipped %d, %d messages; want 1 skipped, 0 messages", b.SkippedFullSyncs(), b.lastMessages)
	}
	// Incremental syncs keep the generation known.
	next := dptest.Scenarios[1].Build(t)
	syncAndCompare(t, ns, b, next)
	b.RequestFullSync()
	syncAndCompare(t, ns, b, next)
	if b.SkippedFullSyncs() != 2 {
		t.Fatalf("after an incremental sync: skipped %d, want 2", b.SkippedFullSyncs())
	}
	ns.MustRun(t, "nft", "add", "table", "inet", "someone-else")
	repairs := b.Repairs()
	b.RequestFullSync()
	syncAndCompare(t, ns, b, next)
	if b.SkippedFullSyncs() != 2 || b.lastMessages == 0 {
		t.Fatalf("after a foreign commit: skipped %d, %d messages; want a full sync", b.SkippedFullSyncs(), b.lastMessages)
	}
	if b.Repairs() != repairs {
		t.Errorf("a commit to another table counted as a repair of ours")
	}
	// And the generation is known again after it.
	b.RequestFullSync()
	syncAndCompare(t, ns, b, next)
	if b.SkippedFullSyncs() != 3 {
		t.Fatalf("after the full sync: skipped %d, want 3", b.SkippedFullSyncs())
	}
}

// Cleanup removes our tables and nothing else; syncs never touch other
// tables either.
func TestCleanupLeavesForeignRulesetIdentical(t *testing.T) {
	sandbox.Require(t, "nft")
	ns := sandbox.New(t, "own")
	foreign := `table ip foreign {
	chain input {
		type filter hook input priority filter; policy accept;
		tcp dport 22 accept
	}
}
table inet other {
	set blocked {
		type ipv4_addr
		elements = { 203.0.113.7 }
	}

	chain forward {
		type filter hook forward priority filter; policy accept;
		ip saddr @blocked drop
	}
}
`
	ns.MustRun(t, "sh", "-c", "nft -f - <<'EOF'\n"+foreign+"EOF")
	theirs := func() string {
		return ns.MustRun(t, "nft", "list", "table", "ip", "foreign") + ns.MustRun(t, "nft", "list", "table", "inet", "other")
	}
	snapshot, before := ns.MustRun(t, "nft", "list", "ruleset"), theirs()
	check := func(step string) {
		if got := theirs(); got != before {
			t.Fatalf("after %s the foreign tables changed:\n%s", step, lineDiff(before, got))
		}
	}
	b := New(WithNetNS(ns.FD()))
	syncAndCompare(t, ns, b, baseState(t))
	check("a sync")
	b.RequestFullSync()
	syncAndCompare(t, ns, b, dptest.Scenarios[1].Build(t))
	check("a full sync")
	syncAndCompare(t, ns, New(WithNetNS(ns.FD())), dptest.Scenarios[1].Build(t))
	check("a restart")
	if err := b.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if after := ns.MustRun(t, "nft", "list", "ruleset"); after != snapshot {
		t.Fatalf("foreign ruleset changed:\nbefore:\n%s\nafter:\n%s", snapshot, after)
	}
	// Cleanup of nothing is fine too.
	if err := New(WithNetNS(ns.FD())).Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// The kernel refuses a transaction: the rules of the last good sync stay,
// the error says why, and the next sync succeeds once the cause is gone.
func TestRefusedTransactionChangesNothing(t *testing.T) {
	sandbox.Require(t, "nft")
	ns := sandbox.New(t, "refuse")
	b := New(WithNetNS(ns.FD()))
	a := dptest.Scenarios[0].Build(t)
	syncAndCompare(t, ns, b, a)
	before := listing(t, ns)

	// Someone holds, as a base chain, a name the next sync must create:
	// the first scenario that needs a chain the current rules lack.
	var blocker string
	var next *proxy.State
	for _, sc := range dptest.Scenarios[1:] {
		next = sc.Build(t)
		ipTable, _, _ := strings.Cut(Render(next), "table ip6 ")
		for _, l := range strings.Split(ipTable, "\n") {
			if name, ok := strings.CutPrefix(strings.TrimSpace(l), "chain "); ok && !strings.Contains(before, "chain "+name) {
				blocker = strings.TrimSuffix(name, " {")
				break
			}
		}
		if blocker != "" {
			break
		}
	}
	if blocker == "" {
		t.Fatal("no scenario adds a chain")
	}
	ns.MustRun(t, "nft", "add", "chain", "ip", TableName, blocker, "{ type filter hook input priority 100; policy accept; }")
	withBlocker := listing(t, ns)

	err := b.Sync(context.Background(), next)
	if err == nil {
		t.Fatal("the kernel accepted a chain clashing with a base chain")
	}
	t.Logf("refused as expected: %v", err)
	if got := listing(t, ns); got != withBlocker {
		t.Fatalf("a refused transaction changed the kernel:\n%s", lineDiff(withBlocker, got))
	}
	ns.MustRun(t, "nft", "delete", "chain", "ip", TableName, blocker)
	syncAndCompare(t, ns, b, next) // the retry: a full sync
}

// Hostile names from manifests become safe nft identifiers.
func TestHostileNamesAreSafeIdentifiers(t *testing.T) {
	sandbox.Require(t, "nft")
	ns := sandbox.New(t, "names")
	m := `apiVersion: v1
kind: Service
metadata: {name: "a b;\"c\" } ; drop", namespace: "x\ny"}
spec: {clusterIP: 10.96.0.1, ports: [{name: "p@#", port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: s, namespace: "x\ny", labels: {kubernetes.io/service-name: "a b;\"c\" } ; drop"}}
addressType: IPv4
ports: [{name: "p@#", port: 8080, protocol: TCP}]
endpoints: [{addresses: [10.0.0.1]}]
`
	st := dptest.Scenario{Name: "hostile", Manifests: m}.Build(t)
	for _, l := range strings.Split(Render(st), "\n") {
		if strings.ContainsAny(l, "\";@#") && strings.Contains(l, "chain ") {
			t.Errorf("unsafe identifier in %q", l)
		}
	}
	syncAndCompare(t, ns, New(WithNetNS(ns.FD())), st)
}
