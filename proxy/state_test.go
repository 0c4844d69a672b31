package proxy_test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/svcproxy/svcproxy/proxy"
)

func mustNPA(t *testing.T, v ...string) proxy.NodePortAddresses {
	t.Helper()
	n, err := proxy.ParseNodePortAddresses(v)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func mustCIDRs(t *testing.T, v string) []netip.Prefix {
	t.Helper()
	p, err := proxy.ParseCIDRs(v)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestFamilySettings(t *testing.T) {
	nodeIPs := []netip.Addr{
		netip.MustParseAddr("192.168.1.10"), netip.MustParseAddr("fd00::10"),
		netip.MustParseAddr("10.0.0.10"), netip.MustParseAddr("127.0.0.1"),
	}
	cases := []struct {
		name   string
		cfg    proxy.Config
		nodes  []*corev1.Node
		header string // the two family header lines of Dump
	}{
		{
			name: "defaults: all local addresses, no detector",
			cfg:  proxy.Config{NodeName: "n"},
			header: `
				ipv4 masqueradeAll=false clusterCIDRs=[] nodeIP=none nodePorts=all-local
				ipv6 masqueradeAll=false clusterCIDRs=[] nodeIP=none nodePorts=all-local`,
		},
		{
			name: "dual-stack cluster CIDR: first of each family; masqueradeAll",
			cfg:  proxy.Config{NodeName: "n", MasqueradeAll: true, ClusterCIDRs: mustCIDRs(t, "10.244.0.0/16, 10.245.0.0/16,fd00:244::/56")},
			header: `
				ipv4 masqueradeAll=true clusterCIDRs=[10.244.0.0/16] nodeIP=none nodePorts=all-local
				ipv6 masqueradeAll=true clusterCIDRs=[fd00:244::/56] nodeIP=none nodePorts=all-local`,
		},
		{
			name: "nodeport-addresses primary",
			cfg:  proxy.Config{NodeName: "n", NodeIPs: nodeIPs, NodePortAddresses: mustNPA(t, "primary")},
			header: `
				ipv4 masqueradeAll=false clusterCIDRs=[] nodeIP=192.168.1.10 nodePorts=[192.168.1.10]
				ipv6 masqueradeAll=false clusterCIDRs=[] nodeIP=fd00::10 nodePorts=[fd00::10]`,
		},
		{
			name: "nodeport-addresses primary with a single-stack node",
			cfg:  proxy.Config{NodeName: "n", NodeIPs: nodeIPs[:1], NodePortAddresses: mustNPA(t, "primary")},
			header: `
				ipv4 masqueradeAll=false clusterCIDRs=[] nodeIP=192.168.1.10 nodePorts=[192.168.1.10]
				ipv6 masqueradeAll=false clusterCIDRs=[] nodeIP=none nodePorts=all-local`,
		},
		{
			name: "nodeport-addresses CIDRs select node addresses, never loopback",
			cfg:  proxy.Config{NodeName: "n", NodeIPs: nodeIPs, NodePortAddresses: mustNPA(t, "10.0.0.0/8,127.0.0.0/8", "192.168.0.0/16")},
			header: `
				ipv4 masqueradeAll=false clusterCIDRs=[] nodeIP=192.168.1.10 nodePorts=[10.0.0.10,192.168.1.10]
				ipv6 masqueradeAll=false clusterCIDRs=[] nodeIP=fd00::10 nodePorts=all-local`,
		},
		{
			name: "nodeport-addresses matching nothing",
			cfg:  proxy.Config{NodeName: "n", NodeIPs: nodeIPs, NodePortAddresses: mustNPA(t, "172.16.0.0/12")},
			header: `
				ipv4 masqueradeAll=false clusterCIDRs=[] nodeIP=192.168.1.10 nodePorts=[]
				ipv6 masqueradeAll=false clusterCIDRs=[] nodeIP=fd00::10 nodePorts=all-local`,
		},
		{
			name: "nodeport-addresses 0.0.0.0/0 means all",
			cfg:  proxy.Config{NodeName: "n", NodeIPs: nodeIPs, NodePortAddresses: mustNPA(t, "10.0.0.0/8,0.0.0.0/0")},
			header: `
				ipv4 masqueradeAll=false clusterCIDRs=[] nodeIP=192.168.1.10 nodePorts=all-local
				ipv6 masqueradeAll=false clusterCIDRs=[] nodeIP=fd00::10 nodePorts=all-local`,
		},
		{
			name:  "node IPs from the Node object, InternalIP first",
			cfg:   proxy.Config{NodeName: "n", NodePortAddresses: mustNPA(t, "primary")},
			nodes: []*corev1.Node{nodeWithAddrs("other", "10.9.9.9"), nodeWithAddrs("n", "ExternalIP=203.0.113.1", "10.1.1.1", "bad", "fd00::1")},
			header: `
				ipv4 masqueradeAll=false clusterCIDRs=[] nodeIP=10.1.1.1 nodePorts=[10.1.1.1]
				ipv6 masqueradeAll=false clusterCIDRs=[] nodeIP=fd00::1 nodePorts=[fd00::1]`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := proxy.Inputs{Nodes: tc.nodes}
			st := proxy.Build(in, tc.cfg)
			var got []string
			for _, l := range strings.Split(st.Dump(), "\n") {
				if strings.HasPrefix(l, "ipv") {
					got = append(got, l)
				}
			}
			if g, w := strings.Join(got, "\n"), strings.TrimSpace(dedent(tc.header)); g != w {
				t.Errorf("got\n%s\nwant\n%s", g, w)
			}
		})
	}
}

// nodeWithAddrs makes a Node; an address "Type=IP" has that type,
// otherwise InternalIP.
func nodeWithAddrs(name string, addrs ...string) *corev1.Node {
	n := node(name, "")
	for _, a := range addrs {
		t, ip, ok := strings.Cut(a, "=")
		if !ok {
			t, ip = string(corev1.NodeInternalIP), a
		}
		n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeAddressType(t), Address: ip})
	}
	return n
}

func TestNodeProblems(t *testing.T) {
	st := proxy.Build(proxy.Inputs{Nodes: []*corev1.Node{nodeWithAddrs("n", "x.y")}}, proxy.Config{NodeName: "n"})
	want := []string{`Node n: status.addresses[0].address: invalid IP "x.y": address skipped`}
	if got := problemStrings(st); !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, v := range [][]string{{"primary,10.0.0.0/8"}, {"10.0.0.1"}, {"nonsense"}} {
		if _, err := proxy.ParseNodePortAddresses(v); err == nil {
			t.Errorf("ParseNodePortAddresses(%q): no error", v)
		}
	}
	if _, err := proxy.ParseCIDRs("10.0.0.0/8,fd00::/300"); err == nil {
		t.Error("ParseCIDRs accepted a bad CIDR")
	}
}

// bigInputs is a synthetic cluster: n services, each with eps endpoints
// spread over nodes and zones, a mix of types, policies and conditions.
func bigInputs(n, eps int) proxy.Inputs {
	var objs []any
	objs = append(objs, node("node-0", "zone-0"))
	for i := range n {
		name := fmt.Sprintf("svc-%d", i)
		opts := []svcOpt{}
		// NodePorts are unique, as the API server allocates them; the range
		// holds 2768, so later NodePort-capable services get none.
		np := int32(0)
		if i < 2768 {
			np = int32(30000 + i)
		}
		switch i % 5 {
		case 1:
			opts = append(opts, nodePort(np))
		case 2:
			opts = append(opts, nodePort(np), lbIngress(lbIP(fmt.Sprintf("198.51.%d.%d", i/256%256, i%256))), etpLocal, healthCheck(int32(32000+i%700)),
				func(s *corev1.Service) { s.Spec.Ports[0].NodePort = np }) // lbIngress would give every one 30080
		case 3:
			opts = append(opts, itpLocal, affinity(nil))
		}
		objs = append(objs, svc(name, fmt.Sprintf("10.96.%d.%d", i/256%256, i%256), opts...))
		var es []discoveryv1.Endpoint
		for j := range eps {
			var o []epOpt
			if j%7 == 6 {
				o = append(o, terminating(true))
			}
			if i%4 == 0 {
				o = append(o, zones(fmt.Sprintf("zone-%d", j%3)))
			}
			es = append(es, ep(fmt.Sprintf("10.%d.%d.%d", 100+j%50, i/256%256, i%256), fmt.Sprintf("node-%d", j%10), o...))
		}
		half := len(es) / 2
		objs = append(objs, slice(name+"-a", name, http8080, es[:half]...), slice(name+"-b", name, http8080, es[half:]...))
	}
	return objects(objs...)
}

func TestBuildDeterministicUnderShuffle(t *testing.T) {
	in := bigInputs(200, 6)
	in.Services = append(in.Services, svc("dup", "10.97.0.1"), svc("dup", "10.97.0.2")) // two objects, one name
	cfg := proxy.Config{NodeName: "node-0", ClusterCIDRs: mustCIDRs(t, "10.0.0.0/8")}
	want := proxy.Build(in, cfg)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 5 {
		r.Shuffle(len(in.Services), func(a, b int) { in.Services[a], in.Services[b] = in.Services[b], in.Services[a] })
		r.Shuffle(len(in.EndpointSlices), func(a, b int) {
			in.EndpointSlices[a], in.EndpointSlices[b] = in.EndpointSlices[b], in.EndpointSlices[a]
		})
		for _, s := range in.EndpointSlices {
			r.Shuffle(len(s.Endpoints), func(a, b int) { s.Endpoints[a], s.Endpoints[b] = s.Endpoints[b], s.Endpoints[a] })
		}
		got := proxy.Build(in, cfg)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("shuffle %d: State differs:\n%s", i, firstDiff(got.Dump(), want.Dump()))
		}
	}
	if len(want.IPv4.Services) != 201 {
		t.Errorf("got %d services, want 201", len(want.IPv4.Services))
	}
	if p := problemStrings(want); len(p) != 1 || !strings.Contains(p[0], "2 different objects share this name") {
		t.Errorf("problems: %q", p)
	}
}

func firstDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range min(len(al), len(bl)) {
		if al[i] != bl[i] {
			return fmt.Sprintf("line %d:\n got: %s\nwant: %s", i+1, al[i], bl[i])
		}
	}
	return fmt.Sprintf("lengths %d vs %d", len(al), len(bl))
}

func TestDiff(t *testing.T) {
	cfg := proxy.Config{NodeName: "node-a"}
	web := slice("web-1", "web", http8080, ep("10.0.1.1", "node-a"))
	old := proxy.Build(objects(svc("web", "10.96.0.10"), web, svc("gone", "10.96.0.11"), svc("same", "10.96.0.12,fd00::12")), cfg)

	web2 := slice("web-1", "web", http8080, ep("10.0.1.1", "node-a"), ep("10.0.1.2", "node-b"))
	cur := proxy.Build(objects(svc("web", "10.96.0.10"), web2, svc("new", "10.96.0.13"), svc("same", "10.96.0.12,fd00::12")), cfg)

	d := cur.Diff(old, proxy.IPv4)
	key := func(n string) proxy.Key {
		return proxy.Key{Namespace: "ns", Name: n, Protocol: proxy.TCP, Port: "http"}
	}
	want := proxy.FamilyDiff{Added: []proxy.Key{key("new")}, Changed: []proxy.Key{key("web")}, Removed: []proxy.Key{key("gone")}}
	if !reflect.DeepEqual(d, want) {
		t.Errorf("ipv4 diff = %+v, want %+v", d, want)
	}
	if d := cur.Diff(old, proxy.IPv6); !d.Empty() {
		t.Errorf("ipv6 diff = %+v, want empty", d)
	}
	if d := cur.Diff(cur, proxy.IPv4); !d.Empty() {
		t.Errorf("self diff = %+v", d)
	}
	if d := cur.Diff(nil, proxy.IPv6); !d.GlobalChanged || len(d.Added) != 1 {
		t.Errorf("diff against nil = %+v", d)
	}
	masq := proxy.Build(objects(svc("web", "10.96.0.10"), web2, svc("new", "10.96.0.13"), svc("same", "10.96.0.12,fd00::12")),
		proxy.Config{NodeName: "node-a", MasqueradeAll: true})
	if d := masq.Diff(cur, proxy.IPv4); !d.GlobalChanged || len(d.Added)+len(d.Changed)+len(d.Removed) != 0 {
		t.Errorf("masqueradeAll diff = %+v", d)
	}
	if got := cur.IPv4.Service(key("web")); got == nil || got.Hash == old.IPv4.Service(key("web")).Hash {
		t.Errorf("Service lookup / hash: %+v", got)
	}
	if cur.IPv4.Service(key("gone")) != nil {
		t.Error("lookup of a removed key found something")
	}
}

// Every field that a backend renders must move the hash.
func TestHashCoversEveryField(t *testing.T) {
	base := func() *corev1.Service {
		return svc("web", "10.96.0.10", lbIngress(lbIP("198.51.100.1")), externalIPs("192.0.2.1"), sourceRanges("203.0.113.0/24"))
	}
	eps := slice("web-1", "web", http8080, ep("10.0.1.1", "node-a"), ep("10.0.2.1", "node-b"))
	hash := func(s *corev1.Service, e *discoveryv1.EndpointSlice) uint64 {
		return proxy.Build(objects(s, e), baseConfig).IPv4.Services[0].Hash
	}
	h0 := hash(base(), eps)
	if h0 != hash(base(), eps) {
		t.Fatal("hash is not stable")
	}
	mutations := map[string]func(*corev1.Service){
		"clusterIP":    func(s *corev1.Service) { s.Spec.ClusterIPs = []string{"10.96.0.11"} },
		"port":         func(s *corev1.Service) { s.Spec.Ports[0].Port = 81 },
		"nodePort":     func(s *corev1.Service) { s.Spec.Ports[0].NodePort = 30081 },
		"externalIP":   externalIPs("192.0.2.2"),
		"lbIP":         func(s *corev1.Service) { s.Status.LoadBalancer.Ingress[0].IP = "198.51.100.2" },
		"sourceRange":  sourceRanges("203.0.113.0/25"),
		"itp":          itpLocal,
		"etp":          etpLocal,
		"healthCheck":  func(s *corev1.Service) { etpLocal(s); s.Spec.HealthCheckNodePort = 32000 },
		"affinity":     affinity(nil),
		"portName":     func(s *corev1.Service) { s.Spec.Ports[0].Name = "web" },
		"portProtocol": func(s *corev1.Service) { s.Spec.Ports[0].Protocol = corev1.ProtocolUDP },
	}
	for name, m := range mutations {
		s := base()
		m(s)
		if hash(s, eps) == h0 {
			t.Errorf("%s: hash unchanged", name)
		}
	}
	epMutations := map[string]*discoveryv1.EndpointSlice{
		"endpoint added":       slice("web-1", "web", http8080, ep("10.0.1.1", "node-a"), ep("10.0.2.1", "node-b"), ep("10.0.3.1", "")),
		"endpoint terminating": slice("web-1", "web", http8080, ep("10.0.1.1", "node-a"), ep("10.0.2.1", "node-b", terminating(true))),
		"endpoint port":        slice("web-1", "web", []discoveryv1.EndpointPort{slicePort("http", corev1.ProtocolTCP, 8081)}, ep("10.0.1.1", "node-a"), ep("10.0.2.1", "node-b")),
		"endpoint node":        slice("web-1", "web", http8080, ep("10.0.1.1", "node-a"), ep("10.0.2.1", "node-c")),
	}
	for name, e := range epMutations {
		if hash(base(), e) == h0 {
			t.Errorf("%s: hash unchanged", name)
		}
	}
}

func TestProblemsBoundedPerObject(t *testing.T) {
	var es []discoveryv1.Endpoint
	for i := range 1000 {
		es = append(es, ep(fmt.Sprintf("bad-%d", i), ""))
	}
	es = append(es, ep("10.0.0.1", ""))
	st := proxy.Build(objects(svc("web", "10.96.0.10"), slice("web-1", "web", http8080, es...)), baseConfig)
	p := problemStrings(st)
	if len(p) != 21 || !strings.Contains(strings.Join(p, "\n"), "EndpointSlice ns/web-1: 980 more problems not listed") {
		t.Errorf("got %d problems: %q...", len(p), p[len(p)-1])
	}
	if got := st.IPv4.Services[0].ClusterEndpoints; len(got) != 1 {
		t.Errorf("the good endpoint was lost: %v", got)
	}
}

func TestDumpIncludesExternalNamesAndProblems(t *testing.T) {
	s := svc("ext", "", typ(corev1.ServiceTypeExternalName), func(s *corev1.Service) { s.Spec.ExternalName = "db.example.com." })
	st := proxy.Build(objects(s, svc("bad", "10.96.0.10", typ("X"))), baseConfig)
	d := st.Dump()
	for _, want := range []string{"externalName ns/ext -> db.example.com.\n", `problem Service ns/bad: spec.type: unknown type "X": Service skipped` + "\n"} {
		if !strings.Contains(d, want) {
			t.Errorf("Dump lacks %q:\n%s", want, d)
		}
	}
}

func TestHealthChecks(t *testing.T) {
	s := svc("lb", "10.96.0.10", ports(port("http", corev1.ProtocolTCP, 80, 30080), port("https", corev1.ProtocolTCP, 443, 30443)),
		lbIngress(lbIP("198.51.100.1")), etpLocal, healthCheck(32000))
	eps := slice("lb-1", "lb", []discoveryv1.EndpointPort{slicePort("http", corev1.ProtocolTCP, 8080), slicePort("https", corev1.ProtocolTCP, 8443)},
		ep("10.0.1.1", "node-a"), ep("10.0.1.2", "node-a", terminating(true)), ep("10.0.2.1", "node-b"))
	s2 := svc("lb2", "10.96.0.12", ports(port("http", corev1.ProtocolTCP, 80, 30081)), lbIngress(lbIP("198.51.100.2")), etpLocal, healthCheck(32001))
	eps2 := slice("lb2-1", "lb2", http8080, ep("10.0.1.3", "node-a"), ep("10.0.1.4", "node-a"))
	st := proxy.Build(objects(s, eps, svc("plain", "10.96.0.11"), s2, eps2), baseConfig)
	want := []proxy.HealthCheck{{Namespace: "ns", Name: "lb", Port: 32000, LocalEndpoints: 1}, {Namespace: "ns", Name: "lb2", Port: 32001, LocalEndpoints: 2}}
	if got := st.IPv4.HealthChecks(); !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestUDPTargets(t *testing.T) {
	s := svc("dns", "10.96.0.10", ports(port("dns", corev1.ProtocolUDP, 53, 30053)), externalIPs("192.0.2.1"))
	s.Spec.Type = corev1.ServiceTypeNodePort
	eps := slice("dns-1", "dns", []discoveryv1.EndpointPort{slicePort("dns", corev1.ProtocolUDP, 5353)}, ep("10.0.1.1", "node-a"))
	empty := svc("none", "10.96.0.11", ports(port("dns", corev1.ProtocolUDP, 53, 0)))
	tcp := svc("web", "10.96.0.12")
	tg := proxy.Build(objects(s, eps, empty, tcp), baseConfig).IPv4.UDPTargets()
	ap := netip.MustParseAddrPort
	cases := []struct {
		dst, reply string
		nodePort   bool
		stale      bool
	}{
		{"10.96.0.10:53", "10.0.1.1:5353", false, false},
		{"10.96.0.10:53", "10.0.1.2:5353", false, true}, // endpoint gone
		{"10.96.0.10:53", "10.96.0.10:53", false, true}, // made while there were no endpoints
		{"192.0.2.1:53", "10.0.1.9:5353", false, true},
		{"192.168.1.1:30053", "10.0.1.1:5353", true, false},
		{"192.168.1.1:30053", "10.0.1.9:5353", true, true},
		{"192.168.1.1:30053", "10.0.1.9:5353", false, false}, // not a node address
		{"10.96.0.11:53", "10.96.0.11:53", false, false},     // still no endpoints: the reject stands
		{"10.96.0.12:80", "10.0.9.9:80", false, false},       // TCP: not ours to clean
		{"8.8.8.8:53", "8.8.8.8:53", false, false},
	}
	for _, c := range cases {
		if got := tg.Stale(ap(c.dst), ap(c.reply), c.nodePort); got != c.stale {
			t.Errorf("Stale(%s, %s, %v) = %v", c.dst, c.reply, c.nodePort, got)
		}
	}
}

func TestExplain(t *testing.T) {
	cfg := proxy.Config{NodeName: "node-a", ClusterCIDRs: mustCIDRs(t, "10.244.0.0/16"), NodeIPs: []netip.Addr{netip.MustParseAddr("192.168.1.2")}}
	eps := slice("lb-1", "lb", http8080, ep("10.244.1.1", "node-a"), ep("10.244.2.1", "node-b"))
	st := proxy.Build(objects(
		svc("lb", "10.96.0.10", nodePort(30080), lbIngress(lbIP("198.51.100.1")), etpLocal, healthCheck(32000), sourceRanges("203.0.113.0/24", "10.244.0.0/16")), eps,
		svc("web", "10.96.0.11", affinity(nil)), slice("web-1", "web", http8080, ep("10.244.1.1", "node-a")),
		svc("gone", "10.96.0.12"),
		svc("remote", "10.96.0.13", nodePort(30081), etpLocal), slice("remote-1", "remote", http8080, ep("10.244.2.1", "node-b")),
	), cfg)
	pkt := func(src, dst string, mods ...func(*proxy.Packet)) proxy.Packet {
		p := proxy.Packet{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddrPort(dst), Protocol: proxy.TCP}
		for _, m := range mods {
			m(&p)
		}
		return p
	}
	fromNode := func(p *proxy.Packet) { p.FromNode = true }
	cases := []struct {
		name    string
		p       proxy.Packet
		verdict proxy.Verdict
		eps     int
		masq    bool
		hairpin bool
		why     string
	}{
		{"ClusterIP from outside the cluster", pkt("192.168.1.50", "10.96.0.10:80"), proxy.Forward, 2, true, false, "masqueraded"},
		{"ClusterIP from a pod", pkt("10.244.3.3", "10.96.0.10:80"), proxy.Forward, 2, false, false, "internalTrafficPolicy Cluster"},
		{"LB IP, eTP Local, external client in range", pkt("203.0.113.9", "198.51.100.1:80"), proxy.Forward, 1, false, false, "this node's endpoints only"},
		{"LB IP, source outside ranges", pkt("192.0.2.1", "198.51.100.1:80"), proxy.Drop, 0, false, false, "outside loadBalancerSourceRanges"},
		{"NodePort from a pod: short-circuit", pkt("10.244.3.3", "192.168.1.2:30080"), proxy.Forward, 2, false, false, "from a pod"},
		{"NodePort from the node", pkt("192.168.1.2", "192.168.1.2:30080", fromNode), proxy.Forward, 2, true, false, "from the node"},
		{"NodePort, no local endpoint", pkt("192.0.2.1", "192.168.1.2:30081"), proxy.Drop, 0, false, false, "none on this node"},
		{"no endpoints", pkt("10.244.3.3", "10.96.0.12:80"), proxy.Reject, 0, false, false, "rejected"},
		{"hairpin and affinity", pkt("10.244.1.1", "10.96.0.11:80"), proxy.Forward, 1, false, true, "ClientIP affinity: a client keeps its endpoint for 10800s"},
		{"not a Service", pkt("10.244.3.3", "10.96.0.99:80"), proxy.Forward, 0, false, false, "not proxied"},
		{"wrong protocol", pkt("10.244.3.3", "10.96.0.10:80", func(p *proxy.Packet) { p.Protocol = proxy.UDP }), proxy.Forward, 0, false, false, "not proxied"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := st.Explain(c.p)
			if e.Verdict != c.verdict || len(e.Endpoints) != c.eps || e.Masquerade != c.masq || e.Hairpin != c.hairpin || !strings.Contains(e.String(), c.why) {
				t.Errorf("got verdict=%s eps=%d masq=%v hairpin=%v\n%s", e.Verdict, len(e.Endpoints), e.Masquerade, e.Hairpin, e)
			}
		})
	}
}

func TestExternalRoutes(t *testing.T) {
	cidr := mustCIDRs(t, "10.244.0.0/16")
	cfg := proxy.Config{NodeName: "node-a", ClusterCIDRs: cidr}
	both := slice("s-1", "s", http8080, ep("10.0.1.1", "node-a"), ep("10.0.2.1", "node-b"))
	remote := slice("s-1", "s", http8080, ep("10.0.2.1", "node-b"))
	cases := []struct {
		name string
		cfg  proxy.Config
		objs []any
		want []proxy.Route
	}{
		{"Cluster: masquerade, any endpoint", cfg, []any{svc("s", "10.96.0.1", nodePort(30080)), both},
			[]proxy.Route{{From: proxy.AnySender, Masquerade: true}}},
		{"Local: pods, node, then local", cfg, []any{svc("s", "10.96.0.1", nodePort(30080), etpLocal), both},
			[]proxy.Route{{From: proxy.PodSender, Prefix: cidr[0]}, {From: proxy.NodeSender, Masquerade: true}, {From: proxy.AnySender, Local: true}}},
		{"Local without local endpoints: no catch-all", cfg, []any{svc("s", "10.96.0.1", nodePort(30080), etpLocal), remote},
			[]proxy.Route{{From: proxy.PodSender, Prefix: cidr[0]}, {From: proxy.NodeSender, Masquerade: true}}},
		{"Local without pod detection", proxy.Config{NodeName: "node-a"}, []any{svc("s", "10.96.0.1", nodePort(30080), etpLocal), both},
			[]proxy.Route{{From: proxy.NodeSender, Masquerade: true}, {From: proxy.AnySender, Local: true}}},
		{"no endpoints: no routes", cfg, []any{svc("s", "10.96.0.1", nodePort(30080))}, nil},
		{"not externally accessible: no routes", cfg, []any{svc("s", "10.96.0.1"), both}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := proxy.Build(objects(c.objs...), c.cfg)
			if got := st.IPv4.ExternalRoutes(st.IPv4.Services[0]); !reflect.DeepEqual(got, c.want) {
				t.Errorf("got %+v, want %+v", got, c.want)
			}
		})
	}
}

// Huge objects are handled, and what is wrong in them is reported in
// bounded space.
func TestHugeObjects(t *testing.T) {
	var ps []corev1.ServicePort
	for i := range 10000 {
		ps = append(ps, port(fmt.Sprintf("p%d", i), corev1.ProtocolTCP, int32(1+i%65535), 0))
	}
	many := svc("many-ports", "10.96.0.10", ports(ps...))
	var eps []discoveryv1.Endpoint
	for i := range 100000 {
		addr := fmt.Sprintf("10.%d.%d.%d", 100+i>>16, i>>8&255, i&255)
		if i%5 == 0 {
			addr = "bad" // 20,000 invalid addresses
		}
		eps = append(eps, ep(addr, fmt.Sprintf("node-%d", i%100)))
	}
	big := slice("big-1", "big", http8080, eps...)
	st := proxy.Build(objects(many, svc("big", "10.96.0.11"), big), baseConfig)
	if n := len(st.IPv4.Services); n != 10001 {
		t.Errorf("%d service ports, want 10001", n)
	}
	got := st.IPv4.Service(proxy.Key{Namespace: "ns", Name: "big", Protocol: proxy.TCP, Port: "http"})
	if got == nil || len(got.ClusterEndpoints) != 80000 {
		t.Fatalf("big service: %v endpoints, want 80000", len(got.ClusterEndpoints))
	}
	if p := problemStrings(st); len(p) != 21 || !slices.Contains(p, "EndpointSlice ns/big-1: 19980 more problems not listed") {
		t.Errorf("%d problems: %q", len(p), p[:3])
	}
}
