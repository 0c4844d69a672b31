package iptables

import (
	"context"
	"strings"
	"testing"

	"github.com/svcproxy/svcproxy/proxy"
	"github.com/svcproxy/svcproxy/sandbox"
)

// TestTamperingIsCounted: every change someone else makes to svcproxy's
// chains or jumps — a chain flushed, deleted or added, a rule appended,
// inserted, replaced or deleted, a built-in jump deleted, repeated or
// added — is left alone by a regular sync, and repaired and counted (once)
// by the next full sync. Full syncs on an untouched node count nothing:
// repeated, with a changed State, after foreign rules and chains were
// added to the same tables, and after a sync the kernel refused.
func TestTamperingIsCounted(t *testing.T) {
	eachMode(t, func(t *testing.T, m Mode) {
		ns := sandbox.New(t, "tamper")
		b := New(WithNetNS(ns.Name), WithMode(m))
		sa, sb := incrementalStates(t, nil)
		ctx := context.Background()
		full := func(s *proxy.State) {
			t.Helper()
			b.RequestFullSync()
			syncAndCompare(t, ns, m, b, s)
		}
		noRepair := func(what string) {
			t.Helper()
			if n := b.Repairs(); n != 0 {
				t.Fatalf("%s: %d repairs counted on an untouched node", what, n)
			}
		}

		// No false positives.
		syncAndCompare(t, ns, m, b, sa)
		full(sa)
		full(sa)
		noRepair("repeated full syncs")
		syncAndCompare(t, ns, m, b, sb) // incremental
		full(sb)
		full(sa) // a full sync that also changes services
		noRepair("full syncs across changes")
		for f, payload := range foreign {
			restoreText(t, ns, m, f, payload)
		}
		full(sa)
		noRepair("foreign chains and rules in the same tables")

		// A refused sync (a foreign rule still references a chain it
		// deletes): the full sync after it, and the ones after that, are
		// no repair.
		var goneSVC string
		for _, c := range chainsOf(sa, "gone") {
			if strings.HasPrefix(c, prefixSVC) {
				goneSVC = c
			}
		}
		restoreText(t, ns, m, proxy.IPv4, "*nat\n:BLOCKER - [0:0]\n-A BLOCKER -j "+goneSVC+"\nCOMMIT\n")
		_, sbNoCIDR := incrementalStates(t, func(c *proxy.Config) { c.ClusterCIDRs = nil })
		if err := b.Sync(ctx, sbNoCIDR); err == nil {
			t.Fatal("a sync deleting a referenced chain succeeded")
		}
		restoreText(t, ns, m, proxy.IPv4, "*nat\n:BLOCKER - [0:0]\n-X BLOCKER\nCOMMIT\n")
		syncAndCompare(t, ns, m, b, sa) // full: after a failure
		noRepair("a full sync after a failed one")
		full(sa)
		noRepair("a full sync after recovery")

		ipt4, ipt6 := command(m, proxy.IPv4, ""), command(m, proxy.IPv6, "")
		web := chainsOf(sa, "web") // SVC, then its hairpin chain
		svc, sep := web[0], web[1]
		for _, tamper := range [][][]string{
			{{ipt4, "-t", "nat", "-F", chainServices}},
			{{ipt4, "-t", "nat", "-A", sep, "-j", "ACCEPT"}},
			{{ipt4, "-t", "nat", "-I", svc, "1", "-j", "RETURN"}},
			{{ipt4, "-t", "nat", "-D", svc, "1"}},
			{{ipt4, "-t", "nat", "-R", chainPostrouting, "3", "-j", "MASQUERADE"}},
			{{ipt4, "-t", "filter", "-D", "INPUT", "-m", "conntrack", "--ctstate", "NEW", "-m", "comment", "--comment", "svcproxy", "-j", chainInput}},
			{{ipt6, "-t", "nat", "-I", "OUTPUT", "-m", "comment", "--comment", "svcproxy", "-j", chainServices}},
			{{ipt4, "-t", "filter", "-A", "FORWARD", "-j", chainFirewall}},
			{{ipt4, "-t", "filter", "-N", "SVCP-SVC-INTRUDER"}},
			{{ipt4, "-t", "nat", "-F"}, {ipt4, "-t", "nat", "-X"}},                                 // every chain of the table gone
			{{ipt4, "-t", "filter", "-F", chainForward}, {ipt6, "-t", "filter", "-F", chainInput}}, // both families: one repair
		} {
			for _, cmd := range tamper {
				ns.MustRun(t, cmd...)
			}
			before := b.Repairs()
			if err := b.Sync(ctx, sa); err != nil {
				t.Fatal(err)
			}
			if b.Repairs() != before {
				t.Errorf("%v: a regular sync (which reads nothing) counted a repair", tamper)
			}
			if kernelListing(t, ns, m) == Render(sa) {
				t.Fatalf("%v changed nothing of ours", tamper)
			}
			full(sa)
			if got := b.Repairs(); got != before+1 {
				t.Errorf("%v: repairs %d → %d, want one more", tamper, before, got)
			}
		}
		// Untouched again: nothing more is counted.
		before := b.Repairs()
		full(sa)
		full(sa)
		if b.Repairs() != before {
			t.Errorf("full syncs after the repairs counted %d more", b.Repairs()-before)
		}
	})
}
