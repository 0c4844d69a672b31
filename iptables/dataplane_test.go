package iptables

import (
	"context"
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"testing"
	"time"

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

// TestHairpinCascade: a pod reaching its own Service through a cascade of
// several endpoints (the SVCP-HPN-* path; the shared table's hairpin
// Service has one endpoint) is masqueraded exactly when it is picked
// itself, and keeps its address towards the other endpoints — for the
// cluster policy chain, the local one, and IPv6 — while every endpoint is
// still picked.
func TestHairpinCascade(t *testing.T) {
	manifests := svcYAML("all", `spec: {clusterIP: 10.96.0.40, ports: [{name: http, port: 80}]}`) +
		sliceYAML("all", "IPv4", "http", "TCP", "b1", "b2", "b3") +
		svcYAML("itl", `spec: {clusterIP: 10.96.0.41, internalTrafficPolicy: Local, ports: [{name: http, port: 80}]}`) +
		sliceYAML("itl", "IPv4", "http", "TCP", "b1", "b2", "b3") +
		svcYAML("six", `spec: {ipFamilies: [IPv6], clusterIP: "fd00:96::42", ports: [{name: http, port: 80}]}`) +
		sliceYAML("six", "IPv6", "http", "TCP", "b1", "b2", "b3")
	checks := []struct {
		to   string
		pods []string // all must answer
	}{
		{"10.96.0.40:80", []string{"b1", "b2", "b3"}},
		{"10.96.0.41:80", []string{"b1", "b2"}}, // b3 is on node-b
		{"[fd00:96::42]:80", []string{"b1", "b2", "b3"}},
	}
	eachMode(t, func(t *testing.T, m Mode) {
		env := dptest.NewEnv(t)
		st := build(t, manifests, func(c *proxy.Config) { *c = dptest.Config() })
		// The cascades draw towards the hairpin chains, in both policy
		// chains: the path under test.
		r := Render(st)
		for _, want := range []string{`-A SVCP-SVC-\S+ -s 10.244.1.11/32 -m statistic .* -j SVCP-HPN-`,
			`-A SVCP-SVL-\S+ -s 10.244.1.11/32 -m statistic .* -j SVCP-HPN-`, `-A SVCP-SVC-\S+ -s fd00:244::12/128 -m statistic .* -j SVCP-HPN-`} {
			if !regexp.MustCompile(want).MatchString(r) {
				t.Fatalf("no rule like %s in:\n%s", want, r)
			}
		}
		b := New(WithNetNS(env.Node.Name), WithMode(m))
		if err := b.Sync(context.Background(), st); err != nil {
			t.Fatal(err)
		}
		compare(t, env.Node, m, st)
		for _, from := range env.Pods {
			for _, c := range checks {
				to := netip.MustParseAddrPort(c.to)
				self, masq := from.IP, dptest.MasqIP
				if to.Addr().Is6() {
					self, masq = from.IP6, dptest.MasqIP6
				}
				answers, err := env.Requests(from.NS, "tcp", to, 40, 3*time.Second)
				if err != nil {
					t.Fatalf("%s to %s: after %d answers: %v", from.Name, to, len(answers), err)
				}
				seen := map[string]bool{}
				for _, a := range answers {
					seen[a.Pod] = true
					want := self
					if a.Pod == from.Name {
						want = masq
					}
					if a.Source != want.String() {
						t.Errorf("%s to %s: %s saw source %s, want %s", from.Name, to, a.Pod, a.Source, want)
					}
				}
				if got := slices.Sorted(maps.Keys(seen)); !slices.Equal(got, c.pods) {
					t.Errorf("%s to %s: answers from %v, want %v", from.Name, to, got, c.pods)
				}
			}
		}
		if err := b.Cleanup(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
}
