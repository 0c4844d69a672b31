package proxy

import (
	"fmt"
	"net/netip"
	"slices"
)

// destination is one address:port a packet can be sent to, or a NodePort
// (invalid address). 32 bytes: a Builder keeps one per destination.
type destination struct {
	addr     netip.Addr
	port     uint16
	protocol uint8 // protocolCode
}

func dest(addr netip.Addr, p Protocol, port uint16) destination {
	return destination{addr, port, protocolCode(p)}
}

// protocolCode numbers the protocols a ServicePort can have (Build skips
// ports with any other).
func protocolCode(p Protocol) uint8 {
	switch p {
	case TCP:
		return 1
	case UDP:
		return 2
	case SCTP:
		return 3
	}
	return 0
}

// resolveConflicts makes every destination belong to one service port:
// two Services claiming the same ClusterIP:port, externalIP:port,
// load-balancer IP:port or NodePort cannot both be programmed (the kernel
// has one verdict per destination). The older Service (creationTimestamp)
// keeps the destination, so a new Service never breaks a working one; ties
// (manifests without timestamps) go by Key. The outcome does not depend on
// input order. Losing claims are removed and recorded as problems; a port
// whose ClusterIP destination is taken is dropped whole.
func resolveConflicts(fs *FamilyState, ps *problems) {
	order := slices.Clone(fs.Services)
	slices.SortStableFunc(order, func(a, b *ServicePort) int { return a.created.Compare(b.created) }) // Key order within equal times
	dropped := map[*ServicePort]bool{}
	owner := map[destination]Key{}
	// claim takes d for sp; what describes d, and is only formatted on a
	// conflict (this runs for every destination of every build).
	claim := func(sp *ServicePort, d destination, what string, arg any) bool {
		if o, taken := owner[d]; taken {
			if o != sp.Key {
				ps.add("Service", sp.Key.Namespace, sp.Key.Name, "spec.ports",
					"%s is already used by %s: not programmed for port %s", fmt.Sprintf(what, arg), o, sp.Key)
			}
			return false
		}
		owner[d] = sp.Key
		return true
	}
	// Service ports may be shared with an earlier State (Builder): a port
	// that loses a destination is replaced by a changed copy.
	replaced := map[*ServicePort]*ServicePort{}
	for _, sp := range order {
		if !claim(sp, dest(sp.ClusterIP, sp.Key.Protocol, sp.Port), "ClusterIP %s", netip.AddrPortFrom(sp.ClusterIP, sp.Port)) {
			dropped[sp] = true
			continue
		}
		nodePort := sp.NodePort
		changed := false
		if sp.NodePort != 0 && !claim(sp, dest(netip.Addr{}, sp.Key.Protocol, sp.NodePort), "NodePort %s", fmt.Sprint(sp.NodePort, "/", sp.Key.Protocol.Lower())) {
			nodePort = 0
			changed = true
		}
		filter := func(ips []netip.Addr, what string) []netip.Addr {
			var out []netip.Addr
			for _, ip := range ips {
				if claim(sp, dest(ip, sp.Key.Protocol, sp.Port), what+" %s", netip.AddrPortFrom(ip, sp.Port)) {
					out = append(out, ip)
				} else {
					changed = true
				}
			}
			return out
		}
		externalIPs := filter(sp.ExternalIPs, "externalIP")
		lbIPs := filter(sp.LoadBalancerIPs, "load-balancer IP")
		if changed {
			c := *sp
			c.NodePort, c.ExternalIPs, c.LoadBalancerIPs = nodePort, externalIPs, lbIPs
			if len(c.LoadBalancerIPs) == 0 {
				c.SourceRanges = nil
			}
			c.Hash = servicePortHash(&c)
			replaced[sp] = &c
		}
	}
	for i, sp := range fs.Services {
		if c := replaced[sp]; c != nil {
			fs.Services[i] = c
		}
	}
	fs.Services = slices.DeleteFunc(fs.Services, func(sp *ServicePort) bool { return dropped[sp] })
}
