package proxy

import (
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// Inputs are the API objects Build reads. Order does not matter. The
// objects are only read, never modified.
type Inputs struct {
	Services       []*corev1.Service
	EndpointSlices []*discoveryv1.EndpointSlice
	// Nodes may hold any nodes; only the one named Config.NodeName is used
	// (its labels for topology, its addresses when Config.NodeIPs is empty).
	Nodes []*corev1.Node
}

// Config is the node-local configuration of the model, with kube-proxy's
// meanings.
type Config struct {
	// NodeName is this node's name (kube-proxy --hostname-override): it
	// decides which endpoints are local.
	NodeName string
	// NodeLabels, when not nil, replace the Node object's labels. The zone
	// label topology.kubernetes.io/zone drives topology hints.
	NodeLabels map[string]string
	// NodeIPs are this node's addresses, the primary one of each family
	// first. They resolve NodePortAddresses and the load-balancer source
	// range exception. When empty, the Node object's status addresses are
	// used (InternalIP first, then ExternalIP).
	NodeIPs []netip.Addr
	// ClusterCIDRs (kube-proxy --cluster-cidr) detect pod traffic; see
	// FamilyState.ClusterCIDRs.
	ClusterCIDRs []netip.Prefix
	// MasqueradeAll (kube-proxy --masquerade-all) masquerades all traffic
	// to ClusterIPs.
	MasqueradeAll bool
	// NodePortAddresses (kube-proxy --nodeport-addresses) restricts the
	// addresses NodePorts are accepted on. The zero value accepts them on
	// all local addresses; kube-proxy's nftables mode defaults to "primary".
	NodePortAddresses NodePortAddresses
}

// NodePortAddresses is kube-proxy's --nodeport-addresses: either "primary"
// (the node's primary IP of each family) or a list of CIDRs selecting node
// addresses. A family with neither accepts NodePorts on all local addresses.
type NodePortAddresses struct {
	Primary bool
	CIDRs   []netip.Prefix
}

// ParseNodePortAddresses parses kube-proxy's --nodeport-addresses values:
// the single word "primary", or CIDRs (each value may itself be a
// comma-separated list).
func ParseNodePortAddresses(values []string) (NodePortAddresses, error) {
	var n NodePortAddresses
	for _, v := range splitList(values) {
		if v == "primary" {
			n.Primary = true
			continue
		}
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return NodePortAddresses{}, fmt.Errorf("--nodeport-addresses: %q is neither \"primary\" nor a CIDR", v)
		}
		n.CIDRs = append(n.CIDRs, p.Masked())
	}
	if n.Primary && len(n.CIDRs) > 0 {
		return NodePortAddresses{}, fmt.Errorf("--nodeport-addresses: \"primary\" cannot be combined with CIDRs")
	}
	return n, nil
}

// ParseCIDRs parses a comma-separated list of CIDRs, as kube-proxy's
// dual-stack --cluster-cidr takes them ("10.244.0.0/16,fd00:10:244::/56").
// Values may also be given as several strings.
func ParseCIDRs(values ...string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, v := range splitList(values) {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR: %w", v, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func splitList(values []string) []string {
	var out []string
	for _, v := range values {
		for _, f := range strings.Split(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				out = append(out, f)
			}
		}
	}
	return out
}

// nodePortMatch resolves NodePortAddresses for one family, as kube-proxy
// does: "primary" selects the primary node IP (all local addresses when the
// family has none); CIDRs select the node addresses inside them (all local
// addresses when a CIDR is 0.0.0.0/0 or ::/0, or when no CIDR is of this
// family). Loopback addresses never accept NodePorts.
func nodePortMatch(f Family, n NodePortAddresses, nodeIPs []netip.Addr) NodePortMatch {
	if n.Primary {
		for _, ip := range nodeIPs {
			if f.Contains(ip) && !ip.IsLoopback() {
				return NodePortMatch{Addresses: []netip.Addr{ip}}
			}
		}
		return NodePortMatch{AllLocal: true}
	}
	var cidrs []netip.Prefix
	for _, c := range n.CIDRs {
		if f.Contains(c.Addr()) {
			if c.Bits() == 0 {
				return NodePortMatch{AllLocal: true}
			}
			cidrs = append(cidrs, c)
		}
	}
	if len(cidrs) == 0 {
		return NodePortMatch{AllLocal: true}
	}
	m := NodePortMatch{Addresses: []netip.Addr{}}
	for _, ip := range nodeIPs {
		if !f.Contains(ip) || ip.IsLoopback() {
			continue
		}
		for _, c := range cidrs {
			if c.Contains(ip) {
				m.Addresses = append(m.Addresses, ip)
				break
			}
		}
	}
	return m
}
