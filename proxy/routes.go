package proxy

import "net/netip"

// Sender classifies where a packet comes from, for the routing decisions
// below. Backends render it: a source prefix, or "the source is a local
// address of the node" (nft `fib saddr type local`, iptables `-m addrtype
// --src-type LOCAL`).
type Sender uint8

const (
	AnySender  Sender = iota // every packet
	PodSender                // source inside Route.Prefix (the cluster CIDR)
	NodeSender               // source is one of the node's own addresses
)

// Route is one step of how traffic to a service port's external
// destinations (NodePort, externalIPs, load-balancer IPs) is handled.
// Routes are tried in order; the first whose Sender matches applies.
type Route struct {
	From   Sender
	Prefix netip.Prefix // the pod CIDR, for PodSender
	// Masquerade marks the packet for masquerading.
	Masquerade bool
	// Local sends the packet to LocalEndpoints, else to ClusterEndpoints.
	Local bool
}

// ExternalRoutes lists how external traffic to sp is handled, in order.
// It is empty when the port has no external destination or no endpoint
// anywhere; then only ExternalVerdict applies.
//
// externalTrafficPolicy Cluster: every packet is masqueraded and may reach
// any endpoint. Local: pods (cluster CIDR) and the node itself are treated
// as internal — any endpoint, the node's traffic masqueraded — and every
// other client keeps its address and reaches this node's endpoints only (or
// nothing matches, and ExternalVerdict drops it).
func (fs *FamilyState) ExternalRoutes(sp *ServicePort) []Route {
	if !sp.ExternallyAccessible() || !sp.HasEndpoints || len(sp.ClusterEndpoints) == 0 {
		return nil
	}
	if !sp.ExternalPolicyLocal {
		return []Route{{From: AnySender, Masquerade: true}}
	}
	var r []Route
	for _, c := range fs.ClusterCIDRs {
		r = append(r, Route{From: PodSender, Prefix: c})
	}
	r = append(r, Route{From: NodeSender, Masquerade: true})
	if len(sp.LocalEndpoints) > 0 {
		r = append(r, Route{From: AnySender, Local: true})
	}
	return r
}

// ClusterIPMasquerade says which traffic to ClusterIPs is masqueraded: all
// of it (All), or what comes from outside NotFrom (the pod CIDR); ok is
// false when none is.
func (fs *FamilyState) ClusterIPMasquerade() (all bool, notFrom netip.Prefix, ok bool) {
	switch {
	case fs.MasqueradeAll:
		return true, netip.Prefix{}, true
	case len(fs.ClusterCIDRs) > 0:
		return false, fs.ClusterCIDRs[0], true
	}
	return false, netip.Prefix{}, false
}
