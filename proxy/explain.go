package proxy

import (
	"fmt"
	"net/netip"
	"strings"
)

// Packet is a first packet of a connection, as `svcproxy explain` asks
// about it.
type Packet struct {
	Src      netip.Addr
	Dst      netip.AddrPort
	Protocol Protocol
	// FromNode: sent by the node itself. FromPod: sent by a pod; also
	// assumed when Src lies in the cluster CIDRs.
	FromNode, FromPod bool
}

// Explanation is what the rules do with a Packet.
type Explanation struct {
	Service     *Key   // nil: no Service has this destination
	Destination string // "ClusterIP", "externalIP", "load-balancer IP", "NodePort"
	Verdict     Verdict
	// Endpoints the packet may be sent to, each with probability
	// 1/len(Endpoints); empty unless Verdict is Forward.
	Endpoints []Endpoint
	// Masquerade: the source is rewritten to the node's address.
	Masquerade bool
	// Hairpin: an endpoint equal to the source is reached masqueraded.
	Hairpin         bool
	AffinitySeconds int32
	// Why lists the decisions, in order, in words.
	Why []string
}

// Explain says what the State's rules do with p. It follows the same
// semantics the backends render, so that `explain` answers for both.
func (s *State) Explain(p Packet) Explanation {
	fs := s.Family(familyOf(p.Dst.Addr()))
	var e Explanation
	sp, dest := fs.match(p)
	if sp == nil {
		e.Verdict = Forward
		e.Why = append(e.Why, fmt.Sprintf("no Service has %s/%s in %s: the packet is not proxied", p.Dst, p.Protocol.Lower(), fs.Family))
		return e
	}
	e.Service, e.Destination, e.AffinitySeconds = &sp.Key, dest, sp.AffinitySeconds
	e.Why = append(e.Why, fmt.Sprintf("%s of Service port %s", dest, sp.Key))
	inCluster := len(fs.ClusterCIDRs) > 0 && fs.ClusterCIDRs[0].Contains(p.Src)

	if dest == "load-balancer IP" && len(sp.SourceRanges) > 0 && !anyContains(sp.SourceRanges, p.Src) {
		e.Verdict = Drop
		e.Why = append(e.Why, fmt.Sprintf("source %s is outside loadBalancerSourceRanges %s: dropped", p.Src, joinPrefixes(sp.SourceRanges)))
		return e
	}

	if dest == "ClusterIP" {
		e.Endpoints, e.Verdict = sp.InternalEndpoints(), sp.InternalVerdict()
		policy := "Cluster"
		if sp.InternalPolicyLocal {
			policy = "Local"
		}
		e.Why = append(e.Why, "internalTrafficPolicy "+policy)
		if all, notFrom, ok := fs.ClusterIPMasquerade(); ok {
			switch {
			case all:
				e.Masquerade = true
				e.Why = append(e.Why, "masqueradeAll: masqueraded")
			case !p.FromPod && !inCluster:
				e.Masquerade = true
				e.Why = append(e.Why, fmt.Sprintf("source outside the cluster CIDR %s: masqueraded", notFrom))
			}
		}
	} else {
		e.Endpoints, e.Verdict = nil, sp.ExternalVerdict()
		why := "externalTrafficPolicy Local: this node's endpoints only, source address kept"
		for _, r := range fs.ExternalRoutes(sp) {
			if (r.From == PodSender && !(p.FromPod || r.Prefix.Contains(p.Src))) || (r.From == NodeSender && !p.FromNode) {
				continue
			}
			e.Verdict, e.Masquerade, e.Endpoints = Forward, r.Masquerade, sp.ClusterEndpoints
			if r.Local {
				e.Endpoints = sp.LocalEndpoints
			}
			switch {
			case !sp.ExternalPolicyLocal:
				why = "externalTrafficPolicy Cluster: masqueraded, any endpoint"
			case r.From == PodSender:
				why = "externalTrafficPolicy Local, but from a pod: treated as internal, any endpoint, not masqueraded"
			case r.From == NodeSender:
				why = "externalTrafficPolicy Local, but from the node: any endpoint, masqueraded"
			}
			break
		}
		if !sp.ExternalPolicyLocal && e.Verdict != Forward {
			why = "externalTrafficPolicy Cluster"
		}
		e.Why = append(e.Why, why)
	}
	switch e.Verdict {
	case Reject:
		e.Endpoints = nil
		e.Why = append(e.Why, "no usable endpoint anywhere: rejected (ICMP port unreachable)")
	case Drop:
		e.Endpoints = nil
		e.Why = append(e.Why, "endpoints exist, but none on this node: dropped")
	default:
		for _, ep := range e.Endpoints {
			if ep.IP == p.Src {
				e.Hairpin = true
				e.Why = append(e.Why, fmt.Sprintf("if %s is picked, the packet goes back to its sender: masqueraded (hairpin)", ep))
			}
		}
		if sp.AffinitySeconds > 0 {
			e.Why = append(e.Why, fmt.Sprintf("ClientIP affinity: a client keeps its endpoint for %ds of inactivity", sp.AffinitySeconds))
		}
	}
	return e
}

// match finds the service port a packet is addressed to.
func (fs *FamilyState) match(p Packet) (*ServicePort, string) {
	for _, sp := range fs.Services {
		if sp.Key.Protocol != p.Protocol {
			continue
		}
		if sp.Port == p.Dst.Port() {
			switch {
			case sp.ClusterIP == p.Dst.Addr():
				return sp, "ClusterIP"
			case containsAddr(sp.ExternalIPs, p.Dst.Addr()):
				return sp, "externalIP"
			case containsAddr(sp.LoadBalancerIPs, p.Dst.Addr()):
				return sp, "load-balancer IP"
			}
		}
		if sp.NodePort != 0 && sp.NodePort == p.Dst.Port() && fs.isNodePortAddress(p.Dst.Addr()) {
			return sp, "NodePort"
		}
	}
	return nil, ""
}

// isNodePortAddress: with "all local addresses", the model knows the
// node's primary address only, so that is the one it answers for.
func (fs *FamilyState) isNodePortAddress(a netip.Addr) bool {
	if fs.NodePorts.AllLocal {
		return a == fs.NodeIP
	}
	return containsAddr(fs.NodePorts.Addresses, a)
}

func containsAddr(as []netip.Addr, a netip.Addr) bool {
	for _, x := range as {
		if x == a {
			return true
		}
	}
	return false
}

func anyContains(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// String is the explanation as `svcproxy explain` prints it.
func (e Explanation) String() string {
	var b strings.Builder
	for _, w := range e.Why {
		b.WriteString("- " + w + "\n")
	}
	switch {
	case e.Service == nil:
		b.WriteString("verdict: not proxied\n")
	case e.Verdict != Forward:
		fmt.Fprintf(&b, "verdict: %s\n", e.Verdict)
	default:
		fmt.Fprintf(&b, "verdict: DNAT to one of %d endpoints", len(e.Endpoints))
		if e.Masquerade {
			b.WriteString(", masqueraded")
		}
		b.WriteString("\n")
		for _, ep := range e.Endpoints {
			fmt.Fprintf(&b, "  %s  weight 1/%d", ep, len(e.Endpoints))
			if ep.NodeName != "" {
				fmt.Fprintf(&b, "  node %s", ep.NodeName)
			}
			if ep.Terminating {
				b.WriteString("  (terminating)")
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}
