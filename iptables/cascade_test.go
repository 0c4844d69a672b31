package iptables

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/svcproxy/svcproxy/proxy"
)

// outcome is where a packet ends: the endpoint it is DNATed to ("" for
// none) and whether it is marked for masquerade.
type outcome struct {
	dnat   string
	marked bool
}

// walkNAT interprets the rules of a service's nat chains as the kernel
// would for one new packet from src, from rule i of chain name on, with
// probability p of getting there and the mark bit as given. It follows
// every -m statistic draw both ways and adds each DNAT's probability to
// out; a packet that leaves the chain without a verdict goes on in ret.
// It knows the rules an endpoint choice is made of: -s / ! -s ADDR/32, -p,
// -m statistic --probability, and the targets -j DNAT, -j SVCP-MARK-MASQ
// and jumps to other chains of the fragment; anything else fails the test.
func walkNAT(t *testing.T, chains map[string][]string, name string, i int, src string, p float64, marked bool,
	out map[outcome]float64, ret func(p float64, marked bool)) {
	t.Helper()
	rules, ok := chains[name]
	if !ok {
		t.Fatalf("jump to unknown chain %s", name)
	}
	if p == 0 {
		return
	}
	if i == len(rules) {
		ret(p, marked)
		return
	}
	r := rules[i]
	f := strings.Fields(r)
	match, draw, target := true, 1.0, []string(nil)
	for k := 0; k < len(f); k++ {
		switch f[k] {
		case "!":
			if f[k+1] != "-s" {
				t.Fatalf("rule %q: unexpected negation", r)
			}
			match = match && f[k+2] != src+"/32"
			k += 2
		case "-s":
			match = match && f[k+1] == src+"/32"
			k++
		case "-p":
			k++
		case "-m":
			if f[k+1] != "statistic" || f[k+2] != "--mode" || f[k+3] != "random" || f[k+4] != "--probability" {
				t.Fatalf("rule %q: unexpected match", r)
			}
			v, err := strconv.ParseFloat(f[k+5], 64)
			if err != nil {
				t.Fatal(err)
			}
			draw = v
			k += 5
		case "-j":
			target = f[k+1:]
			k = len(f)
		default:
			t.Fatalf("rule %q: unexpected %q", r, f[k])
		}
	}
	next := func(p float64, marked bool) { walkNAT(t, chains, name, i+1, src, p, marked, out, ret) }
	if !match { // the address test comes before the draw: no draw
		next(p, marked)
		return
	}
	next(p*(1-draw), marked)
	taken := p * draw
	switch target[0] {
	case "DNAT":
		out[outcome{target[2], marked}] += taken
	case chainMarkMasq:
		next(taken, true)
	default:
		walkNAT(t, chains, target[0], 0, src, taken, marked, out, next)
	}
}

// TestCascadeEquivalence: for every sender, each endpoint is picked with
// probability 1/N (as the kernel stores the cascade's probabilities), and
// the packet is marked for masquerade exactly when the sender is the
// endpoint picked — kube-proxy's endpoint chains' behaviour — for the
// layout without endpoint chains, for both policy chains.
func TestCascadeEquivalence(t *testing.T) {
	for n := 1; n <= 7; n++ {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			var eps []string
			for i := range n {
				eps = append(eps, fmt.Sprintf("- {addresses: [10.244.1.%d], nodeName: node-a, conditions: {ready: true}}", 11+i))
			}
			manifests := svcYAML("web", `spec: {clusterIP: 10.96.0.10, ports: [{name: http, port: 80}]}`) +
				"apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: web-1, namespace: t, labels: {kubernetes.io/service-name: web}}\n" +
				"addressType: IPv4\nports: [{name: http, port: 8080, protocol: TCP}]\nendpoints:\n" + strings.Join(eps, "\n") + "\n"
			for _, itl := range []bool{false, true} {
				st := build(t, manifests, func(c *proxy.Config) { c.ClusterCIDRs = nil }) // no ClusterIP masquerade rule
				sp := st.IPv4.Services[0]
				if len(sp.ClusterEndpoints) != n {
					t.Fatalf("%d endpoints, want %d", len(sp.ClusterEndpoints), n)
				}
				if itl {
					sp.InternalPolicyLocal, sp.LocalEndpoints = true, sp.ClusterEndpoints
				}
				fr := service(ipv4, st.IPv4, sp)
				chains := map[string][]string{}
				for _, ch := range fr.chains {
					if strings.HasPrefix(ch.name, prefixSEP) {
						t.Fatalf("endpoint chain %s without affinity", ch.name)
					}
					chains[ch.name] = ch.rules
				}
				entry := hashName(prefixSVC, sp.Key.String())
				if itl {
					entry = hashName(prefixSVL, sp.Key.String())
				}
				for _, sender := range []string{"10.244.1.11", "10.244.1.12", fmt.Sprintf("10.244.1.%d", 10+n), "10.244.9.9"} {
					out := map[outcome]float64{}
					walkNAT(t, chains, entry, 0, sender, 1, false, out, func(p float64, _ bool) {
						t.Errorf("sender %s: %.3g of the packets leave the chain without DNAT", sender, p)
					})
					for i := range n {
						ep := fmt.Sprintf("10.244.1.%d", 11+i)
						self := ep == sender
						got, wrong := out[outcome{ep + ":8080", self}], out[outcome{ep + ":8080", !self}]
						if math.Abs(got-1/float64(n)) > 1e-8 || wrong != 0 {
							t.Errorf("local=%v sender %s: endpoint %s picked with %.10f (marked %v), %.3g with the wrong mark; want %.10f", itl, sender, ep, got, self, wrong, 1/float64(n))
						}
					}
				}
			}
		})
	}
}
