package proxy_test

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/svcproxy/svcproxy/proxy"
)

var baseConfig = proxy.Config{NodeName: "node-a"}

func TestBuild(t *testing.T) {
	ready2 := slice("web-1", "web", http8080, ep("10.0.1.1", "node-a"), ep("10.0.2.1", "node-b"))
	cases := []struct {
		name     string
		cfg      *proxy.Config // nil: baseConfig
		objs     []any
		want     string   // servicesDump
		problems []string // exact problem strings
	}{
		{
			name: "clusterIP reaches every ready endpoint",
			objs: []any{svc("web", "10.96.0.10"), ready2},
			want: `
				  ns/web/tcp/http 10.96.0.10:80
				    internal forward 10.0.1.1:8080(local) 10.0.2.1:8080
			`,
		},
		{
			name: "ports matched by name and protocol",
			objs: []any{
				svc("dns", "10.96.0.10", ports(port("dns", corev1.ProtocolUDP, 53, 0), port("dns", corev1.ProtocolTCP, 53, 0), port("metrics", corev1.ProtocolTCP, 9153, 0))),
				slice("dns-1", "dns", []discoveryv1.EndpointPort{
					slicePort("dns", corev1.ProtocolUDP, 5353), slicePort("metrics", corev1.ProtocolTCP, 9100), slicePort("unused", corev1.ProtocolTCP, 1),
				}, ep("10.0.1.1", "node-b")),
			},
			want: `
				  ns/dns/tcp/dns 10.96.0.10:53
				    internal reject
				  ns/dns/tcp/metrics 10.96.0.10:9153
				    internal forward 10.0.1.1:9100
				  ns/dns/udp/dns 10.96.0.10:53
				    internal forward 10.0.1.1:5353
			`,
		},
		{
			name: "unnamed port matches unnamed slice port",
			objs: []any{
				svc("web", "10.96.0.10", ports(port("", corev1.ProtocolTCP, 80, 0))),
				slice("web-1", "web", []discoveryv1.EndpointPort{slicePort("", corev1.ProtocolTCP, 8080)}, ep("10.0.1.1", "")),
			},
			want: `
				  ns/web/tcp 10.96.0.10:80
				    internal forward 10.0.1.1:8080
			`,
		},
		{
			name: "slices merged, duplicates removed, sorted",
			objs: []any{
				svc("web", "10.96.0.10"),
				slice("web-b", "web", http8080, ep("10.0.1.3", ""), ep("10.0.1.1", "")),
				slice("web-a", "web", http8080, ep("10.0.1.2", ""), ep("10.0.1.1", ""), ep("10.0.1.2", "")),
				slice("other", "other", http8080, ep("10.0.9.9", "")),
			},
			want: `
				  ns/web/tcp/http 10.96.0.10:80
				    internal forward 10.0.1.1:8080 10.0.1.2:8080 10.0.1.3:8080
			`,
		},
		{
			name: "duplicate address: the non-terminating copy wins",
			objs: []any{
				svc("web", "10.96.0.10"),
				slice("web-a", "web", http8080, ep("10.0.1.1", "node-b", terminating(true))),
				slice("web-b", "web", http8080, ep("10.0.1.1", "node-b")),
			},
			want: `
				  ns/web/tcp/http 10.96.0.10:80
				    internal forward 10.0.1.1:8080
			`,
		},
		{
			name: "duplicate address, both ready: the copy in the first slice by name wins",
			objs: []any{
				svc("web", "10.96.0.10"),
				slice("web-b", "web", http8080, ep("10.0.1.1", "node-b")),
				slice("web-a", "web", http8080, ep("10.0.1.1", "node-a")),
			},
			want: `
				  ns/web/tcp/http 10.96.0.10:80
				    internal forward 10.0.1.1:8080(local)
			`,
		},
		{
			name: "NodePort, externalIPs, load-balancer IPs by ipMode",
			objs: []any{
				svc("web", "10.96.0.10", externalIPs("192.0.2.10", "2001:db8::10", "not-an-ip"), lbIngress(
					lbIP("198.51.100.1"),
					corev1.LoadBalancerIngress{IP: "198.51.100.2", IPMode: ptr.To(corev1.LoadBalancerIPModeVIP)},
					corev1.LoadBalancerIngress{IP: "198.51.100.3", IPMode: ptr.To(corev1.LoadBalancerIPModeProxy)},
					corev1.LoadBalancerIngress{Hostname: "lb.example.com"},
				)),
				ready2,
			},
			want: `
				  ns/web/tcp/http 10.96.0.10:80 nodePort=30080 externalIPs=[192.0.2.10] loadBalancerIPs=[198.51.100.1,198.51.100.2]
				    internal forward 10.0.1.1:8080(local) 10.0.2.1:8080
				    external forward 10.0.1.1:8080(local) 10.0.2.1:8080
			`,
			problems: []string{`Service ns/web: spec.externalIPs[2]: invalid IP "not-an-ip": skipped`},
		},
		{
			name: "dual-stack: one ServicePort per family, endpoints of each family",
			objs: []any{
				svc("web", "10.96.0.10,fd00:96::10", externalIPs("192.0.2.10", "2001:db8::10")),
				ready2,
				slice("web-v6", "web", http8080, ep("fd00:1::1", "node-a")),
			},
			want: `
				  ns/web/tcp/http 10.96.0.10:80 externalIPs=[192.0.2.10]
				    internal forward 10.0.1.1:8080(local) 10.0.2.1:8080
				    external forward 10.0.1.1:8080(local) 10.0.2.1:8080
				  ns/web/tcp/http [fd00:96::10]:80 externalIPs=[2001:db8::10]
				    internal forward [fd00:1::1]:8080(local)
				    external forward [fd00:1::1]:8080(local)
			`,
		},
		{
			name: "single-stack IPv6",
			objs: []any{svc("web", "fd00:96::10"), slice("web-v6", "web", http8080, ep("fd00:1::1", ""))},
			want: `
				  ns/web/tcp/http [fd00:96::10]:80
				    internal forward [fd00:1::1]:8080
			`,
		},
		{
			name: "SCTP",
			objs: []any{
				svc("sig", "10.96.0.10", ports(port("s", corev1.ProtocolSCTP, 3868, 0))),
				slice("sig-1", "sig", []discoveryv1.EndpointPort{slicePort("s", corev1.ProtocolSCTP, 3868)}, ep("10.0.1.1", "")),
			},
			want: `
				  ns/sig/sctp/s 10.96.0.10:3868
				    internal forward 10.0.1.1:3868
			`,
		},
		{
			name: "not-ready endpoints are not used",
			objs: []any{svc("web", "10.96.0.10"), slice("web-1", "web", http8080, ep("10.0.1.1", "", notReady), ep("10.0.1.2", ""))},
			want: `
				  ns/web/tcp/http 10.96.0.10:80
				    internal forward 10.0.1.2:8080
			`,
		},
		{
			name: "no ready endpoint: fall back to serving terminating ones",
			objs: []any{svc("web", "10.96.0.10"), slice("web-1", "web", http8080,
				ep("10.0.1.1", "", terminating(true)), ep("10.0.1.2", "", terminating(false)), ep("10.0.1.3", "", notReady))},
			want: `
				  ns/web/tcp/http 10.96.0.10:80
				    internal forward 10.0.1.1:8080(not-ready,terminating)
			`,
		},
		{
			name: "terminating endpoints unused while one is ready",
			objs: []any{svc("web", "10.96.0.10"), slice("web-1", "web", http8080, ep("10.0.1.1", "", terminating(true)), ep("10.0.1.2", ""))},
			want: `
				  ns/web/tcp/http 10.96.0.10:80
				    internal forward 10.0.1.2:8080
			`,
		},
		{
			name: "no usable endpoint: reject",
			objs: []any{svc("web", "10.96.0.10", nodePort(30080)), slice("web-1", "web", http8080, ep("10.0.1.1", "", terminating(false)))},
			want: `
				  ns/web/tcp/http 10.96.0.10:80 nodePort=30080
				    internal reject
				    external reject
			`,
		},
		{
			name: "internalTrafficPolicy Local uses local endpoints",
			objs: []any{svc("web", "10.96.0.10", itpLocal), ready2},
			want: `
				  ns/web/tcp/http 10.96.0.10:80 internalTrafficPolicy=Local
				    internal forward 10.0.1.1:8080(local)
			`,
		},
		{
			name: "internalTrafficPolicy Local without local endpoints drops",
			objs: []any{svc("web", "10.96.0.10", itpLocal), slice("web-1", "web", http8080, ep("10.0.2.1", "node-b"))},
			want: `
				  ns/web/tcp/http 10.96.0.10:80 internalTrafficPolicy=Local
				    internal drop
			`,
		},
		{
			name: "local fallback to terminating is separate from cluster's",
			objs: []any{svc("web", "10.96.0.10", itpLocal, nodePort(30080)), slice("web-1", "web", http8080,
				ep("10.0.1.1", "node-a", terminating(true)), ep("10.0.2.1", "node-b"))},
			want: `
				  ns/web/tcp/http 10.96.0.10:80 nodePort=30080 internalTrafficPolicy=Local
				    internal forward 10.0.1.1:8080(local,not-ready,terminating)
				    external forward 10.0.2.1:8080
			`,
		},
		{
			name: "externalTrafficPolicy Local: external traffic to local endpoints, health check port",
			objs: []any{svc("web", "10.96.0.10", lbIngress(lbIP("198.51.100.1")), etpLocal, healthCheck(32000)), ready2},
			want: `
				  ns/web/tcp/http 10.96.0.10:80 nodePort=30080 loadBalancerIPs=[198.51.100.1] healthCheckNodePort=32000 externalTrafficPolicy=Local
				    internal forward 10.0.1.1:8080(local) 10.0.2.1:8080
				    external forward 10.0.1.1:8080(local)
			`,
		},
		{
			name: "externalTrafficPolicy Local without local endpoints drops external traffic only",
			objs: []any{svc("web", "10.96.0.10", nodePort(30080), etpLocal), slice("web-1", "web", http8080, ep("10.0.2.1", "node-b"))},
			want: `
				  ns/web/tcp/http 10.96.0.10:80 nodePort=30080 externalTrafficPolicy=Local
				    internal forward 10.0.2.1:8080
				    external drop
			`,
		},
		{
			name: "externalTrafficPolicy Local is ignored on a ClusterIP service without externalIPs",
			objs: []any{svc("web", "10.96.0.10", etpLocal), ready2},
			want: `
				  ns/web/tcp/http 10.96.0.10:80
				    internal forward 10.0.1.1:8080(local) 10.0.2.1:8080
			`,
		},
		{
			name: "LoadBalancer with externalTrafficPolicy Local but no healthCheckNodePort",
			objs: []any{svc("web", "10.96.0.10", lbIngress(lbIP("198.51.100.1")), etpLocal), ready2},
			want: `
				  ns/web/tcp/http 10.96.0.10:80 nodePort=30080 loadBalancerIPs=[198.51.100.1] externalTrafficPolicy=Local
				    internal forward 10.0.1.1:8080(local) 10.0.2.1:8080
				    external forward 10.0.1.1:8080(local)
			`,
			problems: []string{"Service ns/web: spec.healthCheckNodePort: missing for a LoadBalancer with externalTrafficPolicy Local: no health check server"},
		},
		{
			name: "zone hints narrow cluster endpoints",
			objs: []any{svc("web", "10.96.0.10"), node("node-a", "zone-a"), slice("web-1", "web", http8080,
				ep("10.0.1.1", "node-a", zones("zone-a")), ep("10.0.2.1", "node-b", zones("zone-b")), ep("10.0.3.1", "node-c", zones("zone-a")),
				ep("10.0.4.1", "node-d", notReady))},
			want: `
				  ns/web/tcp/http 10.96.0.10:80 topology=Zone
				    internal forward 10.0.1.1:8080(local) 10.0.3.1:8080
			`,
		},
		{
			name: "zone hints ignored when one ready endpoint has none",
			objs: []any{svc("web", "10.96.0.10"), node("node-a", "zone-a"), slice("web-1", "web", http8080,
				ep("10.0.1.1", "node-a", zones("zone-a")), ep("10.0.2.1", "node-b"))},
			want: `
				  ns/web/tcp/http 10.96.0.10:80
				    internal forward 10.0.1.1:8080(local) 10.0.2.1:8080
			`,
		},
		{
			name: "zone hints ignored when none is for this zone",
			objs: []any{svc("web", "10.96.0.10"), node("node-a", "zone-c"), slice("web-1", "web", http8080,
				ep("10.0.1.1", "node-a", zones("zone-a")), ep("10.0.2.1", "node-b", zones("zone-b")))},
			want: `
				  ns/web/tcp/http 10.96.0.10:80
				    internal forward 10.0.1.1:8080(local) 10.0.2.1:8080
			`,
		},
		{
			name: "zone hints ignored when the node has no zone label",
			objs: []any{svc("web", "10.96.0.10"), slice("web-1", "web", http8080,
				ep("10.0.1.1", "node-a", zones("")), ep("10.0.2.1", "node-b", zones("zone-b")))},
			want: `
				  ns/web/tcp/http 10.96.0.10:80
				    internal forward 10.0.1.1:8080(local) 10.0.2.1:8080
			`,
		},
		{
			name: "node hints (PreferSameNode) win over zone hints",
			objs: []any{svc("web", "10.96.0.10"), node("node-a", "zone-a"), slice("web-1", "web", http8080,
				ep("10.0.1.1", "node-a", forNodes("node-a"), zones("zone-a")), ep("10.0.1.2", "node-c", forNodes("node-c"), zones("zone-a")),
				ep("10.0.2.1", "node-b", forNodes("node-b"), zones("zone-b")))},
			want: `
				  ns/web/tcp/http 10.96.0.10:80 topology=Node
				    internal forward 10.0.1.1:8080(local)
			`,
		},
		{
			name: "node hints for other nodes fall back to zone hints",
			objs: []any{svc("web", "10.96.0.10"), node("node-a", "zone-a"), slice("web-1", "web", http8080,
				ep("10.0.1.2", "node-c", forNodes("node-c"), zones("zone-a")), ep("10.0.2.1", "node-b", forNodes("node-b"), zones("zone-b")))},
			want: `
				  ns/web/tcp/http 10.96.0.10:80 topology=Zone
				    internal forward 10.0.1.2:8080
			`,
		},
		{
			name: "topology does not narrow local endpoints",
			objs: []any{svc("web", "10.96.0.10", nodePort(30080), etpLocal), node("node-a", "zone-a"), slice("web-1", "web", http8080,
				ep("10.0.1.1", "node-a", zones("zone-b")), ep("10.0.2.1", "node-b", zones("zone-a")))},
			want: `
				  ns/web/tcp/http 10.96.0.10:80 nodePort=30080 externalTrafficPolicy=Local topology=Zone
				    internal forward 10.0.2.1:8080
				    external forward 10.0.1.1:8080(local)
			`,
		},
		{
			name: "ClientIP affinity: default and explicit timeout",
			objs: []any{
				svc("a", "10.96.0.10", affinity(nil)), svc("b", "10.96.0.11", affinity(ptr.To[int32](60))),
				svc("c", "10.96.0.12", affinity(ptr.To[int32](0))),
			},
			want: `
				  ns/a/tcp/http 10.96.0.10:80 affinity=10800s
				    internal reject
				  ns/b/tcp/http 10.96.0.11:80 affinity=60s
				    internal reject
				  ns/c/tcp/http 10.96.0.12:80 affinity=10800s
				    internal reject
			`,
			problems: []string{"Service ns/c: spec.sessionAffinityConfig.clientIP.timeoutSeconds: 0 is out of range 1-86400: 10800 used"},
		},
		{
			name: "source ranges split by family; /0 allows all",
			objs: []any{
				svc("a", "10.96.0.10,fd00:96::10", lbIngress(lbIP("198.51.100.1"), lbIP("2001:db8::1")), sourceRanges(" 203.0.113.0/24", "192.0.2.7/16")),
				svc("b", "10.96.0.11", nodePort(30081), lbIngress(lbIP("198.51.100.2")), sourceRanges("203.0.113.0/24", "0.0.0.0/0")),
			},
			want: `
				  ns/a/tcp/http 10.96.0.10:80 nodePort=30080 loadBalancerIPs=[198.51.100.1] sourceRanges=[192.0.0.0/16,203.0.113.0/24]
				    internal reject
				    external reject
				  ns/b/tcp/http 10.96.0.11:80 nodePort=30081 loadBalancerIPs=[198.51.100.2]
				    internal reject
				    external reject
				  ns/a/tcp/http [fd00:96::10]:80 nodePort=30080 loadBalancerIPs=[2001:db8::1]
				    internal reject
				    external reject
			`,
		},
		{
			name: "source ranges containing the node IP also allow the LB IPs",
			cfg:  &proxy.Config{NodeName: "node-a", NodeIPs: []netip.Addr{netip.MustParseAddr("203.0.113.5")}},
			objs: []any{svc("a", "10.96.0.10", lbIngress(lbIP("198.51.100.1")), sourceRanges("203.0.113.0/24"))},
			want: `
				  ns/a/tcp/http 10.96.0.10:80 nodePort=30080 loadBalancerIPs=[198.51.100.1] sourceRanges=[198.51.100.1/32,203.0.113.0/24]
				    internal reject
				    external reject
			`,
		},
		{
			name: "no rules: headless, other proxy, headless label",
			objs: []any{
				svc("headless", "None"), ready2,
				svc("other", "10.96.0.11", labels(proxy.LabelServiceProxyName, "foo")),
				svc("hl", "10.96.0.12", labels(proxy.LabelHeadless, "")),
			},
			want: ``,
		},
		{
			name: "ExternalName: listed, no rules even with a clusterIP",
			objs: []any{
				svc("ext", "10.96.0.10", typ(corev1.ServiceTypeExternalName), func(s *corev1.Service) { s.Spec.ExternalName = "db.example.com" }),
				svc("bad", "", typ(corev1.ServiceTypeExternalName), func(s *corev1.Service) { s.Spec.ExternalName = "not a name!" }),
				slice("ext-1", "ext", http8080, ep("10.0.1.1", "")),
			},
			want:     ``,
			problems: []string{`Service ns/bad: spec.externalName: "not a name!" is not a DNS name: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')`},
		},
		{
			name: "bad input is skipped, the rest works",
			objs: []any{
				svc("web", "10.96.0.10", ports(
					port("a", corev1.ProtocolTCP, 70000, 0), port("b", "ICMP", 80, 0), port("c", corev1.ProtocolTCP, 81, 99999),
					port("http", corev1.ProtocolTCP, 80, 0), port("http", corev1.ProtocolTCP, 82, 0),
				)),
				svc("noip", ""), svc("badip", "10.96.0.300"), svc("weird", "10.96.0.13", typ("Fancy")),
				slice("web-1", "web", []discoveryv1.EndpointPort{slicePort("http", corev1.ProtocolTCP, 8080), {Name: ptr.To("x")}, {Port: ptr.To[int32](1)}},
					ep("10.0.1.1", ""), ep("bogus", ""), ep("fd00::1", ""), discoveryv1.Endpoint{}),
				&discoveryv1.EndpointSlice{ObjectMeta: slice("nolabel", "", nil).ObjectMeta, AddressType: discoveryv1.AddressTypeIPv4},
			},
			want: `
				  ns/web/tcp/http 10.96.0.10:80
				    internal forward 10.0.1.1:8080
			`,
			problems: []string{
				`EndpointSlice ns/nolabel: metadata.labels["kubernetes.io/service-name"]: missing: the slice belongs to no Service and is skipped`,
				`EndpointSlice ns/web-1: endpoints[1].addresses[0]: invalid IP "bogus": endpoint skipped`,
				`EndpointSlice ns/web-1: endpoints[2].addresses[0]: fd00::1 is not an ipv4 address (addressType IPv4): endpoint skipped`,
				`EndpointSlice ns/web-1: endpoints[3].addresses: empty: endpoint skipped`,
				`EndpointSlice ns/web-1: ports[1].port: missing: port skipped`,
				`EndpointSlice ns/web-1: ports[2].name: missing: port skipped`,
				`Service ns/badip: spec.clusterIPs[0]: invalid IP "10.96.0.300": skipped`,
				`Service ns/noip: spec.clusterIP: missing: Service skipped`,
				`Service ns/web: spec.ports[0].port: 70000 is out of range 1-65535: port skipped`,
				`Service ns/web: spec.ports[1].protocol: unknown protocol "ICMP": port skipped`,
				`Service ns/web: spec.ports[2].nodePort: 99999 is out of range 1-65535: port skipped`,
				`Service ns/web: spec.ports[4].name: port name "http" is used twice for TCP: port skipped`,
				`Service ns/weird: spec.type: unknown type "Fancy": Service skipped`,
			},
		},
		{
			name: "conflicting destinations: first service port in key order wins",
			objs: []any{
				svc("b", "10.96.0.10", nodePort(30080), externalIPs("192.0.2.1")),
				svc("a", "10.96.0.11", nodePort(30080), externalIPs("192.0.2.1", "192.0.2.2")),
				svc("c", "10.96.0.10"),
				svc("d", "10.96.0.12", lbIngress(lbIP("192.0.2.2")), sourceRanges("10.0.0.0/8")),
			},
			want: `
				  ns/a/tcp/http 10.96.0.11:80 nodePort=30080 externalIPs=[192.0.2.1,192.0.2.2]
				    internal reject
				    external reject
				  ns/b/tcp/http 10.96.0.10:80
				    internal reject
				  ns/d/tcp/http 10.96.0.12:80
				    internal reject
			`,
			problems: []string{
				"Service ns/b: spec.ports: NodePort 30080/tcp is already used by ns/a/tcp/http: not programmed for port ns/b/tcp/http",
				"Service ns/b: spec.ports: externalIP 192.0.2.1:80 is already used by ns/a/tcp/http: not programmed for port ns/b/tcp/http",
				"Service ns/c: spec.ports: ClusterIP 10.96.0.10:80 is already used by ns/b/tcp/http: not programmed for port ns/c/tcp/http",
				"Service ns/d: spec.ports: NodePort 30080/tcp is already used by ns/a/tcp/http: not programmed for port ns/d/tcp/http",
				"Service ns/d: spec.ports: load-balancer IP 192.0.2.2:80 is already used by ns/a/tcp/http: not programmed for port ns/d/tcp/http",
			},
		},
		{
			name: "conflicting destinations: the older Service keeps them",
			objs: []any{
				svc("a-new", "10.96.0.11", externalIPs("192.0.2.1"), func(s *corev1.Service) {
					s.CreationTimestamp = metav1.NewTime(time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC))
				}),
				svc("z-old", "10.96.0.10", externalIPs("192.0.2.1"), func(s *corev1.Service) {
					s.CreationTimestamp = metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
				}),
			},
			want: `
				  ns/a-new/tcp/http 10.96.0.11:80
				    internal reject
				  ns/z-old/tcp/http 10.96.0.10:80 externalIPs=[192.0.2.1]
				    internal reject
				    external reject
			`,
			problems: []string{"Service ns/a-new: spec.ports: externalIP 192.0.2.1:80 is already used by ns/z-old/tcp/http: not programmed for port ns/a-new/tcp/http"},
		},
		{
			name: "nil objects are ignored",
			objs: []any{(*corev1.Service)(nil), (*discoveryv1.EndpointSlice)(nil), (*corev1.Node)(nil), svc("web", "10.96.0.10")},
			want: `
				  ns/web/tcp/http 10.96.0.10:80
				    internal reject
			`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig
			if tc.cfg != nil {
				cfg = *tc.cfg
			}
			st := proxy.Build(objects(tc.objs...), cfg)
			if got, want := servicesDump(st), dedent(tc.want); strings.TrimSpace(got) != strings.TrimSpace(want) {
				t.Errorf("services:\n--- got\n%s\n--- want\n%s", got, want)
			}
			got := problemStrings(st)
			if strings.Join(got, "\n") != strings.Join(tc.problems, "\n") {
				t.Errorf("problems:\n--- got\n%s\n--- want\n%s", strings.Join(got, "\n"), strings.Join(tc.problems, "\n"))
			}
		})
	}
}
