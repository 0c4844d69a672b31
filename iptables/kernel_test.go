package iptables

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/svcproxy/svcproxy/proxy"
	"github.com/svcproxy/svcproxy/sandbox"
)

var modes = []Mode{ModeLegacy, ModeNFT}

// requireMode skips (fails under CI=true) unless root and the tools of
// mode m are there.
func requireMode(t *testing.T, m Mode) {
	t.Helper()
	var tools []string
	for _, f := range []proxy.Family{proxy.IPv4, proxy.IPv6} {
		for _, tool := range []string{"", "-save", "-restore"} {
			tools = append(tools, command(m, f, tool))
		}
	}
	sandbox.Require(t, tools...)
}

// eachMode runs fn as a subtest per variant.
func eachMode(t *testing.T, fn func(t *testing.T, m Mode)) {
	for _, m := range modes {
		t.Run(m.String(), func(t *testing.T) {
			requireMode(t, m)
			fn(t, m)
		})
	}
}

// save is iptables-save of family f in ns, without comment lines.
func save(t *testing.T, ns *sandbox.NS, m Mode, f proxy.Family, args ...string) string {
	t.Helper()
	out := ns.MustRun(t, append([]string{command(m, f, "-save")}, args...)...)
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if !strings.HasPrefix(l, "#") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// listing is the canonical form of what the kernel holds, both families.
func kernelListing(t *testing.T, ns *sandbox.NS, m Mode) string {
	t.Helper()
	return Canonical(save(t, ns, m, proxy.IPv4)) + Canonical(save(t, ns, m, proxy.IPv6))
}

func syncAndCompare(t *testing.T, ns *sandbox.NS, m Mode, b *Backend, s *proxy.State) {
	t.Helper()
	if err := b.Sync(context.Background(), s); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	compare(t, ns, m, s)
}

func compare(t *testing.T, ns *sandbox.NS, m Mode, s *proxy.State) {
	t.Helper()
	if got, want := kernelListing(t, ns, m), Render(s); got != want {
		t.Fatalf("kernel listing differs from Render:\n%s", lineDiff(want, got))
	}
}

func restoreText(t *testing.T, ns *sandbox.NS, m Mode, f proxy.Family, payload string) {
	t.Helper()
	cmd := fmt.Sprintf("%s --noflush <<'EOF'\n%sEOF\n", command(m, f, "-restore"), payload)
	ns.MustRun(t, "sh", "-c", cmd)
}

// TestKernelListingEqualsRender: every representative state, synced into
// a fresh namespace, lists as Render prints it; then, in one namespace,
// each state after the other (incremental syncs between unrelated states).
func TestKernelListingEqualsRender(t *testing.T) {
	eachMode(t, func(t *testing.T, m Mode) {
		states := map[string]*proxy.State{"demo": demoState(t)}
		names := []string{"demo"}
		for _, c := range renderCases {
			states[c.name] = build(t, c.manifests, c.config)
			names = append(names, c.name)
		}
		for _, n := range names {
			t.Run(n, func(t *testing.T) {
				ns := sandbox.New(t, "ipt")
				syncAndCompare(t, ns, m, New(WithNetNS(ns.Name), WithMode(m)), states[n])
			})
		}
		t.Run("one-after-the-other", func(t *testing.T) {
			ns := sandbox.New(t, "ipt")
			b := New(WithNetNS(ns.Name), WithMode(m))
			for _, n := range append(names, names[0]) {
				syncAndCompare(t, ns, m, b, states[n])
			}
		})
	})
}

// Incremental syncs: A, then B (an endpoint added, a service removed, a
// service added, affinity enabled, one service unchanged), then B again.
func incrementalStates(t *testing.T, cfg func(*proxy.Config)) (a, b *proxy.State) {
	return build(t, incrementalYAML(false), cfg), build(t, incrementalYAML(true), cfg)
}

// incrementalYAML is the manifests of state A, or of state B.
func incrementalYAML(b bool) string {
	common := svcYAML("steady", `spec: {clusterIP: 10.96.0.30, ports: [{name: http, port: 80}]}`) +
		sliceYAML("steady", "IPv4", "http", "TCP", "b3")
	if !b {
		return common +
			svcYAML("web", `spec: {clusterIP: 10.96.0.10, ports: [{name: http, port: 80}]}`) +
			sliceYAML("web", "IPv4", "http", "TCP", "b1", "b2") +
			svcYAML("gone", `spec: {clusterIP: 10.96.0.31, ports: [{name: http, port: 80}]}`) +
			sliceYAML("gone", "IPv4", "http", "TCP", "b1") +
			svcYAML("sticky", `spec: {clusterIP: 10.96.0.13, ports: [{name: http, port: 80}]}`) +
			sliceYAML("sticky", "IPv4", "http", "TCP", "b1", "b2")
	}
	return common +
		svcYAML("web", `spec: {clusterIP: 10.96.0.10, ports: [{name: http, port: 80}]}`) +
		sliceYAML("web", "IPv4", "http", "TCP", "b1", "b2", "b3") +
		svcYAML("fresh", `spec: {clusterIP: 10.96.0.32, ports: [{name: http, port: 80}]}`) +
		sliceYAML("fresh", "IPv4", "http", "TCP", "b2", "b3") +
		svcYAML("sticky", `spec: {clusterIP: 10.96.0.13, sessionAffinity: ClientIP, ports: [{name: http, port: 80}]}`) +
		sliceYAML("sticky", "IPv4", "http", "TCP", "b1", "b2")
}

// chainsOf returns the names of the chains of the IPv4 service t/name/tcp/http in s.
func chainsOf(s *proxy.State, name string) []string {
	fs := s.IPv4
	sp := fs.Service(proxy.Key{Namespace: "t", Name: name, Protocol: proxy.TCP, Port: "http"})
	var out []string
	for _, c := range service(ipv4, fs, sp).chains {
		out = append(out, c.name)
	}
	return out
}

// droppedChains are the chains of the IPv4 services of a that b has not
// (those of removed services, and those a changed service no longer needs,
// e.g. its hairpin chain once it has affinity).
func droppedChains(a, b *proxy.State) []string {
	kept := map[string]bool{}
	for _, sp := range b.IPv4.Services {
		for _, c := range service(ipv4, b.IPv4, sp).chains {
			kept[c.name] = true
		}
	}
	var out []string
	for _, sp := range a.IPv4.Services {
		for _, c := range service(ipv4, a.IPv4, sp).chains {
			if !kept[c.name] {
				out = append(out, c.name)
			}
		}
	}
	slices.Sort(out)
	return out
}

func TestIncrementalSync(t *testing.T) {
	eachMode(t, func(t *testing.T, m Mode) {
		ns := sandbox.New(t, "ipt")
		b := New(WithNetNS(ns.Name), WithMode(m))
		sa, sb := incrementalStates(t, nil)
		syncAndCompare(t, ns, m, b, sa)
		full := strings.Join(b.payloads, "")

		syncAndCompare(t, ns, m, b, sb)
		partial := strings.Join(b.payloads, "")
		// Only IPv4 nat changed: the filter tables and IPv6 are not restored.
		if len(b.payloads) != 1 || !strings.HasPrefix(partial, "*nat\n") {
			t.Errorf("restores for a change of IPv4 nat chains only:\n%s", partial)
		}
		for _, c := range chainsOf(sa, "steady") {
			if strings.Contains(partial, ":"+c+" ") || strings.Contains(partial, "-A "+c+" ") {
				t.Errorf("chain %s of an unchanged service was rewritten", c)
			}
		}
		for _, c := range chainsOf(sa, "gone") {
			if !strings.Contains(partial, ":"+c+" ") || !strings.Contains(partial, "-X "+c+"\n") {
				t.Errorf("chain %s of a removed service was not flushed and deleted", c)
			}
		}
		for _, svc := range []string{"fresh", "sticky", "web"} {
			for _, c := range chainsOf(sb, svc) {
				if !strings.Contains(partial, "-A "+c+" ") {
					t.Errorf("chain %s of changed service %s was not written", c, svc)
				}
			}
		}
		var deleted []string
		for _, l := range strings.Split(partial, "\n") {
			if strings.HasPrefix(l, "-X ") || strings.HasPrefix(l, "-D ") {
				deleted = append(deleted, strings.TrimPrefix(l, "-X "))
			}
		}
		slices.Sort(deleted)
		// gone's chains, and sticky's hairpin chain (it now has affinity,
		// hence per-endpoint chains).
		if want := droppedChains(sa, sb); !slices.Equal(deleted, want) || len(want) != len(chainsOf(sa, "gone"))+1 {
			t.Errorf("deleted %v, want only the chains no service has any more %v", deleted, want)
		}
		t.Logf("payload: first sync %d bytes, incremental %d bytes", len(full), len(partial))

		// Nothing changed: nothing is written.
		syncAndCompare(t, ns, m, b, sb)
		if len(b.payloads) != 0 {
			t.Errorf("a sync without changes restored:\n%s", strings.Join(b.payloads, ""))
		}

		// An endpoint change leaves the dispatch chains as they are: only the
		// service's own chains are written.
		sc := build(t, strings.Replace(incrementalYAML(true), sliceYAML("web", "IPv4", "http", "TCP", "b1", "b2", "b3"),
			sliceYAML("web", "IPv4", "http", "TCP", "b2", "b3"), 1), nil)
		syncAndCompare(t, ns, m, b, sc)
		p := strings.Join(b.payloads, "")
		if strings.Contains(p, ":"+chainServices+" ") || strings.Contains(p, ":"+chainNodePorts+" ") {
			t.Errorf("an endpoint change rewrote a dispatch chain:\n%s", p)
		}
		if !strings.Contains(p, "-A "+chainsOf(sc, "web")[0]+" ") {
			t.Errorf("an endpoint change did not rewrite the service's chains:\n%s", p)
		}
		syncAndCompare(t, ns, m, b, sb)

		// A global change (no cluster CIDR any more) rewrites every
		// service; then back to A.
		_, sbNoCIDR := incrementalStates(t, func(c *proxy.Config) { c.ClusterCIDRs = nil })
		syncAndCompare(t, ns, m, b, sbNoCIDR)
		if p := strings.Join(b.payloads, ""); !strings.Contains(p, "-A "+chainsOf(sb, "steady")[0]+" ") {
			t.Error("a global change did not rewrite every service")
		}
		syncAndCompare(t, ns, m, b, sa)
	})
}

// sendUDP makes one new connection through nat OUTPUT in ns.
func sendUDP(t *testing.T, ns *sandbox.NS) {
	t.Helper()
	err := ns.Do(func() error {
		c, err := net.Dial("udp", "127.0.0.1:9")
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("x"))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

var counterLine = regexp.MustCompile(`^\[(\d+):\d+\] `)

// jumpPackets is the packet counter of our jump from nat OUTPUT.
func jumpPackets(t *testing.T, ns *sandbox.NS, m Mode) int {
	t.Helper()
	for _, l := range strings.Split(save(t, ns, m, proxy.IPv4, "-c", "-t", "nat"), "\n") {
		if sm := counterLine.FindStringSubmatch(l); sm != nil && strings.HasSuffix(l, "-A OUTPUT -m comment --comment svcproxy -j SVCP-SERVICES") {
			n, _ := strconv.Atoi(sm[1])
			return n
		}
	}
	t.Fatal("no jump from nat OUTPUT")
	return 0
}

// TestAdoptAfterRestart: a new Backend (auto mode) on a namespace a
// previous one programmed takes the chains over in place: it deletes only
// what is stale (a removed service, a leftover chain, a jump in an old
// format), recreates nothing, and keeps the built-in jumps (their counters
// survive).
func TestAdoptAfterRestart(t *testing.T) {
	eachMode(t, func(t *testing.T, m Mode) {
		ns := sandbox.New(t, "ipt")
		sa, sb := incrementalStates(t, nil)
		syncAndCompare(t, ns, m, New(WithNetNS(ns.Name), WithMode(m)), sa)
		sendUDP(t, ns)
		before := jumpPackets(t, ns, m)
		if before == 0 {
			t.Fatal("the nat OUTPUT jump counted no packet")
		}
		const leftover = "SVCP-SVC-LEFTOVERLEFTOVER"
		oldJump := "-A PREROUTING -j SVCP-SERVICES"
		restoreText(t, ns, m, proxy.IPv4, "*nat\n:"+leftover+" - [0:0]\n"+oldJump+"\nCOMMIT\n")

		b := New(WithNetNS(ns.Name))
		syncAndCompare(t, ns, m, b, sb)
		if b.Mode() != m {
			t.Errorf("detected mode %s, want %s (the one holding our chains)", b.Mode(), m)
		}
		if after := jumpPackets(t, ns, m); after < before {
			t.Errorf("jump counter went from %d to %d: the jump was re-inserted", before, after)
		}
		wantDeleted := map[string]bool{leftover: true, "-D " + strings.TrimPrefix(oldJump, "-A "): true}
		for _, c := range droppedChains(sa, sb) {
			wantDeleted[c] = true
		}
		for _, l := range strings.Split(strings.Join(b.payloads, ""), "\n") {
			if d, ok := strings.CutPrefix(l, "-X "); ok {
				l = d
			} else if !strings.HasPrefix(l, "-D ") {
				continue
			}
			if !wantDeleted[l] {
				t.Errorf("adoption deleted %q", l)
			}
			delete(wantDeleted, l)
		}
		if len(wantDeleted) > 0 {
			t.Errorf("adoption did not delete %v", wantDeleted)
		}
		// Chains already as wanted are not rewritten; changed ones are.
		p := strings.Join(b.payloads, "")
		for _, c := range chainsOf(sb, "steady") {
			if strings.Contains(p, ":"+c+" ") {
				t.Errorf("adoption rewrote chain %s of an unchanged service", c)
			}
		}
		if c := chainsOf(sb, "fresh")[0]; !strings.Contains(p, "-A "+c+" ") {
			t.Errorf("adoption did not write chain %s of a new service", c)
		}
	})
}

// Foreign content in the tables svcproxy uses, for both families.
var foreign = map[proxy.Family]string{
	proxy.IPv4: `*nat
:FOREIGN - [0:0]
-A PREROUTING -p tcp -m tcp --dport 8443 -j FOREIGN
-A OUTPUT -d 203.0.113.1/32 -m comment --comment "not ours" -j FOREIGN
-A FOREIGN -j RETURN
COMMIT
*filter
:FOREIGN-F - [0:0]
-A INPUT -s 203.0.113.0/24 -j ACCEPT
-A FORWARD -j FOREIGN-F
-A FOREIGN-F -j RETURN
COMMIT
`,
	proxy.IPv6: `*nat
:FOREIGN - [0:0]
-A OUTPUT -d 2001:db8::1/128 -j FOREIGN
-A FOREIGN -j RETURN
COMMIT
*filter
-A INPUT -s 2001:db8::/64 -j ACCEPT
COMMIT
`,
}

// TestCleanupKeepsForeignRules: other owners' chains and rules in the same
// tables are byte-identical before the first Sync and after Cleanup; the
// other variant is not touched either.
func TestCleanupKeepsForeignRules(t *testing.T) {
	eachMode(t, func(t *testing.T, m Mode) {
		ns := sandbox.New(t, "ipt")
		other := ModeNFT
		if m == ModeNFT {
			other = ModeLegacy
		}
		before := map[proxy.Family]string{}
		for f, payload := range foreign {
			restoreText(t, ns, m, f, payload)
			before[f] = save(t, ns, m, f)
		}
		b := New(WithNetNS(ns.Name), WithMode(m))
		syncAndCompare(t, ns, m, b, demoState(t))
		sa, _ := incrementalStates(t, nil)
		syncAndCompare(t, ns, m, b, sa)
		if s := save(t, ns, m, proxy.IPv4); !strings.Contains(s, `-A OUTPUT -d 203.0.113.1/32 -m comment --comment "not ours" -j FOREIGN`) {
			t.Fatalf("Sync changed a foreign rule:\n%s", s)
		}
		if err := b.Cleanup(context.Background()); err != nil {
			t.Fatal(err)
		}
		for f := range foreign {
			if after := save(t, ns, m, f); after != before[f] {
				t.Errorf("%s: after Cleanup:\n%s\nbefore Sync:\n%s", f, after, before[f])
			}
		}
		// Cleanup in auto mode looks at both variants and changes nothing
		// more.
		otherBefore := save(t, ns, other, proxy.IPv4)
		if err := New(WithNetNS(ns.Name)).Cleanup(context.Background()); err != nil {
			t.Fatal(err)
		}
		if after := save(t, ns, m, proxy.IPv4); after != before[proxy.IPv4] {
			t.Errorf("a second Cleanup changed the rules:\n%s", after)
		}
		if after := save(t, ns, other, proxy.IPv4); after != otherBefore {
			t.Errorf("Cleanup changed the %s variant:\n%s", other, after)
		}
		// The backend starts over after Cleanup.
		syncAndCompare(t, ns, m, b, sa)
	})
}

// TestRequestFullSyncRepairs: changes others make to our chains survive
// regular syncs (which never read the kernel) and are undone by a full
// one.
func TestRequestFullSyncRepairs(t *testing.T) {
	eachMode(t, func(t *testing.T, m Mode) {
		ns := sandbox.New(t, "ipt")
		b := New(WithNetNS(ns.Name), WithMode(m))
		sa, _ := incrementalStates(t, nil)
		syncAndCompare(t, ns, m, b, sa)
		ipt := command(m, proxy.IPv4, "")
		sep := chainsOf(sa, "web")[0]
		ns.MustRun(t, ipt, "-t", "nat", "-F", chainServices)
		ns.MustRun(t, ipt, "-t", "nat", "-A", sep, "-j", "ACCEPT")
		ns.MustRun(t, ipt, "-t", "filter", "-D", "INPUT", "-m", "conntrack", "--ctstate", "NEW", "-m", "comment", "--comment", "svcproxy", "-j", chainInput)
		ns.MustRun(t, command(m, proxy.IPv6, ""), "-t", "nat", "-I", "OUTPUT", "-m", "comment", "--comment", "svcproxy", "-j", chainServices)

		if err := b.Sync(context.Background(), sa); err != nil {
			t.Fatal(err)
		}
		if kernelListing(t, ns, m) == Render(sa) {
			t.Fatal("a regular sync repaired the rules: it must not read the kernel")
		}
		b.RequestFullSync()
		syncAndCompare(t, ns, m, b, sa)
	})
}

// TestFailedRestore: a restore the kernel refuses (a foreign rule still
// references a chain to delete) fails the Sync and leaves that table as it
// was; once the obstacle is gone, the next Sync (full) succeeds.
func TestFailedRestore(t *testing.T) {
	eachMode(t, func(t *testing.T, m Mode) {
		ns := sandbox.New(t, "ipt")
		b := New(WithNetNS(ns.Name), WithMode(m))
		sa, sb := incrementalStates(t, nil)
		syncAndCompare(t, ns, m, b, sa)
		var goneSVC string
		for _, c := range chainsOf(sa, "gone") {
			if strings.HasPrefix(c, prefixSVC) {
				goneSVC = c
			}
		}
		restoreText(t, ns, m, proxy.IPv4, "*nat\n:FOREIGN - [0:0]\n-A FOREIGN -j "+goneSVC+"\nCOMMIT\n")

		err := b.Sync(context.Background(), sb)
		if err == nil || !strings.Contains(err.Error(), "ipv4 table nat") {
			t.Fatalf("Sync = %v, want a failed nat restore", err)
		}
		t.Logf("error: %v", err)
		compare(t, ns, m, sa) // the filter tables of A and B are the same

		restoreText(t, ns, m, proxy.IPv4, "*nat\n:FOREIGN - [0:0]\n-X FOREIGN\nCOMMIT\n")
		syncAndCompare(t, ns, m, b, sb)
	})
}

// TestDetectMode: ModeAuto picks the variant holding our chains, else the
// one with kubelet's hint chain, else the one with more rules, else nft.
func TestDetectMode(t *testing.T) {
	requireMode(t, ModeLegacy)
	requireMode(t, ModeNFT)
	for _, c := range []struct {
		name        string
		legacy, nft string // restored into the IPv4 tables first
		want        Mode
	}{
		{name: "empty", want: ModeNFT},
		{name: "legacy-rules", legacy: "*filter\n-A INPUT -j ACCEPT\nCOMMIT\n", want: ModeLegacy},
		{name: "more-nft-rules", legacy: "*filter\n-A INPUT -j ACCEPT\nCOMMIT\n",
			nft: "*filter\n-A INPUT -j ACCEPT\n-A INPUT -j ACCEPT\nCOMMIT\n", want: ModeNFT},
		{name: "hint-beats-rules", legacy: "*filter\n-A INPUT -j ACCEPT\n-A INPUT -j ACCEPT\nCOMMIT\n",
			nft: "*mangle\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n", want: ModeNFT},
		{name: "ours-beat-hint", legacy: "*nat\n:SVCP-SERVICES - [0:0]\nCOMMIT\n",
			nft: "*mangle\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n", want: ModeLegacy},
	} {
		t.Run(c.name, func(t *testing.T) {
			ns := sandbox.New(t, "ipt")
			for m, payload := range map[Mode]string{ModeLegacy: c.legacy, ModeNFT: c.nft} {
				if payload != "" {
					restoreText(t, ns, m, proxy.IPv4, payload)
				}
			}
			b := New(WithNetNS(ns.Name))
			st := demoState(t)
			if err := b.Sync(context.Background(), st); err != nil {
				t.Fatal(err)
			}
			if b.Mode() != c.want {
				t.Fatalf("mode %s, want %s", b.Mode(), c.want)
			}
			compare(t, ns, c.want, st)
			other := ModeLegacy
			if c.want == ModeLegacy {
				other = ModeNFT
			}
			if l := kernelListing(t, ns, other); l != "" {
				t.Errorf("the %s variant got rules:\n%s", other, l)
			}
		})
	}
}

// TestStagedSync: when a sync writes many new chains, the nft variant
// writes them first in staging restores of their own (see stageNew); the
// rules end up as in one restore, on a cold sync and on one that adds a
// service, and the staging restores hold only new service chains (and
// SVCP-MARK-MASQ when it is new), nothing that leads to them.
func TestStagedSync(t *testing.T) {
	m := ModeNFT
	requireMode(t, m)
	ns := sandbox.New(t, "ipt")
	b := New(WithNetNS(ns.Name), WithMode(m))
	b.stageChains = 2
	sa, sb := incrementalStates(t, nil)

	// staged returns the staging payloads of the last sync: those that
	// write only service chains.
	staged := func() []string {
		var out []string
		for _, p := range b.payloads {
			only := true
			for _, l := range strings.Split(p, "\n") {
				name, _, _ := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(l, ":"), "-A "), " ")
				if (strings.HasPrefix(l, ":") || strings.HasPrefix(l, "-A ")) && !isServiceChain(name) && name != chainMarkMasq ||
					strings.HasPrefix(l, "-I ") || strings.HasPrefix(l, "-D ") || strings.HasPrefix(l, "-X ") {
					only = false
				}
			}
			if only {
				out = append(out, p)
			}
		}
		return out
	}

	syncAndCompare(t, ns, m, b, sa)
	st := staged()
	if len(st) < 2 || !strings.Contains(st[0], ":"+chainMarkMasq+" ") {
		t.Fatalf("cold sync: %d staging restores, want several, the first with %s:\n%s", len(st), chainMarkMasq, strings.Join(b.payloads, "\n"))
	}
	for _, c := range chainsOf(sa, "web") {
		n := 0
		for _, p := range st {
			n += strings.Count(p, ":"+c+" ")
		}
		if n != 1 {
			t.Errorf("cold sync: chain %s declared by %d staging restores, want 1", c, n)
		}
	}

	// B adds "fresh" (two new chains) and changes "web" and "sticky",
	// whose chains exist: only fresh's are staged.
	syncAndCompare(t, ns, m, b, sb)
	st = staged()
	if len(st) != 1 {
		t.Fatalf("adding a service: %d staging restores, want 1:\n%s", len(st), strings.Join(b.payloads, "\n"))
	}
	for _, c := range chainsOf(sb, "fresh") {
		if !strings.Contains(st[0], "-A "+c+" ") {
			t.Errorf("new chain %s not staged:\n%s", c, st[0])
		}
	}
	if strings.Contains(st[0], chainsOf(sb, "web")[len(chainsOf(sb, "web"))-1]+" ") {
		t.Errorf("an existing chain was staged:\n%s", st[0])
	}

	// Legacy restores the whole table per restore: no staging there.
	ns2 := sandbox.New(t, "ipt")
	requireMode(t, ModeLegacy)
	bl := New(WithNetNS(ns2.Name), WithMode(ModeLegacy))
	bl.stageChains = 2
	syncAndCompare(t, ns2, ModeLegacy, bl, sa)
	if len(bl.payloads) != 4 {
		t.Errorf("legacy: %d restores, want one per table and family", len(bl.payloads))
	}
}

// TestAdoptEndpointChains: a node programmed with kube-proxy's layout of
// one chain per endpoint (svcproxy before SVCP-HPN-*) is taken over by a
// restarted svcproxy in one full sync: the policy chain is rewritten, the
// hairpin chain created, the endpoint chains deleted, nothing else.
func TestAdoptEndpointChains(t *testing.T) {
	eachMode(t, func(t *testing.T, m Mode) {
		ns := sandbox.New(t, "ipt")
		sa, _ := incrementalStates(t, nil)
		syncAndCompare(t, ns, m, New(WithNetNS(ns.Name), WithMode(m)), sa)
		key := proxy.Key{Namespace: "t", Name: "web", Protocol: proxy.TCP, Port: "http"}.String()
		svc, hpn := hashName(prefixSVC, key), hashName(prefixHPN, key)
		var seps []string
		old := "*nat\n:" + svc + " - [0:0]\n:" + hpn + " - [0:0]\n" // flushed, then deleted
		var rules string
		for i, ip := range []string{"10.244.1.11", "10.244.1.12"} {
			sep := endpointChain(key, netip.MustParseAddrPort(ip+":8080"))
			seps = append(seps, sep)
			old += ":" + sep + " - [0:0]\n"
			pick := "-m statistic --mode random --probability 0.50000000000 "
			if i == 1 {
				pick = ""
			}
			rules += "-A " + svc + " " + pick + "-j " + sep + "\n" +
				"-A " + sep + " -s " + ip + "/32 -j SVCP-MARK-MASQ\n" +
				"-A " + sep + " -p tcp -j DNAT --to-destination " + ip + ":8080\n"
		}
		restoreText(t, ns, m, proxy.IPv4, old+rules+"-X "+hpn+"\nCOMMIT\n")
		if l := kernelListing(t, ns, m); !strings.Contains(l, ":"+seps[0]+" ") || strings.Contains(l, ":"+hpn+" ") {
			t.Fatalf("the old layout is not in place:\n%s", l)
		}

		b := New(WithNetNS(ns.Name))
		syncAndCompare(t, ns, m, b, sa)
		var deleted []string
		for _, l := range strings.Split(strings.Join(b.payloads, ""), "\n") {
			if d, ok := strings.CutPrefix(l, "-X "); ok {
				deleted = append(deleted, d)
			}
		}
		slices.Sort(deleted)
		slices.Sort(seps)
		if !slices.Equal(deleted, seps) {
			t.Errorf("deleted %v, want the endpoint chains %v", deleted, seps)
		}
	})
}
