package dptest

import (
	"fmt"
	"strings"

	"github.com/svcproxy/svcproxy/proxy"
)

// Manifest helpers: flow-style YAML, so that each Service reads as a line.

func svc(name, spec string) string {
	return fmt.Sprintf("apiVersion: v1\nkind: Service\nmetadata: {name: %s, namespace: t}\n%s\n---\n", name, spec)
}

// pod addresses and nodes, as the slices describe them.
var pods = map[string]struct{ ip, ip6, node string }{
	"b1": {"10.244.1.11", "fd00:244::11", "node-a"},
	"b2": {"10.244.1.12", "fd00:244::12", "node-a"},
	"b3": {"10.244.2.13", "fd00:244::13", "node-b"},
}

// slice is an EndpointSlice of service svc with one port, listing pods
// (a pod written "b1~" is terminating but serving).
func slice(svcName, family, portName, proto string, port int, podNames ...string) string {
	var eps []string
	for _, p := range podNames {
		cond := "{ready: true}"
		if strings.HasSuffix(p, "~") {
			p = strings.TrimSuffix(p, "~")
			cond = "{ready: false, serving: true, terminating: true}"
		}
		ip := pods[p].ip
		if family == "IPv6" {
			ip = pods[p].ip6
		}
		eps = append(eps, fmt.Sprintf("- {addresses: [%q], nodeName: %s, conditions: %s}", ip, pods[p].node, cond))
	}
	epText := "endpoints: []"
	if len(eps) > 0 {
		epText = "endpoints:\n" + strings.Join(eps, "\n")
	}
	return fmt.Sprintf(`apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: %s-%s, namespace: t, labels: {kubernetes.io/service-name: %s}}
addressType: %s
ports: [{name: %q, port: %d, protocol: %s}]
%s
---
`, svcName, strings.ToLower(family), svcName, family, portName, port, proto, epText)
}

func lb(ip string) string { return fmt.Sprintf("status: {loadBalancer: {ingress: [{ip: %s}]}}", ip) }

// The Services every scenario starts from.
var baseServices = svc("web", `spec: {type: LoadBalancer, clusterIP: 10.96.0.10, externalIPs: [192.0.2.10], ports: [{name: http, port: 80, nodePort: 30080}]}
`+lb("198.51.100.10")) +
	slice("web", "IPv4", "http", "TCP", HTTPPort, "b1", "b2", "b3") +
	svc("dns", `spec: {clusterIP: 10.96.0.11, ports: [{name: dns, port: 53, protocol: UDP}]}`) +
	slice("dns", "IPv4", "dns", "UDP", UDPPort, "b1", "b2", "b3") +
	svc("local", `spec: {type: LoadBalancer, clusterIP: 10.96.0.12, externalTrafficPolicy: Local, healthCheckNodePort: 32001, ports: [{name: http, port: 80, nodePort: 30081}]}
`+lb("198.51.100.12")) +
	slice("local", "IPv4", "http", "TCP", HTTPPort, "b1", "b3") +
	svc("sticky", `spec: {clusterIP: 10.96.0.13, sessionAffinity: ClientIP, ports: [{name: http, port: 80}]}`) +
	slice("sticky", "IPv4", "http", "TCP", HTTPPort, "b1", "b2", "b3") +
	svc("empty", `spec: {type: NodePort, clusterIP: 10.96.0.14, ports: [{name: http, port: 80, nodePort: 30084}, {name: dns, port: 53, protocol: UDP, nodePort: 30085}]}`) +
	svc("ranges", `spec: {type: LoadBalancer, clusterIP: 10.96.0.15, loadBalancerSourceRanges: [192.168.50.0/24], ports: [{name: http, port: 80, nodePort: 30086}]}
`+lb("198.51.100.15")) +
	slice("ranges", "IPv4", "http", "TCP", HTTPPort, "b1") +
	svc("ranges-deny", `spec: {type: LoadBalancer, clusterIP: 10.96.0.16, loadBalancerSourceRanges: [203.0.113.0/24], ports: [{name: http, port: 80, nodePort: 30087}]}
`+lb("198.51.100.16")) +
	slice("ranges-deny", "IPv4", "http", "TCP", HTTPPort, "b1") +
	svc("dual", `spec: {clusterIPs: [10.96.0.17, "fd00:96::17"], ipFamilies: [IPv4, IPv6], ports: [{name: http, port: 80}]}`) +
	slice("dual", "IPv4", "http", "TCP", HTTPPort, "b1", "b2") +
	slice("dual", "IPv6", "http", "TCP", HTTPPort, "b2", "b3") +
	svc("sctp", `spec: {clusterIP: 10.96.0.18, ports: [{name: sig, port: 3868, protocol: SCTP}]}`) +
	slice("sctp", "IPv4", "sig", "SCTP", SCTPPort, "b2") +
	svc("itp-local", `spec: {clusterIP: 10.96.0.19, internalTrafficPolicy: Local, ports: [{name: http, port: 80}]}`) +
	slice("itp-local", "IPv4", "http", "TCP", HTTPPort, "b3") +
	svc("hairpin", `spec: {clusterIP: 10.96.0.20, ports: [{name: http, port: 80}]}`) +
	slice("hairpin", "IPv4", "http", "TCP", HTTPPort, "b1") +
	svc("etp-remote", `spec: {type: NodePort, clusterIP: 10.96.0.21, externalTrafficPolicy: Local, ports: [{name: http, port: 80, nodePort: 30082}]}`) +
	slice("etp-remote", "IPv4", "http", "TCP", HTTPPort, "b3") +
	svc("terminating", `spec: {clusterIP: 10.96.0.22, ports: [{name: http, port: 80}]}`) +
	slice("terminating", "IPv4", "http", "TCP", HTTPPort, "b1~", "b2~")

// Scenarios is the table every backend must pass.
var Scenarios = []Scenario{
	{
		Name:      "all-service-types",
		Manifests: baseServices,
		Checks: []Check{
			// ClusterIP
			{From: "client", Proto: "tcp", To: "10.96.0.10:80", Pods: []string{"b1", "b2", "b3"}, Source: "masq"},
			{From: "node", Proto: "tcp", To: "10.96.0.10:80", Pods: []string{"b1", "b2", "b3"}, Source: "masq"},
			{From: "b2", Proto: "tcp", To: "10.96.0.20:80", Pods: []string{"b1"}, Source: "self"},
			{From: "client", Proto: "udp", To: "10.96.0.11:53", Pods: []string{"b1", "b2", "b3"}},
			{From: "b3", Proto: "udp", To: "10.96.0.11:53", Pods: []string{"b1", "b2", "b3"}},
			// NodePort, from outside and from the node itself
			{From: "client", Proto: "tcp", To: "192.168.50.2:30080", Pods: []string{"b1", "b2", "b3"}, Source: "masq"},
			{From: "node", Proto: "tcp", To: "192.168.50.2:30080", Pods: []string{"b1", "b2", "b3"}, Source: "masq"},
			// externalIP and load-balancer IP
			{From: "client", Proto: "tcp", To: "192.0.2.10:80", Pods: []string{"b1", "b2", "b3"}, Source: "masq"},
			{From: "client", Proto: "tcp", To: "198.51.100.10:80", Pods: []string{"b1", "b2", "b3"}, Source: "masq"},
			// externalTrafficPolicy Local: local pods only, client address kept...
			{From: "client", Proto: "tcp", To: "198.51.100.12:80", Pods: []string{"b1"}, Source: "client"},
			{From: "client", Proto: "tcp", To: "192.168.50.2:30081", Pods: []string{"b1"}, Source: "client"},
			// ...but the node and pods are short-circuited to every endpoint.
			{From: "node", Proto: "tcp", To: "192.168.50.2:30081", Pods: []string{"b1", "b3"}, Source: "masq"},
			{From: "b2", Proto: "tcp", To: "198.51.100.12:80", Pods: []string{"b1", "b3"}, Source: "self"},
			// externalTrafficPolicy Local with no local endpoint.
			{From: "client", Proto: "tcp", To: "192.168.50.2:30082", Dropped: true},
			{From: "node", Proto: "tcp", To: "192.168.50.2:30082", Pods: []string{"b3"}, Source: "masq"},
			// ClientIP affinity
			{From: "client", Proto: "tcp", To: "10.96.0.13:80", Pods: []string{"b1", "b2", "b3"}, Sticky: true},
			// No endpoints: refused at once, TCP and UDP, ClusterIP and NodePort.
			{From: "client", Proto: "tcp", To: "10.96.0.14:80", Refused: true},
			{From: "node", Proto: "tcp", To: "10.96.0.14:80", Refused: true},
			{From: "client", Proto: "tcp", To: "192.168.50.2:30084", Refused: true},
			{From: "client", Proto: "udp", To: "10.96.0.14:53", Refused: true},
			{From: "client", Proto: "udp", To: "192.168.50.2:30085", Refused: true},
			// Load-balancer source ranges.
			{From: "client", Proto: "tcp", To: "198.51.100.15:80", Pods: []string{"b1"}},
			{From: "client", Proto: "tcp", To: "198.51.100.16:80", Dropped: true},
			// Dual-stack and IPv6.
			{From: "client", Proto: "tcp", To: "10.96.0.17:80", Pods: []string{"b1", "b2"}, Source: "masq"},
			{From: "client", Proto: "tcp", To: "[fd00:96::17]:80", Pods: []string{"b2", "b3"}, Source: "masq"},
			{From: "b1", Proto: "tcp", To: "[fd00:96::17]:80", Pods: []string{"b2", "b3"}, Source: "self"},
			// SCTP
			{From: "client", Proto: "sctp", To: "10.96.0.18:3868", Pods: []string{"b2"}},
			// internalTrafficPolicy Local with only a remote endpoint: dropped.
			{From: "node", Proto: "tcp", To: "10.96.0.19:80", Dropped: true},
			// Hairpin: a pod reaching itself through its Service.
			{From: "b1", Proto: "tcp", To: "10.96.0.20:80", Pods: []string{"b1"}, Source: "masq"},
			// Terminating but serving endpoints are used when none is ready.
			{From: "client", Proto: "tcp", To: "10.96.0.22:80", Pods: []string{"b1", "b2"}},
		},
	},
	{
		Name: "scale-down-and-add", // manifests and checks set in init
	},
	{
		Name:      "masquerade-all",
		Manifests: baseServices,
		Config:    func(c *proxy.Config) { c.MasqueradeAll = true },
		Checks: []Check{
			{From: "b2", Proto: "tcp", To: "10.96.0.20:80", Pods: []string{"b1"}, Source: "masq"},
			{From: "client", Proto: "tcp", To: "10.96.0.10:80", Pods: []string{"b1", "b2", "b3"}, Source: "masq"},
		},
	},
	{
		Name:      "nodeport-addresses-primary",
		Manifests: baseServices,
		Config: func(c *proxy.Config) {
			c.NodePortAddresses, _ = proxy.ParseNodePortAddresses([]string{"primary"})
		},
		Checks: []Check{
			{From: "client", Proto: "tcp", To: "192.168.50.2:30080", Pods: []string{"b1", "b2", "b3"}},
			// 10.244.0.1 is the node's too, but not its primary address.
			{From: "b2", Proto: "tcp", To: "10.244.0.1:30080", Refused: true},
		},
	},
	{
		Name:      "nodeport-addresses-all",
		Manifests: baseServices,
		Checks: []Check{
			{From: "b2", Proto: "tcp", To: "10.244.0.1:30080", Pods: []string{"b1", "b2", "b3"}},
		},
	},
	{
		Name:      "everything-deleted",
		Manifests: "",
		Checks: []Check{
			{From: "node", Proto: "tcp", To: "10.96.0.10:80", Dropped: true},
			{From: "client", Proto: "tcp", To: "192.168.50.2:30080", Refused: true}, // nothing listens there
		},
	},
}

// ScaleDownManifests is baseServices with web scaled down to b1, empty
// given b2, and sticky deleted.
func ScaleDownManifests() string {
	m := baseServices
	m = strings.Replace(m, slice("web", "IPv4", "http", "TCP", HTTPPort, "b1", "b2", "b3"), slice("web", "IPv4", "http", "TCP", HTTPPort, "b1"), 1)
	m = strings.Replace(m, svc("sticky", `spec: {clusterIP: 10.96.0.13, sessionAffinity: ClientIP, ports: [{name: http, port: 80}]}`), "", 1)
	m = strings.Replace(m, slice("sticky", "IPv4", "http", "TCP", HTTPPort, "b1", "b2", "b3"), "", 1)
	return m + slice("empty", "IPv4", "http", "TCP", HTTPPort, "b2")
}

func init() {
	m := ScaleDownManifests()
	for i := range Scenarios {
		if Scenarios[i].Name == "scale-down-and-add" {
			Scenarios[i].Manifests = m
			Scenarios[i].Checks = []Check{
				{From: "client", Proto: "tcp", To: "10.96.0.10:80", Pods: []string{"b1"}},
				{From: "client", Proto: "tcp", To: "192.168.50.2:30080", Pods: []string{"b1"}},
				{From: "client", Proto: "tcp", To: "10.96.0.14:80", Pods: []string{"b2"}},
				{From: "client", Proto: "udp", To: "10.96.0.14:53", Refused: true},
				{From: "node", Proto: "tcp", To: "10.96.0.13:80", Dropped: true},
			}
		}
	}
}
