package controller

import (
	"fmt"
	"math/rand"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/randfill"

	"github.com/svcproxy/svcproxy/golden"
	"github.com/svcproxy/svcproxy/manifest"
	"github.com/svcproxy/svcproxy/nft"
	"github.com/svcproxy/svcproxy/proxy"
	"github.com/svcproxy/svcproxy/textdiff"
)

// transformed returns deep copies of in's Services and EndpointSlices as
// the informers' transforms leave them (Nodes are not transformed).
func transformed(t *testing.T, in proxy.Inputs) proxy.Inputs {
	t.Helper()
	s := &InformerSource{}
	out := proxy.Inputs{Nodes: in.Nodes}
	for _, svc := range in.Services {
		o, err := s.transformService(svc.DeepCopy())
		if err != nil {
			t.Fatal(err)
		}
		out.Services = append(out.Services, o.(*corev1.Service))
	}
	for _, sl := range in.EndpointSlices {
		o, err := s.transformEndpointSlice(sl.DeepCopy())
		if err != nil {
			t.Fatal(err)
		}
		out.EndpointSlices = append(out.EndpointSlices, o.(*discoveryv1.EndpointSlice))
	}
	return out
}

// sameModel fails unless the transformed objects build the State the
// originals build, and render the same rules.
func sameModel(t *testing.T, name string, in proxy.Inputs, cfg proxy.Config) {
	t.Helper()
	want := proxy.Build(in, cfg)
	got := proxy.Build(transformed(t, in), cfg)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s: the transforms change the model:\n%s", name,
			textdiff.Unified("without", "with", want.Dump()+fmt.Sprint(want.Problems), got.Dump()+fmt.Sprint(got.Problems)))
		return
	}
	if a, b := nft.Render(want), nft.Render(got); a != b {
		t.Errorf("%s: the transforms change the rules:\n%s", name, textdiff.Unified("without", "with", a, b))
	}
}

// The golden cases cover the model's semantics with valid and invalid
// input. Cases with two objects under one name are skipped: they come from
// manifests only (an informer keys its cache by name).
func TestTransformsKeepTheModelOnGoldenCases(t *testing.T) {
	cases, err := golden.Load("../testdata/golden")
	if err != nil {
		t.Fatal(err)
	}
	ran := 0
	for _, c := range cases {
		objs, probs := manifest.Decode(c.ManifestFile(), c.Manifests)
		if len(probs) > 0 {
			t.Fatalf("%s: %v", c.Name, probs)
		}
		in := proxy.Inputs{Services: objs.Services, EndpointSlices: objs.EndpointSlices, Nodes: objs.Nodes}
		if hasDuplicates(in) {
			continue
		}
		sameModel(t, c.Name, in, c.Config)
		ran++
	}
	if ran < len(cases)/2 {
		t.Fatalf("only %d of %d golden cases compared", ran, len(cases))
	}
}

// Random objects with every field set (randfill) — managedFields,
// annotations, targetRefs, topology, conditions, hints, all of it — and
// the fields the model decides on drawn from vocabularies that reach its
// paths (and sometimes left random): whatever the transforms drop must
// not be something the model reads.
func TestTransformsKeepTheModelOnRandomObjects(t *testing.T) {
	for seed := range int64(200) {
		in, cfg := randomInputs(seed)
		sameModel(t, fmt.Sprintf("seed %d", seed), in, cfg)
	}
}

// The transforms drop what they are meant to, and share repeated values.
func TestTransformsDropAndShare(t *testing.T) {
	in, _ := randomInputs(1)
	out := transformed(t, in)
	nodeNames := map[string]*string{}
	for _, sl := range out.EndpointSlices {
		if sl.ManagedFields != nil || sl.OwnerReferences != nil || len(sl.Annotations) > 1 || len(sl.Labels) > 3 {
			t.Fatalf("slice %s: metadata kept: %+v", sl.Name, sl.ObjectMeta)
		}
		if cap(sl.Endpoints) != len(sl.Endpoints) {
			t.Errorf("slice %s: %d endpoints in an array of %d", sl.Name, len(sl.Endpoints), cap(sl.Endpoints))
		}
		for _, ep := range sl.Endpoints {
			if ep.TargetRef != nil || ep.Hostname != nil || ep.Zone != nil || ep.DeprecatedTopology != nil {
				t.Fatalf("slice %s: endpoint fields kept: %+v", sl.Name, ep)
			}
			if ep.NodeName == nil {
				continue
			}
			if p, ok := nodeNames[*ep.NodeName]; ok && p != ep.NodeName {
				t.Errorf("node name %q not shared", *ep.NodeName)
			}
			nodeNames[*ep.NodeName] = ep.NodeName
		}
	}
	if len(nodeNames) == 0 {
		t.Fatal("no node names to share")
	}
	for _, svc := range out.Services {
		if svc.ManagedFields != nil || svc.Annotations != nil || svc.Spec.Selector != nil || len(svc.Labels) > 2 {
			t.Fatalf("service %s: fields kept: %+v", svc.Name, svc)
		}
	}

}

// Equal values are kept in one copy: namespaces and the Services'
// enumerations (decoding allocates each on its own).
func TestTransformsShareValues(t *testing.T) {
	s := &InformerSource{}
	var svcs []*corev1.Service
	var sls []*discoveryv1.EndpointSlice
	for i := range 2 {
		svc := &corev1.Service{}
		svc.Namespace, svc.Name = strings.Clone("ns"), fmt.Sprint("s", i)
		sp := &svc.Spec
		sp.Type = corev1.ServiceType(strings.Clone("LoadBalancer"))
		sp.SessionAffinity = corev1.ServiceAffinity(strings.Clone("None"))
		sp.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicy(strings.Clone("Local"))
		sp.InternalTrafficPolicy = ptr.To(corev1.ServiceInternalTrafficPolicy(strings.Clone("Cluster")))
		svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "192.0.2.1", IPMode: ptr.To(corev1.LoadBalancerIPMode(strings.Clone("VIP")))}}
		o, err := s.transformService(svc)
		if err != nil {
			t.Fatal(err)
		}
		svcs = append(svcs, o.(*corev1.Service))
		sl := &discoveryv1.EndpointSlice{}
		sl.Namespace, sl.Name = strings.Clone("ns"), fmt.Sprint("s", i, "-1")
		if o, err = s.transformEndpointSlice(sl); err != nil {
			t.Fatal(err)
		}
		sls = append(sls, o.(*discoveryv1.EndpointSlice))
	}
	a, b := svcs[0], svcs[1]
	for _, c := range []struct {
		what string
		x, y string
	}{
		{"namespace", a.Namespace, b.Namespace},
		{"slice namespace", sls[0].Namespace, sls[1].Namespace},
		{"slice and service namespace", a.Namespace, sls[1].Namespace},
		{"type", string(a.Spec.Type), string(b.Spec.Type)},
		{"session affinity", string(a.Spec.SessionAffinity), string(b.Spec.SessionAffinity)},
		{"external traffic policy", string(a.Spec.ExternalTrafficPolicy), string(b.Spec.ExternalTrafficPolicy)},
	} {
		if unsafe.StringData(c.x) != unsafe.StringData(c.y) {
			t.Errorf("%s %q: two copies", c.what, c.x)
		}
	}
	if a.Spec.InternalTrafficPolicy != b.Spec.InternalTrafficPolicy {
		t.Error("internal traffic policy: two copies")
	}
	if a.Status.LoadBalancer.Ingress[0].IPMode != b.Status.LoadBalancer.Ingress[0].IPMode {
		t.Error("IP mode: two copies")
	}
}

// A slice keeps no UID, and each endpoint its first address only, all of
// a slice's addresses in one string.
func TestTransformsPackSlices(t *testing.T) {
	s := &InformerSource{}
	sl := &discoveryv1.EndpointSlice{}
	sl.Namespace, sl.Name, sl.UID = "ns", "a-1", "6c1e2b5a"
	sl.Endpoints = []discoveryv1.Endpoint{
		{Addresses: []string{"10.0.0.1", "10.0.0.9"}},
		{},
		{Addresses: []string{"10.0.0.22"}},
		{Addresses: []string{"fd00::3"}},
	}
	o, err := s.transformEndpointSlice(sl)
	if err != nil {
		t.Fatal(err)
	}
	out := o.(*discoveryv1.EndpointSlice)
	if out.UID != "" {
		t.Errorf("UID kept: %q", out.UID)
	}
	want := [][]string{{"10.0.0.1"}, nil, {"10.0.0.22"}, {"fd00::3"}}
	for i, ep := range out.Endpoints {
		if !reflect.DeepEqual(ep.Addresses, want[i]) || cap(ep.Addresses) != len(ep.Addresses) {
			t.Errorf("endpoint %d: addresses %q (cap %d), want %q", i, ep.Addresses, cap(ep.Addresses), want[i])
		}
	}
	first, last := out.Endpoints[0].Addresses[0], out.Endpoints[3].Addresses[0]
	if got := unsafe.Add(unsafe.Pointer(unsafe.StringData(first)), len("10.0.0.1")+len("10.0.0.22")); got != unsafe.Pointer(unsafe.StringData(last)) {
		t.Error("the addresses are not packed in one string")
	}
}

// A shared pointer is held weakly: once no object uses a value, its entry
// goes at a later sweep.
func TestInternerForgetsUnusedValues(t *testing.T) {
	var in interner
	a := in.ptr(ptr.To("node-a"))
	if b := in.ptr(ptr.To("node-a")); b != a {
		t.Fatal("equal values not shared")
	}
	if c := in.ptr(ptr.To("node-c")); c == a {
		t.Fatal("different values shared")
	}
	a = nil
	runtime.GC()
	for i := range 2000 {
		in.ptr(ptr.To(fmt.Sprint("x", i)))
		runtime.KeepAlive(a)
	}
	if _, ok := in.ptrs["node-a"]; ok {
		t.Error("an unused value is still held after a sweep")
	}
	if len(in.ptrs) > 2000 {
		t.Errorf("%d entries for 2000 live values", len(in.ptrs))
	}
}

func hasDuplicates(in proxy.Inputs) bool {
	seen := map[string]bool{}
	for _, s := range in.Services {
		k := "svc/" + s.Namespace + "/" + s.Name
		if seen[k] {
			return true
		}
		seen[k] = true
	}
	for _, s := range in.EndpointSlices {
		k := "slice/" + s.Namespace + "/" + s.Name
		if seen[k] {
			return true
		}
		seen[k] = true
	}
	return false
}

// randomInputs is a small cluster of random objects for one node.
func randomInputs(seed int64) (proxy.Inputs, proxy.Config) {
	r := rand.New(rand.NewSource(seed))
	f := randfill.NewWithSeed(seed).NilChance(0.2).NumElements(1, 3).MaxDepth(8)
	// pick sets *v to one of vs, or leaves the random value one time in six.
	pick := func(v *string, vs ...string) {
		if i := r.Intn(len(vs) + 1); i < len(vs) {
			*v = vs[i]
		}
	}
	ptrTo := func(v **string, vs ...string) {
		if r.Intn(5) == 0 {
			*v = nil
			return
		}
		s := new(string)
		if *v != nil {
			*s = **v
		}
		pick(s, vs...)
		*v = s
	}
	boolPtr := func() *bool { return []*bool{nil, ptr.To(true), ptr.To(false)}[r.Intn(3)] }
	int32In := func(v *int32, vs ...int32) {
		if i := r.Intn(len(vs) + 1); i < len(vs) {
			*v = vs[i]
		}
	}
	names := []string{"a", "b", "c", "d", "e", "f"}
	portNames := []string{"", "http", "dns"}
	protocols := []string{"", "TCP", "UDP", "SCTP"}
	nodes := []string{"node-a", "node-b", "node-c"}
	zones := []string{"zone-1", "zone-2"}

	var in proxy.Inputs
	for i, name := range names {
		svc := &corev1.Service{}
		f.Fill(svc)
		svc.Namespace, svc.Name = "ns", name
		if svc.Labels == nil {
			svc.Labels = map[string]string{}
		}
		if r.Intn(8) == 0 {
			svc.Labels[[]string{proxy.LabelServiceProxyName, proxy.LabelHeadless}[r.Intn(2)]] = ""
		}
		sp := &svc.Spec
		typ := string(sp.Type)
		pick(&typ, "", "ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
		sp.Type = corev1.ServiceType(typ)
		pick(&sp.ExternalName, "db.example.com", "")
		pick(&sp.ClusterIP, fmt.Sprintf("10.96.0.%d", i+1), fmt.Sprintf("fd00::%d", i+1), "None", "")
		sp.ClusterIPs = []string{sp.ClusterIP, fmt.Sprintf("fd00::%d", i+1)}[:1+r.Intn(2)]
		if r.Intn(3) == 0 {
			sp.ClusterIPs = nil
		}
		for j := range sp.Ports {
			p := &sp.Ports[j]
			pick(&p.Name, portNames...)
			proto := string(p.Protocol)
			pick(&proto, protocols...)
			p.Protocol = corev1.Protocol(proto)
			int32In(&p.Port, 80, 53, 443)
			int32In(&p.NodePort, 0, int32(30000+i))
		}
		for j := range sp.ExternalIPs {
			pick(&sp.ExternalIPs[j], "192.0.2.1", "2001:db8::1")
		}
		for j := range sp.LoadBalancerSourceRanges {
			pick(&sp.LoadBalancerSourceRanges[j], "203.0.113.0/24", "0.0.0.0/0", "10.0.0.0/8")
		}
		for j := range svc.Status.LoadBalancer.Ingress {
			ing := &svc.Status.LoadBalancer.Ingress[j]
			pick(&ing.IP, fmt.Sprintf("198.51.100.%d", i+1), "", "2001:db8::100")
			if ing.IPMode != nil {
				m := string(*ing.IPMode)
				pick(&m, "VIP", "Proxy")
				ing.IPMode = ptr.To(corev1.LoadBalancerIPMode(m))
			}
		}
		etp := string(sp.ExternalTrafficPolicy)
		pick(&etp, "", "Local", "Cluster")
		sp.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicy(etp)
		if sp.InternalTrafficPolicy != nil {
			itp := string(*sp.InternalTrafficPolicy)
			pick(&itp, "Local", "Cluster")
			sp.InternalTrafficPolicy = ptr.To(corev1.ServiceInternalTrafficPolicy(itp))
		}
		int32In(&sp.HealthCheckNodePort, 0, 32000)
		aff := string(sp.SessionAffinity)
		pick(&aff, "", "None", "ClientIP")
		sp.SessionAffinity = corev1.ServiceAffinity(aff)
		if c := sp.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
			int32In(c.ClientIP.TimeoutSeconds, 60, 10800)
		}
		in.Services = append(in.Services, svc)

		for k := range 1 + r.Intn(2) {
			sl := &discoveryv1.EndpointSlice{}
			f.Fill(sl)
			sl.Namespace, sl.Name = "ns", fmt.Sprintf("%s-%d", name, k)
			svcName := name
			pick(&svcName, name, names[r.Intn(len(names))])
			if sl.Labels == nil {
				sl.Labels = map[string]string{}
			}
			sl.Labels[discoveryv1.LabelServiceName] = svcName
			if r.Intn(8) == 0 {
				delete(sl.Labels, discoveryv1.LabelServiceName)
			}
			at := string(sl.AddressType)
			pick(&at, "IPv4", "IPv4", "IPv6", "FQDN")
			sl.AddressType = discoveryv1.AddressType(at)
			for j := range sl.Ports {
				p := &sl.Ports[j]
				ptrTo(&p.Name, portNames...)
				if p.Port != nil {
					int32In(p.Port, 8080, 5353)
				}
				if p.Protocol != nil {
					proto := string(*p.Protocol)
					pick(&proto, protocols[1:]...)
					p.Protocol = ptr.To(corev1.Protocol(proto))
				}
			}
			for j := range sl.Endpoints {
				ep := &sl.Endpoints[j]
				for a := range ep.Addresses {
					pick(&ep.Addresses[a], fmt.Sprintf("10.244.%d.%d", i, j+1), fmt.Sprintf("fd00:244::%d:%d", i, j+1))
				}
				ep.Conditions = discoveryv1.EndpointConditions{Ready: boolPtr(), Serving: boolPtr(), Terminating: boolPtr()}
				ptrTo(&ep.NodeName, nodes...)
				if h := ep.Hints; h != nil {
					for z := range h.ForZones {
						pick(&h.ForZones[z].Name, zones...)
					}
					for n := range h.ForNodes {
						pick(&h.ForNodes[n].Name, nodes...)
					}
				}
			}
			in.EndpointSlices = append(in.EndpointSlices, sl)
		}
	}
	node := &corev1.Node{}
	node.Name = "node-a"
	node.Labels = map[string]string{corev1.LabelTopologyZone: zones[r.Intn(2)]}
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.0.2.10"}}
	in.Nodes = []*corev1.Node{node}
	cidrs, _ := proxy.ParseCIDRs("10.244.0.0/16,fd00:244::/56")
	return in, proxy.Config{NodeName: "node-a", ClusterCIDRs: cidrs}
}
