package proxy

import "net/netip"

// UDPTargets maps each UDP destination of a family — ClusterIP:port,
// externalIP:port and load-balancer IP:port, and NodePorts keyed with an
// invalid address — to the endpoints its flows may be DNATed to.
//
// UDP has no connection to end: a conntrack entry keeps sending a client's
// datagrams to the endpoint it was first DNATed to. An entry whose
// original destination is in the map but whose reply source is not among
// the destination's endpoints is stale, and so is a not-DNATed entry to a
// destination that has endpoints now (made while it had none).
type UDPTargets map[netip.AddrPort]map[netip.AddrPort]bool

// UDPTargets returns the family's UDP destinations and their endpoints.
func (fs *FamilyState) UDPTargets() UDPTargets {
	out := UDPTargets{}
	for _, sp := range fs.Services {
		if sp.Key.Protocol != UDP {
			continue
		}
		eps := map[netip.AddrPort]bool{}
		for _, list := range [][]Endpoint{sp.ClusterEndpoints, sp.LocalEndpoints} {
			for _, e := range list {
				eps[netip.AddrPortFrom(e.IP, e.Port)] = true
			}
		}
		out[netip.AddrPortFrom(sp.ClusterIP, sp.Port)] = eps
		for _, ip := range append(append([]netip.Addr(nil), sp.ExternalIPs...), sp.LoadBalancerIPs...) {
			out[netip.AddrPortFrom(ip, sp.Port)] = eps
		}
		if sp.NodePort != 0 {
			out[netip.AddrPortFrom(netip.Addr{}, sp.NodePort)] = eps
		}
	}
	return out
}

// Stale reports whether a UDP flow with original destination dst, DNATed
// to replySrc (equal to dst when not DNATed), no longer matches the rules.
// nodePort says whether dst is a node address (NodePort flows are looked
// up by port). Flows to destinations that are not Services are never
// stale.
func (t UDPTargets) Stale(dst, replySrc netip.AddrPort, nodePort bool) bool {
	eps, ok := t[dst]
	if !ok && nodePort {
		eps, ok = t[netip.AddrPortFrom(netip.Addr{}, dst.Port())]
	}
	if !ok {
		return false
	}
	if replySrc == dst {
		return len(eps) > 0 // made while there was no endpoint
	}
	return !eps[replySrc]
}
