package nft

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/svcproxy/svcproxy/dptest"
	"github.com/svcproxy/svcproxy/proxy"
	"github.com/svcproxy/svcproxy/sandbox"
	"github.com/svcproxy/svcproxy/scale"
)

func TestCountBuckets(t *testing.T) {
	for n := 1; n <= 200; n++ {
		lo, hi := countBucket(n)
		plo, phi := countBucket(max(n-1, 1))
		switch {
		case lo > n || hi < n:
			t.Fatalf("countBucket(%d) = %d..%d", n, lo, hi)
		case n > 1 && (lo == n) != (phi == n-1), n > 1 && lo != n && (lo != plo || hi != phi):
			t.Fatalf("countBucket(%d) = %d..%d, countBucket(%d) = %d..%d: not a partition", n, lo, hi, n-1, plo, phi)
		case hi-lo+1 > 32:
			t.Fatalf("countBucket(%d) = %d..%d: more than 32 lookups for a new connection", n, lo, hi)
		case n > 64 && lo != hi:
			t.Fatalf("countBucket(%d) = %d..%d: counts above 64 have chains of their own", n, lo, hi)
		}
	}
	// A one-replica Deployment's rollout goes 1 → 2 → 1: data only.
	if lo1, _ := countBucket(1); lo1 != 1 {
		t.Fatal("1 is not the first count of its bucket")
	}
	if lo1, _ := countBucket(1); func() int { lo2, _ := countBucket(2); return lo2 }() != lo1 {
		t.Fatal("1 and 2 endpoints are in different buckets")
	}
}

// threeServices is scale's first three Services (svc-0 ClusterIP, svc-1
// NodePort, svc-2 LoadBalancer with externalTrafficPolicy Local, whose
// local endpoints are one in ten) with n endpoints each, all distinct
// (scale's repeat after 64).
func threeServices(n int) *proxy.FamilyState {
	in := scale.Cluster(3, n)
	for i, sl := range in.EndpointSlices {
		for j := range sl.Endpoints {
			sl.Endpoints[j].Addresses = []string{fmt.Sprintf("10.%d.%d.%d", 128+i, j/256, j%256)}
		}
	}
	return proxy.Build(in, scale.Config()).IPv4
}

// destKey identifies a destination in a dispatch or endpoint map.
func destKey(e element) string { return fmt.Sprintf("%s/%s/%d", e.addr, e.proto, e.port) }

// TestBucketPicksAreUniform checks the rule structure that makes a pick
// uniform, for every count up to past the last bucket: for each
// destination that goes to a shared chain, and each route of the chain
// (a pick rule's statements but the pick, and the pick's role), exactly
// one pick rule finds the destination's elements in its map, and there
// they are indexes 0..k-1 for the rule's `numgen random mod k`, one per
// endpoint; every other rule's lookup misses (evaluation goes on). So
// that rule is the one that DNATs, and it draws each of the N endpoints
// with probability 1/N.
func TestBucketPicksAreUniform(t *testing.T) {
	f := ipv4
	for n := 1; n <= 70; n++ {
		fs := threeServices(n)
		for _, sp := range fs.Services {
			fr := service(f, fs, sp)
			// Endpoint elements by map and destination.
			byMap := map[string]map[string][]int{}
			for _, e := range fr.elems {
				if byMap[e.set] == nil {
					byMap[e.set] = map[string][]int{}
				}
				byMap[e.set][destKey(e.el)] = append(byMap[e.set][destKey(e.el)], int(e.el.index))
			}
			checked := 0
			for _, ch := range chainsOf(fr) {
				if !ch.shared {
					continue
				}
				var dests []string
				for _, e := range fr.elems {
					if (e.set == mapServiceIPs || e.set == mapNodePorts) && e.el.verdict.chain == ch.name {
						dests = append(dests, destKey(e.el))
					}
				}
				if len(dests) == 0 {
					t.Fatalf("n=%d %s: nothing goes to %s", n, sp.Key, ch.name)
				}
				hits := map[string]int{} // by route and destination
				for _, r := range ch.rules {
					i := slices.IndexFunc(r, func(st stmt) bool { _, ok := st.(dnatPick); return ok })
					if i < 0 {
						continue
					}
					p := r[i].(dnatPick)
					route := rule(slices.Delete(slices.Clone(r), i, i+1)).text(f) + " " + strings.TrimPrefix(strings.TrimPrefix(p.set, ch.name), "-")
					route = strings.TrimRight(route, "0123456789")
					for _, d := range dests {
						idx := slices.Sorted(slices.Values(byMap[p.set][d]))
						if len(idx) == 0 {
							hits[route+" "+d] += 0 // misses
							continue
						}
						if !slices.Equal(idx, seq(p.n)) {
							t.Fatalf("n=%d %s: rule %q draws 0..%d, %s has indexes %v there", n, sp.Key, r.text(f), p.n-1, d, idx)
						}
						hits[route+" "+d]++
					}
				}
				for k, h := range hits {
					if h != 1 {
						t.Fatalf("n=%d %s, %s: route and destination %q: %d rules find it, want 1", n, sp.Key, ch.name, k, h)
					}
					checked++
				}
			}
			if sp.AffinitySeconds == 0 && checked == 0 {
				t.Fatalf("n=%d %s: no pick checked", n, sp.Key)
			}
		}
	}
}

func seq(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// dispatchOf is the verdict elements of a fragment, as text.
func dispatchOf(fr *fragment) []string {
	var out []string
	for _, e := range fr.elems {
		if e.set == mapServiceIPs || e.set == mapNodePorts {
			out = append(out, fmt.Sprintf("%s %v", e.set, e.el))
		}
	}
	slices.Sort(out)
	return out
}

// TestCountChangeKeepsVerdicts: a count change keeps every destination's
// verdict (so chains and dispatch elements) exactly when the counts of
// both roles stay in their buckets.
func TestCountChangeKeepsVerdicts(t *testing.T) {
	f := ipv4
	frag := func(n int) []*fragment {
		fs := threeServices(n)
		var out []*fragment
		for _, sp := range fs.Services {
			out = append(out, service(f, fs, sp))
		}
		return out
	}
	sameBuckets := func(a, b int) bool {
		// Cluster endpoints a and b; local ones (scale: node-0) one in ten.
		la, _ := countBucket(a)
		lb, _ := countBucket(b)
		loc := func(n int) int { return (n + 9) / 10 }
		ka, _ := countBucket(loc(a))
		kb, _ := countBucket(loc(b))
		return la == lb && ka == kb
	}
	for a := 1; a <= 70; a++ {
		for _, b := range []int{a - 1, a + 1, a + (a+3)/4} {
			if b < 1 {
				continue
			}
			fa, fb := frag(a), frag(b)
			for i := range fa {
				same := slices.Equal(dispatchOf(fa[i]), dispatchOf(fb[i]))
				want := sameBuckets(a, b)
				if i < 2 { // no externalTrafficPolicy Local: the local count does not matter
					la, _ := countBucket(a)
					lb, _ := countBucket(b)
					want = la == lb
				}
				if same != want {
					t.Fatalf("service %d, %d → %d endpoints: verdicts unchanged = %v, want %v\n%v\n%v", i, a, b, same, want, dispatchOf(fa[i]), dispatchOf(fb[i]))
				}
			}
		}
	}
}

// TestCountChangeWithinBucketIsDataOnly: in the kernel, a count change
// within its bucket sends no rule and no jumping element (nothing that
// makes the kernel re-validate the table) and recreates no chain; a
// change across a bucket boundary does re-point the destination.
func TestCountChangeWithinBucketIsDataOnly(t *testing.T) {
	sandbox.Require(t, "nft")
	ns := sandbox.New(t, "buckets")
	b := New(WithNetNS(ns.FD()))
	in := scale.Cluster(5, 10) // svc-0 ClusterIP, svc-1 NodePort, svc-2 LoadBalancer (Local), svc-3 affinity, svc-4 ClusterIP
	syncAndCompare(t, ns, b, proxy.Build(in, scale.Config()))
	for _, s := range []struct {
		name      string
		svc, eps  int
		dataOnly  bool
		sameChain bool
	}{
		{"ClusterIP 10 → 9", 0, 9, true, true},
		{"ClusterIP 9 → 16", 0, 16, true, true},
		{"NodePort 10 → 12", 1, 12, true, true},
		{"LoadBalancer, Local: cluster 10 → 11, local 1 → 2", 2, 11, true, true},
		{"ClusterIP 16 → 17: across", 0, 17, false, false},
		{"NodePort 12 → 8: across", 1, 8, false, false},
		{"LoadBalancer, Local: cluster 11 → 9, local 2 → 1", 2, 9, true, true},
	} {
		before := chainHandles(t, ns)
		in.EndpointSlices[s.svc] = scale.Slice(s.svc, s.eps, 0)
		syncAndCompare(t, ns, b, proxy.Build(in, scale.Config()))
		if b.LastSyncFull() {
			t.Fatalf("%s: a full sync", s.name)
		}
		if got := b.lastValidating == 0; got != s.dataOnly {
			t.Errorf("%s: %d of %d messages make the kernel validate the table; want data only: %v", s.name, b.lastValidating, b.lastMessages, s.dataOnly)
		}
		if got := slices.Equal(before, chainHandles(t, ns)); got != s.sameChain {
			t.Errorf("%s: chains unchanged: %v, want %v", s.name, got, s.sameChain)
		}
		t.Logf("%s: %d messages, %d validating", s.name, b.lastMessages, b.lastValidating)
	}
}

// TestCountChangesWithPackets changes a Service's endpoint count within
// and across buckets, and after each sync sends real connections to its
// ClusterIP (any endpoint), its load-balancer IP from outside
// (externalTrafficPolicy Local: this node's endpoints only) and its
// NodePort from the node (short-circuited to any endpoint): every
// endpoint answers, roughly as often as the others, and no removed one
// ever does.
func TestCountChangesWithPackets(t *testing.T) {
	env := dptest.NewEnv(t)
	// b1, b2 (this node) and b3 (another) exist; b4..b9 on this node.
	for i := 4; i <= 9; i++ {
		env.AddPod(t, fmt.Sprintf("b%d", i), netip.MustParseAddr(fmt.Sprintf("10.244.1.%d", 10+i)), netip.MustParseAddr(fmt.Sprintf("fd00:244::%d", 10+i)))
	}
	podIP := map[string]netip.Addr{}
	for _, p := range env.Pods {
		podIP[p.Name] = p.IP
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "t", Name: "grow"},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeLoadBalancer, ClusterIP: "10.96.0.40", ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
			HealthCheckNodePort: 32040,
			Ports:               []corev1.ServicePort{{Name: "http", Port: 80, NodePort: 30040, Protocol: corev1.ProtocolTCP}},
		},
		Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{IP: "198.51.100.40"}}}},
	}
	sliceOf := func(pods []string) *discoveryv1.EndpointSlice {
		sl := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: "t", Name: "grow-1", Labels: map[string]string{discoveryv1.LabelServiceName: "grow"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](dptest.HTTPPort), Protocol: ptr.To(corev1.ProtocolTCP)}},
		}
		for _, p := range pods {
			node := "node-a"
			if p == "b3" {
				node = "node-b"
			}
			sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{Addresses: []string{podIP[p].String()}, NodeName: ptr.To(node), Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}})
		}
		return sl
	}
	b := New(WithNetNS(env.Node.FD()))
	t.Cleanup(func() { b.Close() })
	pods := func(names ...string) []string { return names }
	for i, step := range []struct {
		pods     []string
		dataOnly bool // both counts stay in their buckets
	}{
		// Endpoint counts: cluster, local (all but b3).
		{pods("b1", "b2", "b3"), false},                        // 3, 2 (first sync)
		{pods("b1", "b2"), true},                               // 2, 2
		{pods("b1", "b2", "b3", "b4"), true},                   // 4, 3
		{pods("b1", "b2", "b3", "b4", "b5", "b6"), false},      // 6, 5: both across
		{pods("b1", "b2", "b3", "b4", "b5"), false},            // 5, 4: local across
		{pods("b2", "b3", "b4", "b5", "b6", "b7"), false},      // 6, 5: local across
		{pods("b3", "b4", "b5", "b6", "b7", "b8", "b9"), true}, // 7, 6
		{pods("b3"), false},                                    // 1, 0: no local endpoint
		{pods(), false},                                        // 0: no endpoint
		{pods("b1", "b9"), false},                              // 2, 2
	} {
		name := fmt.Sprintf("%d:%s", i, strings.Join(step.pods, ","))
		st := proxy.Build(proxy.Inputs{Services: []*corev1.Service{svc}, EndpointSlices: []*discoveryv1.EndpointSlice{sliceOf(step.pods)}}, dptest.Config())
		if len(st.Problems) > 0 {
			t.Fatalf("%s: %v", name, st.Problems)
		}
		syncAndCompare(t, env.Node, b, st)
		if i > 0 && step.dataOnly != (b.lastValidating == 0) {
			t.Errorf("%s: %d validating messages, want data only: %v", name, b.lastValidating, step.dataOnly)
		}
		local := slices.DeleteFunc(slices.Clone(step.pods), func(p string) bool { return p == "b3" })
		for _, c := range []struct {
			from *sandbox.NS
			to   string
			want []string
		}{
			{env.Client, "10.96.0.40:80", step.pods},
			{env.Client, "198.51.100.40:80", local},
			{env.Node, fmt.Sprintf("%s:30040", dptest.NodeIP), step.pods},
		} {
			checkAnswers(t, env, name, c.from, netip.MustParseAddrPort(c.to), c.want)
		}
	}
}

// checkAnswers sends new connections to addr: with no pod wanted, the
// connection must fail; else each wanted pod must answer, at least a
// quarter as often as a uniform pick would have it (a bound a correct
// pick misses with probability below 1e-9), and no other.
func checkAnswers(t *testing.T, env *dptest.Env, step string, from *sandbox.NS, to netip.AddrPort, want []string) {
	t.Helper()
	if len(want) == 0 {
		if a, err := env.Request(from, "tcp", to, 700*time.Millisecond); err == nil {
			t.Fatalf("%s: %s answered %s, want no answer", step, to, a.Pod)
		}
		return
	}
	const perPod = 60
	n := perPod * len(want)
	answers, err := env.Requests(from, "tcp", to, n, 3*time.Second)
	if err != nil {
		t.Fatalf("%s: %s after %d answers: %v", step, to, len(answers), err)
	}
	count := map[string]int{}
	for _, a := range answers {
		count[a.Pod]++
	}
	for p, c := range count {
		if !slices.Contains(want, p) {
			t.Fatalf("%s: %s: %s answered (%d times), want only %v", step, to, p, c, want)
		}
	}
	t.Logf("%s: %s: %v", step, to, count)
	for _, p := range want {
		if c := count[p]; c < perPod/4 {
			t.Fatalf("%s: %s: %s answered %d of %d times, want about %d: %v", step, to, p, c, n, perPod, count)
		}
	}
}
