package proxy_test

import (
	"math/rand/v2"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/svcproxy/svcproxy/proxy"
)

// choices turns fuzz bytes into picks from small vocabularies, so that
// mutated input reaches the model's semantics instead of failing to parse.
type choices struct{ data []byte }

func (c *choices) n(max int) int {
	if len(c.data) == 0 {
		return 0
	}
	b := c.data[0]
	c.data = c.data[1:]
	return int(b) % max
}

func pickOf[T any](c *choices, vs ...T) T { return vs[c.n(len(vs))] }

func (c *choices) optBool() *bool { return pickOf(c, nil, ptr.To(true), ptr.To(false)) }

func (c *choices) service() *corev1.Service {
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: pickOf(c, "a", "b", "c")}}
	s.Spec.Type = pickOf[corev1.ServiceType](c, "", "ClusterIP", "NodePort", "LoadBalancer", "ExternalName", "Bogus")
	s.Spec.ClusterIPs = strings.Split(pickOf(c, "10.96.0.1", "10.96.0.2,fd00::2", "fd00::3", "None", "", "bad", "10.96.0.4,10.96.0.5"), ",")
	s.Spec.ClusterIP = s.Spec.ClusterIPs[0]
	if c.n(2) == 0 {
		s.Spec.ClusterIPs = nil
	}
	s.Spec.ExternalName = pickOf(c, "", "db.example.com", "bad name")
	for range c.n(4) {
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{
			Name:     pickOf(c, "", "http", "dns"),
			Protocol: pickOf[corev1.Protocol](c, "", "TCP", "UDP", "SCTP", "ICMP"),
			Port:     pickOf[int32](c, 80, 53, 0, 70000),
			NodePort: pickOf[int32](c, 0, 30080, -1),
		})
	}
	s.Spec.ExternalIPs = pickOf(c, nil, []string{"192.0.2.1"}, []string{"2001:db8::1", "x"})
	s.Spec.ExternalTrafficPolicy = pickOf[corev1.ServiceExternalTrafficPolicy](c, "", "Local", "Cluster", "Odd")
	s.Spec.InternalTrafficPolicy = pickOf(c, nil, ptr.To(corev1.ServiceInternalTrafficPolicyLocal), ptr.To[corev1.ServiceInternalTrafficPolicy]("Odd"))
	s.Spec.HealthCheckNodePort = pickOf[int32](c, 0, 32000, 99999)
	s.Spec.SessionAffinity = pickOf[corev1.ServiceAffinity](c, "", "ClientIP", "Odd")
	if c.n(2) == 1 {
		s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: pickOf(c, nil, ptr.To[int32](60), ptr.To[int32](-1))}}
	}
	s.Spec.LoadBalancerSourceRanges = pickOf(c, nil, []string{"203.0.113.0/24"}, []string{"0.0.0.0/0", "bad"}, []string{"2001:db8::/32"})
	for range c.n(3) {
		s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{
			IP:     pickOf(c, "198.51.100.1", "2001:db8::5", "", "nope"),
			IPMode: pickOf(c, nil, ptr.To(corev1.LoadBalancerIPModeVIP), ptr.To(corev1.LoadBalancerIPModeProxy)),
		})
	}
	if c.n(4) == 0 {
		s.Labels = map[string]string{pickOf(c, proxy.LabelServiceProxyName, proxy.LabelHeadless, "x"): ""}
	}
	return s
}

func (c *choices) slice(i int) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: pickOf(c, "s1", "s2", "s3", "s4")}}
	if svc := pickOf(c, "a", "b", "c", ""); svc != "" || c.n(2) == 0 {
		s.Labels = map[string]string{discoveryv1.LabelServiceName: svc}
	}
	s.AddressType = pickOf[discoveryv1.AddressType](c, "IPv4", "IPv6", "FQDN", "Odd")
	for range c.n(3) {
		s.Ports = append(s.Ports, discoveryv1.EndpointPort{
			Name:     pickOf(c, nil, ptr.To(""), ptr.To("http"), ptr.To("dns")),
			Protocol: pickOf(c, nil, ptr.To(corev1.ProtocolTCP), ptr.To(corev1.ProtocolUDP), ptr.To(corev1.ProtocolSCTP)),
			Port:     pickOf(c, nil, ptr.To[int32](8080), ptr.To[int32](0), ptr.To[int32](5353)),
		})
	}
	for range c.n(6) {
		e := discoveryv1.Endpoint{
			Addresses:  pickOf(c, []string{"10.0.0.1"}, []string{"10.0.0.2"}, []string{"fd00::1"}, nil, []string{"bad"}, []string{"10.0.0.3", "10.0.0.4"}),
			NodeName:   pickOf(c, nil, ptr.To("node-a"), ptr.To("node-b")),
			Conditions: discoveryv1.EndpointConditions{Ready: c.optBool(), Serving: c.optBool(), Terminating: c.optBool()},
		}
		if c.n(2) == 1 {
			e.Hints = &discoveryv1.EndpointHints{}
			for _, z := range pickOf(c, nil, []string{"z1"}, []string{"z2"}, []string{"z1", "z2"}) {
				e.Hints.ForZones = append(e.Hints.ForZones, discoveryv1.ForZone{Name: z})
			}
			for _, n := range pickOf(c, nil, []string{"node-a"}, []string{"node-b"}) {
				e.Hints.ForNodes = append(e.Hints.ForNodes, discoveryv1.ForNode{Name: n})
			}
		}
		s.Endpoints = append(s.Endpoints, e)
	}
	return s
}

// FuzzBuildObjects builds API objects from fuzz bytes, field by field; see
// FuzzBuild for the properties checked.
func FuzzBuildObjects(f *testing.F) {
	f.Add([]byte{3, 1, 2, 0, 1, 2, 1, 1, 1, 0, 0, 0, 1, 2, 3, 1, 0, 4, 1, 1, 2, 0, 5, 3, 1, 1, 2, 1})
	f.Add([]byte("\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c := &choices{data: data}
		var in proxy.Inputs
		for range c.n(4) + 1 {
			in.Services = append(in.Services, c.service())
		}
		for i := range c.n(5) {
			in.EndpointSlices = append(in.EndpointSlices, c.slice(i))
		}
		in.Nodes = []*corev1.Node{node("node-a", pickOf(c, "z1", "z2", ""), pickOf(c, "192.168.0.1", "203.0.113.9", "bad"))}
		cfg := proxy.Config{
			NodeName:      pickOf(c, "node-a", "node-b", ""),
			MasqueradeAll: c.n(2) == 1,
			ClusterCIDRs:  pickOf(c, nil, mustPrefixes("10.0.0.0/8"), mustPrefixes("10.0.0.0/8", "fd00::/8")),
		}
		cfg.NodePortAddresses.Primary = c.n(2) == 1
		st := proxy.Build(in, cfg)
		seed := uint64(len(data))
		r := rand.New(rand.NewPCG(seed, seed))
		r.Shuffle(len(in.Services), func(a, b int) { in.Services[a], in.Services[b] = in.Services[b], in.Services[a] })
		r.Shuffle(len(in.EndpointSlices), func(a, b int) {
			in.EndpointSlices[a], in.EndpointSlices[b] = in.EndpointSlices[b], in.EndpointSlices[a]
		})
		if again := proxy.Build(in, cfg); !reflect.DeepEqual(st, again) {
			t.Fatalf("Build depends on input order:\n%s", firstDiff(again.Dump(), st.Dump()))
		}
		checkInvariants(t, st)
	})
}

func mustPrefixes(s ...string) []netip.Prefix {
	p, err := proxy.ParseCIDRs(s...)
	if err != nil {
		panic(err)
	}
	return p
}
