package proxy

import (
	"fmt"
	"net/netip"
	"strings"
)

// Dump returns a stable, human-readable text form of the State: one block
// per family, one line per service port plus one per endpoint list, then
// ExternalName services and problems. Tests compare dumps; `render`
// prints the problems part.
func (s *State) Dump() string {
	var b strings.Builder
	for _, fs := range s.Families() {
		fmt.Fprintf(&b, "%s masqueradeAll=%t clusterCIDRs=%s nodeIP=%s nodePorts=%s\n",
			fs.Family, fs.MasqueradeAll, joinPrefixes(fs.ClusterCIDRs), addrOrNone(fs.NodeIP), fs.NodePorts)
		for _, sp := range fs.Services {
			b.WriteString(sp.Dump())
		}
	}
	for _, e := range s.ExternalNames {
		fmt.Fprintf(&b, "externalName %s/%s -> %s\n", e.Namespace, e.Name, e.ExternalName)
	}
	for _, p := range s.Problems {
		fmt.Fprintf(&b, "problem %s\n", p)
	}
	return b.String()
}

// Dump is the service port's part of State.Dump: a header line with its
// destinations and policies, then "internal" and "external" lines with
// the verdict and the endpoints each kind of traffic reaches.
func (sp *ServicePort) Dump() string {
	var b strings.Builder
	fmt.Fprintf(&b, "  %s %s", sp.Key, netip.AddrPortFrom(sp.ClusterIP, sp.Port))
	if sp.NodePort != 0 {
		fmt.Fprintf(&b, " nodePort=%d", sp.NodePort)
	}
	if len(sp.ExternalIPs) > 0 {
		fmt.Fprintf(&b, " externalIPs=%s", joinAddrs(sp.ExternalIPs))
	}
	if len(sp.LoadBalancerIPs) > 0 {
		fmt.Fprintf(&b, " loadBalancerIPs=%s", joinAddrs(sp.LoadBalancerIPs))
	}
	if len(sp.SourceRanges) > 0 {
		fmt.Fprintf(&b, " sourceRanges=%s", joinPrefixes(sp.SourceRanges))
	}
	if sp.HealthCheckNodePort != 0 {
		fmt.Fprintf(&b, " healthCheckNodePort=%d", sp.HealthCheckNodePort)
	}
	if sp.InternalPolicyLocal {
		b.WriteString(" internalTrafficPolicy=Local")
	}
	if sp.ExternalPolicyLocal {
		b.WriteString(" externalTrafficPolicy=Local")
	}
	if sp.AffinitySeconds > 0 {
		fmt.Fprintf(&b, " affinity=%ds", sp.AffinitySeconds)
	}
	if sp.Topology != "" {
		fmt.Fprintf(&b, " topology=%s", sp.Topology)
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "    internal %s%s\n", sp.InternalVerdict(), dumpEndpoints(sp.InternalEndpoints()))
	if sp.ExternallyAccessible() {
		fmt.Fprintf(&b, "    external %s%s\n", sp.ExternalVerdict(), dumpEndpoints(sp.ExternalEndpoints()))
	}
	return b.String()
}

func dumpEndpoints(es []Endpoint) string {
	var b strings.Builder
	for _, e := range es {
		b.WriteString(" ")
		b.WriteString(e.String())
		var flags []string
		if e.Local {
			flags = append(flags, "local")
		}
		if !e.Ready {
			flags = append(flags, "not-ready")
		}
		if e.Terminating {
			flags = append(flags, "terminating")
		}
		if len(flags) > 0 {
			b.WriteString("(" + strings.Join(flags, ",") + ")")
		}
	}
	return b.String()
}

// String is "all-local", or the address list ("[]" when none).
func (m NodePortMatch) String() string {
	if m.AllLocal {
		return "all-local"
	}
	return joinAddrs(m.Addresses)
}

func addrOrNone(a netip.Addr) string {
	if !a.IsValid() {
		return "none"
	}
	return a.String()
}

func joinAddrs(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return "[" + strings.Join(s, ",") + "]"
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return "[" + strings.Join(s, ",") + "]"
}
