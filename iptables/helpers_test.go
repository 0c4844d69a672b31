package iptables

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/svcproxy/svcproxy/manifest"
	"github.com/svcproxy/svcproxy/proxy"
	"github.com/svcproxy/svcproxy/textdiff"
)

// Manifest helpers: flow-style YAML, one Service per line.

func svcYAML(name, spec string) string {
	return fmt.Sprintf("apiVersion: v1\nkind: Service\nmetadata: {name: %q, namespace: t}\n%s\n---\n", name, spec)
}

// pods are the endpoints slices may list; b3 is on another node.
var pods = map[string]struct{ ip, ip6, node string }{
	"b1": {"10.244.1.11", "fd00:244::11", "node-a"},
	"b2": {"10.244.1.12", "fd00:244::12", "node-a"},
	"b3": {"10.244.2.13", "fd00:244::13", "node-b"},
}

// sliceYAML is an EndpointSlice of service svc with one port.
func sliceYAML(svc, family, portName, proto string, podNames ...string) string {
	var eps []string
	for _, p := range podNames {
		ip := pods[p].ip
		if family == "IPv6" {
			ip = pods[p].ip6
		}
		eps = append(eps, fmt.Sprintf("- {addresses: [%q], nodeName: %s, conditions: {ready: true}}", ip, pods[p].node))
	}
	epText := "endpoints: []"
	if len(eps) > 0 {
		epText = "endpoints:\n" + strings.Join(eps, "\n")
	}
	return fmt.Sprintf(`apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: %q, namespace: t, labels: {kubernetes.io/service-name: %q}}
addressType: %s
ports: [{name: %q, port: 8080, protocol: %s}]
%s
---
`, svc+"-"+strings.ToLower(family), svc, family, portName, proto, epText)
}

func testConfig() proxy.Config {
	cidrs, _ := proxy.ParseCIDRs("10.244.0.0/16,fd00:244::/56")
	return proxy.Config{NodeName: "node-a", ClusterCIDRs: cidrs,
		NodeIPs: []netip.Addr{netip.MustParseAddr("192.168.50.2"), netip.MustParseAddr("fd00:50::2")}}
}

// build decodes manifests and builds their State; cfg may adjust the
// configuration.
func build(t testing.TB, manifests string, cfg func(*proxy.Config)) *proxy.State {
	t.Helper()
	objs, probs := manifest.Decode("test.yaml", []byte(manifests))
	if len(probs) > 0 {
		t.Fatalf("manifests: %v", probs)
	}
	c := testConfig()
	if cfg != nil {
		cfg(&c)
	}
	s := proxy.Build(proxy.Inputs{Services: objs.Services, EndpointSlices: objs.EndpointSlices, Nodes: objs.Nodes}, c)
	if len(s.Problems) > 0 {
		t.Fatalf("model problems: %v", s.Problems)
	}
	return s
}

func demoState(t testing.TB) *proxy.State {
	t.Helper()
	objs, probs, err := manifest.Load("../examples/demo")
	if err != nil || len(probs) > 0 {
		t.Fatalf("load: %v %v", err, probs)
	}
	return proxy.Build(proxy.Inputs{Services: objs.Services, EndpointSlices: objs.EndpointSlices, Nodes: objs.Nodes},
		proxy.Config{NodeName: "node-a", ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}})
}

// hostileNames are Service (and port) names no API server would accept,
// as a manifest may still carry them.
var hostileNames = []string{
	`evil" -j ACCEPT`,
	"nl\n-A INPUT -j ACCEPT\nCOMMIT",
	`back\slash'single"double`,
	"sp ace\ttab\r",
	"#comment",
	"名前-ünï",
	strings.Repeat("long", 80),
}

// renderCase is a representative state, with lines its Render must hold.
type renderCase struct {
	name      string
	manifests string
	config    func(*proxy.Config)
	want      []string // lines of Render; "*" matches the rest of a chain name
	notWant   []string // substrings Render must not hold
}

var renderCases = []renderCase{
	{
		name: "cluster-ip",
		manifests: svcYAML("web", `spec: {clusterIP: 10.96.0.10, ports: [{name: http, port: 80}]}`) +
			sliceYAML("web", "IPv4", "http", "TCP", "b1", "b2", "b3"),
		want: []string{
			`-A SVCP-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment "t/web/tcp/http" -m tcp --dport 80 -g SVCP-SVC-*`,
			`-A SVCP-SVC-* ! -s 10.244.0.0/16 -d 10.96.0.10/32 -p tcp -m comment --comment "t/web/tcp/http" -m tcp --dport 80 -j SVCP-MARK-MASQ`,
			`-A SVCP-SVC-* -s 10.244.1.11/32 -m statistic --mode random --probability 0.33333333349 -j SVCP-HPN-*`,
			`-A SVCP-SVC-* ! -s 10.244.1.11/32 -p tcp -m statistic --mode random --probability 0.33333333349 -j DNAT --to-destination 10.244.1.11:8080`,
			`-A SVCP-SVC-* -s 10.244.1.12/32 -m statistic --mode random --probability 0.50000000000 -j SVCP-HPN-*`,
			`-A SVCP-SVC-* ! -s 10.244.1.12/32 -p tcp -m statistic --mode random --probability 0.50000000000 -j DNAT --to-destination 10.244.1.12:8080`,
			`-A SVCP-SVC-* -s 10.244.2.13/32 -j SVCP-MARK-MASQ`,
			`-A SVCP-SVC-* -p tcp -j DNAT --to-destination 10.244.2.13:8080`,
			`-A SVCP-HPN-* -j SVCP-MARK-MASQ`,
			`-A SVCP-HPN-* -s 10.244.1.11/32 -p tcp -j DNAT --to-destination 10.244.1.11:8080`,
			`-A SVCP-HPN-* -s 10.244.1.12/32 -p tcp -j DNAT --to-destination 10.244.1.12:8080`,
			`-A SVCP-POSTROUTING -j MASQUERADE --random-fully`,
			`-A PREROUTING -m comment --comment svcproxy -j SVCP-SERVICES`,
			`-A INPUT -m conntrack --ctstate NEW -m comment --comment svcproxy -j SVCP-INPUT`,
		},
		// 10.244.2.13 is drawn last, by no draw: no hairpin DNAT for it.
		notWant: []string{"REJECT", "DROP", "recent", "SVCP-EXT-", "SVCP-SEP-", "-s 10.244.2.13/32 -p tcp"},
	},
	{
		name: "no-endpoints",
		manifests: svcYAML("empty", `spec: {type: NodePort, ipFamilyPolicy: RequireDualStack, clusterIPs: [10.96.0.14, "fd00:96::14"], ports: [{name: http, port: 80, nodePort: 30084}, {name: dns, port: 53, protocol: UDP, nodePort: 30085}]}`) +
			sliceYAML("empty", "IPv4", "http", "TCP"),
		want: []string{
			`-A SVCP-SERVICES -d fd00:96::14/128 -p tcp -m comment --comment "t/empty/tcp/http" -m tcp --dport 80 -j REJECT --reject-with icmp6-port-unreachable`,
			`-A SVCP-NODEPORTS -p udp -m comment --comment "t/empty/udp/dns" -m udp --dport 30085 -j REJECT --reject-with icmp6-port-unreachable`,
			`-A SVCP-SERVICES -d 10.96.0.14/32 -p tcp -m comment --comment "t/empty/tcp/http" -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable`,
			`-A SVCP-SERVICES -d 10.96.0.14/32 -p udp -m comment --comment "t/empty/udp/dns" -m udp --dport 53 -j REJECT --reject-with icmp-port-unreachable`,
			`-A SVCP-NODEPORTS -p tcp -m comment --comment "t/empty/tcp/http" -m tcp --dport 30084 -j REJECT --reject-with icmp-port-unreachable`,
			`-A SVCP-INPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j SVCP-NODEPORTS`,
		},
		notWant: []string{"-g SVCP-", "SVCP-SEP-"},
	},
	{
		name: "external-local-without-local-endpoints",
		manifests: svcYAML("remote", `spec: {type: NodePort, clusterIP: 10.96.0.19, externalTrafficPolicy: Local, externalIPs: [192.0.2.19], ports: [{name: http, port: 80, nodePort: 30082}]}`) +
			sliceYAML("remote", "IPv4", "http", "TCP", "b3"),
		want: []string{
			`-A SVCP-NODEPORTS -p tcp -m comment --comment "t/remote/tcp/http" -m tcp --dport 30082 -j DROP`,
			`-A SVCP-SERVICES -d 192.0.2.19/32 -p tcp -m comment --comment "t/remote/tcp/http" -m tcp --dport 80 -j DROP`,
			`-A SVCP-SERVICES -d 192.0.2.19/32 -p tcp -m comment --comment "t/remote/tcp/http" -m tcp --dport 80 -g SVCP-EXT-*`,
			`-A SVCP-NODEPORTS -p tcp -m comment --comment "t/remote/tcp/http" -m tcp --dport 30082 -g SVCP-EXT-*`,
			`-A SVCP-EXT-* -s 10.244.0.0/16 -m comment --comment "t/remote/tcp/http" -j SVCP-SVC-*`,
			`-A SVCP-EXT-* -m comment --comment "t/remote/tcp/http" -m addrtype --src-type LOCAL -j SVCP-MARK-MASQ`,
			`-A SVCP-EXT-* -m comment --comment "t/remote/tcp/http" -m addrtype --src-type LOCAL -j SVCP-SVC-*`,
		},
		notWant: []string{"SVCP-SVL-", "REJECT"},
	},
	{
		name: "load-balancer-source-ranges",
		manifests: svcYAML("fw", `spec: {type: LoadBalancer, ipFamilyPolicy: RequireDualStack, clusterIPs: [10.96.0.15, "fd00:96::15"], loadBalancerSourceRanges: [192.168.50.0/24, "2001:db8:1::/48"], ports: [{name: http, port: 80, nodePort: 30086}]}
status: {loadBalancer: {ingress: [{ip: 198.51.100.15}, {ip: "2001:db8::15"}]}}`) +
			sliceYAML("fw", "IPv4", "http", "TCP", "b1") + sliceYAML("fw", "IPv6", "http", "TCP", "b1"),
		want: []string{
			`-A SVCP-FIREWALL -p tcp -m comment --comment "t/fw/tcp/http" -m conntrack --ctorigdst 2001:db8::15 --ctorigdstport 80 -g SVCP-FW-*`,
			`-A SVCP-FW-* -s 2001:db8:1::/48 -m comment --comment "t/fw/tcp/http" -j RETURN`,
			`-A SVCP-FIREWALL -p tcp -m comment --comment "t/fw/tcp/http" -m conntrack --ctorigdst 198.51.100.15 --ctorigdstport 80 -g SVCP-FW-*`,
			`-A SVCP-FW-* -s 192.168.50.0/24 -m comment --comment "t/fw/tcp/http" -j RETURN`,
			`-A SVCP-FW-* -s 198.51.100.15/32 -m comment --comment "t/fw/tcp/http" -j RETURN`,
			`-A SVCP-FW-* -m comment --comment "t/fw/tcp/http" -j DROP`,
			`-A SVCP-SERVICES -d 198.51.100.15/32 -p tcp -m comment --comment "t/fw/tcp/http" -m tcp --dport 80 -g SVCP-EXT-*`,
			`-A SVCP-EXT-* -m comment --comment "t/fw/tcp/http" -j SVCP-MARK-MASQ`,
			`-A SVCP-FORWARD -j SVCP-FIREWALL`,
		},
	},
	{
		name: "affinity",
		manifests: svcYAML("sticky", `spec: {ipFamilyPolicy: RequireDualStack, clusterIPs: [10.96.0.13, "fd00:96::13"], sessionAffinity: ClientIP, sessionAffinityConfig: {clientIP: {timeoutSeconds: 600}}, ports: [{name: http, port: 80}]}`) +
			sliceYAML("sticky", "IPv4", "http", "TCP", "b1", "b2") + sliceYAML("sticky", "IPv6", "http", "TCP", "b1", "b2", "b3"),
		want: []string{
			`-A SVCP-SEP-* -m recent --set --name SVCP-SEP-* --mask ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff --rsource`,
			`-A SVCP-SVC-* -m statistic --mode random --probability 0.33333333349 -j SVCP-SEP-*`,
			`-A SVCP-SVC-* -m recent --rcheck --seconds 600 --reap --name SVCP-SEP-* --mask 255.255.255.255 --rsource -j SVCP-SEP-*`,
			`-A SVCP-SEP-* -m recent --set --name SVCP-SEP-* --mask 255.255.255.255 --rsource`,
			`-A SVCP-SVC-* -m statistic --mode random --probability 0.50000000000 -j SVCP-SEP-*`,
		},
	},
	{
		name: "dual-stack-sctp-external-ips",
		manifests: svcYAML("ds", `spec: {ipFamilyPolicy: RequireDualStack, clusterIPs: [10.96.0.17, "fd00:96::17"], externalIPs: [192.0.2.17, "2001:db8::17"], ports: [{name: s, port: 80, protocol: SCTP}]}`) +
			sliceYAML("ds", "IPv4", "s", "SCTP", "b1", "b2") + sliceYAML("ds", "IPv6", "s", "SCTP", "b2", "b3"),
		want: []string{
			`-A SVCP-SERVICES -d 10.96.0.17/32 -p sctp -m comment --comment "t/ds/sctp/s" -m sctp --dport 80 -g SVCP-SVC-*`,
			`-A SVCP-SERVICES -d fd00:96::17/128 -p sctp -m comment --comment "t/ds/sctp/s" -m sctp --dport 80 -g SVCP-SVC-*`,
			`-A SVCP-SERVICES -d 2001:db8::17/128 -p sctp -m comment --comment "t/ds/sctp/s" -m sctp --dport 80 -g SVCP-EXT-*`,
			`-A SVCP-SVC-* ! -s fd00:244::/56 -d fd00:96::17/128 -p sctp -m comment --comment "t/ds/sctp/s" -m sctp --dport 80 -j SVCP-MARK-MASQ`,
			`-A SVCP-SVC-* -s fd00:244::12/128 -m statistic --mode random --probability 0.50000000000 -j SVCP-HPN-*`,
			`-A SVCP-SVC-* ! -s fd00:244::12/128 -p sctp -m statistic --mode random --probability 0.50000000000 -j DNAT --to-destination [fd00:244::12]:8080`,
			`-A SVCP-SVC-* -s fd00:244::13/128 -j SVCP-MARK-MASQ`,
			`-A SVCP-SVC-* -p sctp -j DNAT --to-destination [fd00:244::13]:8080`,
			`-A SVCP-HPN-* -s fd00:244::12/128 -p sctp -j DNAT --to-destination [fd00:244::12]:8080`,
			`-A SVCP-SERVICES ! -d ::1/128 -m addrtype --dst-type LOCAL -j SVCP-NODEPORTS`,
		},
	},
	{
		// Two endpoints on one address (two slices, two target ports): the
		// sender's address cannot tell them apart, so the port keeps
		// kube-proxy's per-endpoint chains.
		name: "shared-endpoint-address",
		manifests: svcYAML("two", `spec: {clusterIP: 10.96.0.21, ports: [{name: http, port: 80}]}`) +
			strings.Replace(sliceYAML("two", "IPv4", "http", "TCP", "b1"), "two-ipv4", "two-a", 1) +
			strings.Replace(strings.Replace(sliceYAML("two", "IPv4", "http", "TCP", "b1", "b2"), "two-ipv4", "two-b", 1), "port: 8080", "port: 8081", 1),
		want: []string{
			`-A SVCP-SVC-* -m statistic --mode random --probability 0.33333333349 -j SVCP-SEP-*`,
			`-A SVCP-SVC-* -m statistic --mode random --probability 0.50000000000 -j SVCP-SEP-*`,
			`-A SVCP-SVC-* -j SVCP-SEP-*`,
			`-A SVCP-SEP-* -s 10.244.1.11/32 -j SVCP-MARK-MASQ`,
			`-A SVCP-SEP-* -p tcp -j DNAT --to-destination 10.244.1.11:8080`,
			`-A SVCP-SEP-* -p tcp -j DNAT --to-destination 10.244.1.11:8081`,
			`-A SVCP-SEP-* -p tcp -j DNAT --to-destination 10.244.1.12:8081`,
		},
		notWant: []string{"SVCP-HPN-"},
	},
	{
		name: "internal-traffic-policy-local",
		manifests: svcYAML("itl", `spec: {clusterIP: 10.96.0.20, internalTrafficPolicy: Local, ports: [{name: http, port: 80}]}`) +
			sliceYAML("itl", "IPv4", "http", "TCP", "b1", "b3"),
		want: []string{
			`-A SVCP-SERVICES -d 10.96.0.20/32 -p tcp -m comment --comment "t/itl/tcp/http" -m tcp --dport 80 -g SVCP-SVL-*`,
			`-A SVCP-SVL-* ! -s 10.244.0.0/16 -d 10.96.0.20/32 -p tcp -m comment --comment "t/itl/tcp/http" -m tcp --dport 80 -j SVCP-MARK-MASQ`,
			`-A SVCP-SVL-* -s 10.244.1.11/32 -j SVCP-MARK-MASQ`,
			`-A SVCP-SVL-* -p tcp -j DNAT --to-destination 10.244.1.11:8080`,
		},
		notWant: []string{"SVCP-SVC-", "10.244.2.13", "SVCP-SEP-", "SVCP-HPN-"},
	},
	{
		name: "masquerade-all-nodeport-addresses",
		manifests: svcYAML("np", `spec: {type: NodePort, clusterIP: 10.96.0.10, ports: [{name: http, port: 80, nodePort: 30080}]}`) +
			sliceYAML("np", "IPv4", "http", "TCP", "b1"),
		config: func(c *proxy.Config) {
			c.MasqueradeAll = true
			c.NodePortAddresses = proxy.NodePortAddresses{CIDRs: []netip.Prefix{netip.MustParsePrefix("192.168.50.0/24")}}
		},
		want: []string{
			`-A SVCP-SVC-* -d 10.96.0.10/32 -p tcp -m comment --comment "t/np/tcp/http" -m tcp --dport 80 -j SVCP-MARK-MASQ`,
			`-A SVCP-SERVICES -d 192.168.50.2/32 -j SVCP-NODEPORTS`,
			`-A SVCP-INPUT -d 192.168.50.2/32 -j SVCP-NODEPORTS`,
			`-A SVCP-SVC-* -s 10.244.1.11/32 -j SVCP-MARK-MASQ`,
			`-A SVCP-SVC-* -p tcp -j DNAT --to-destination 10.244.1.11:8080`,
		},
		notWant: []string{"! -s 10.244.0.0/16", "! -d 127.0.0.0/8"},
	},
	{
		name: "ipv4-compatible-ipv6-address",
		manifests: svcYAML("compat", `spec: {ipFamilies: [IPv6], clusterIP: "::102:304", ports: [{name: http, port: 80}]}`) +
			sliceYAML("compat", "IPv6", "http", "TCP", "b1"),
		want: []string{
			`-A SVCP-SERVICES -d ::1.2.3.4/128 -p tcp -m comment --comment "t/compat/tcp/http" -m tcp --dport 80 -g SVCP-SVC-*`,
		},
	},
	{
		name:      "hostile-names",
		manifests: hostileManifests(),
		want: []string{
			`-A SVCP-SERVICES -d 10.96.1.1/32 -p tcp -m comment --comment "t/evil__-j_ACCEPT/tcp/p__--x" -m tcp --dport 80 -g SVCP-SVC-*`,
			`-A SVCP-SERVICES -d 10.96.1.2/32 -p tcp -m comment --comment "t/nl_-A_INPUT_-j_ACCEPT_COMMIT/tcp/p__--x" -m tcp --dport 80 -g SVCP-SVC-*`,
		},
		notWant: []string{"-j ACCEPT", "\n-A INPUT -j", "\nCOMMIT\n-A"},
	},
}

// hostileManifests holds one Service per hostile name, each with an
// endpoint, a hostile port name and consecutive ClusterIPs 10.96.1.x.
func hostileManifests() string {
	var b strings.Builder
	for i, n := range hostileNames {
		fmt.Fprintf(&b, "apiVersion: v1\nkind: Service\nmetadata: {name: %q, namespace: t}\nspec: {clusterIP: 10.96.1.%d, ports: [{name: %q, port: 80}]}\n---\n", n, i+1, `p" --x`)
		b.WriteString(sliceYAML(n, "IPv4", `p" --x`, "TCP", "b1"))
	}
	return b.String()
}

// lineMatches reports whether line equals pattern, where each "*" in
// pattern stands for the rest of a chain name (characters up to a space).
func lineMatches(pattern, line string) bool {
	parts := strings.Split(pattern, "*")
	if !strings.HasPrefix(line, parts[0]) {
		return false
	}
	line = line[len(parts[0]):]
	for _, p := range parts[1:] {
		i := strings.IndexByte(line, ' ')
		if i < 0 {
			i = len(line)
		}
		line = line[i:]
		if !strings.HasPrefix(line, p) {
			return false
		}
		line = line[len(p):]
	}
	return line == ""
}

// lineDiff is a unified diff from what Render says to what the kernel holds.
func lineDiff(want, got string) string {
	return textdiff.Unified("want (Render)", "got (kernel)", want, got)
}
