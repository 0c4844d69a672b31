package proxy

import (
	"fmt"
	"net/netip"
)

// destination is one address:port a packet can be sent to, or a NodePort
// (invalid address).
type destination struct {
	addr     netip.Addr
	protocol Protocol
	port     uint16
}

// resolveConflicts makes every destination belong to one service port:
// two Services claiming the same ClusterIP:port, externalIP:port,
// load-balancer IP:port or NodePort cannot both be programmed (the kernel
// has one verdict per destination). Ports are visited in Key order, so the
// first claim wins and the outcome does not depend on input order; later
// claims are removed and recorded as problems. A port whose ClusterIP
// destination is taken is dropped whole.
func resolveConflicts(fs *FamilyState, ps *problems) {
	owner := map[destination]Key{}
	claim := func(sp *ServicePort, d destination, what string) bool {
		if o, taken := owner[d]; taken {
			if o != sp.Key {
				ps.add("Service", sp.Key.Namespace, sp.Key.Name, "spec.ports",
					"%s is already used by %s: not programmed for port %s", what, o, sp.Key)
			}
			return false
		}
		owner[d] = sp.Key
		return true
	}
	kept := fs.Services[:0]
	for _, sp := range fs.Services {
		if !claim(sp, destination{sp.ClusterIP, sp.Key.Protocol, sp.Port}, fmt.Sprintf("ClusterIP %s", netip.AddrPortFrom(sp.ClusterIP, sp.Port))) {
			continue
		}
		changed := false
		if sp.NodePort != 0 && !claim(sp, destination{netip.Addr{}, sp.Key.Protocol, sp.NodePort}, fmt.Sprintf("NodePort %d/%s", sp.NodePort, sp.Key.Protocol.Lower())) {
			sp.NodePort = 0
			changed = true
		}
		filter := func(ips []netip.Addr, what string) []netip.Addr {
			var out []netip.Addr
			for _, ip := range ips {
				if claim(sp, destination{ip, sp.Key.Protocol, sp.Port}, fmt.Sprintf("%s %s", what, netip.AddrPortFrom(ip, sp.Port))) {
					out = append(out, ip)
				} else {
					changed = true
				}
			}
			return out
		}
		sp.ExternalIPs = filter(sp.ExternalIPs, "externalIP")
		sp.LoadBalancerIPs = filter(sp.LoadBalancerIPs, "load-balancer IP")
		if changed {
			if len(sp.LoadBalancerIPs) == 0 {
				sp.SourceRanges = nil
			}
			sp.Hash = servicePortHash(sp)
		}
		kept = append(kept, sp)
	}
	fs.Services = kept
}
