package proxy

import (
	"fmt"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// candidate is an endpoint before the policies choose among them.
type candidate struct {
	Endpoint
	hints *hints // nil for most endpoints; a pointer keeps candidates small
}

type hints struct{ zones, nodes []string }

func (c *candidate) zoneHints() []string {
	if c.hints == nil {
		return nil
	}
	return c.hints.zones
}

func (c *candidate) nodeHints() []string {
	if c.hints == nil {
		return nil
	}
	return c.hints.nodes
}

func (c *candidate) hasZoneHint(z string) bool { return slices.Contains(c.zoneHints(), z) }
func (c *candidate) hasNodeHint(n string) bool { return slices.Contains(c.nodeHints(), n) }

// endpointPortKey matches a Service port to EndpointSlice ports: same
// family, protocol and port name.
type endpointPortKey struct {
	family   Family
	protocol Protocol
	name     string
}

// groupSlices indexes EndpointSlices by "namespace/service". Slices without
// the service-name label are recorded as problems; slices kube-proxy's
// informers would not see (service-proxy-name, headless) are ignored.
func (b *builder) groupSlices(in []*discoveryv1.EndpointSlice) map[string][]*discoveryv1.EndpointSlice {
	out := map[string][]*discoveryv1.EndpointSlice{}
	for _, s := range dedupe(&b.problems, "EndpointSlice", in) {
		if k := sliceGroup(&b.problems, s); k != "" {
			out[k] = append(out[k], s) // sorted by name, as dedupe returns them
		}
	}
	return out
}

// sliceGroup is the "namespace/service" whose endpoints s holds, or "" for
// none; a slice without the service-name label is a problem, recorded in
// ps when ps is not nil.
func sliceGroup(ps *problems, s *discoveryv1.EndpointSlice) string {
	if _, ok := s.Labels[LabelServiceProxyName]; ok {
		return ""
	}
	if _, ok := s.Labels[LabelHeadless]; ok {
		return ""
	}
	svc := s.Labels[discoveryv1.LabelServiceName]
	if svc == "" {
		if ps != nil {
			ps.add("EndpointSlice", s.Namespace, s.Name, `metadata.labels["`+discoveryv1.LabelServiceName+`"]`,
				"missing: the slice belongs to no Service and is skipped")
		}
		return ""
	}
	return s.Namespace + "/" + svc
}

// endpoints merges the Service's slices into candidates per port. An
// address:port seen twice (in one slice or across slices) is kept once,
// preferring a copy that is not terminating, as kube-proxy does; among
// equals the first in slice-name order wins, so the result does not depend
// on input order.
//
// The map returned is the builder's own, valid until the next call.
func (b *builder) endpoints(svc *corev1.Service, in []*discoveryv1.EndpointSlice) map[endpointPortKey][]candidate {
	// One map for all Services: a new one per Service was garbage in the
	// size class of the endpoint lists the State keeps, and left them
	// scattered over half-empty spans once collected.
	out := b.portEndpoints
	if out == nil {
		out = map[endpointPortKey][]candidate{}
		b.portEndpoints = out
	}
	clear(out)
	total := 0 // endpoints in all slices: each port's list holds at most that
	for _, s := range in {
		total += len(s.Endpoints)
	}
	for _, s := range in {
		op := objectProblems{&b.problems, "EndpointSlice", s.Namespace, s.Name}
		var f Family
		switch s.AddressType {
		case discoveryv1.AddressTypeIPv4:
			f = IPv4
		case discoveryv1.AddressTypeIPv6:
			f = IPv6
		case discoveryv1.AddressTypeFQDN:
			continue // not proxied, as in kube-proxy
		default:
			op.add("addressType", "unknown address type %q: slice skipped", s.AddressType)
			continue
		}
		eps := b.sliceEndpoints(s, f, op)
		for i, p := range s.Ports {
			field := func(f string) string { return fmt.Sprintf("ports[%d].%s", i, f) }
			if p.Port == nil {
				op.add(field("port"), "missing: port skipped")
				continue
			}
			if *p.Port < 1 || *p.Port > 65535 { // kube-proxy skips 0 too
				op.add(field("port"), "%d is out of range 1-65535: port skipped", *p.Port)
				continue
			}
			if p.Name == nil {
				op.add(field("name"), "missing: port skipped")
				continue
			}
			k := endpointPortKey{family: f, protocol: TCP, name: *p.Name}
			if p.Protocol != nil {
				k.protocol = Protocol(*p.Protocol)
			}
			cs := out[k]
			if cs == nil && len(in) == 1 && i == len(s.Ports)-1 {
				// The common case, one slice: its last port takes the
				// parsed endpoints themselves.
				for j := range eps {
					eps[j].Port = uint16(*p.Port)
				}
				out[k] = eps
				continue
			}
			if cs == nil {
				cs = make([]candidate, 0, total)
			}
			for _, c := range eps {
				c.Port = uint16(*p.Port)
				cs = append(cs, c)
			}
			out[k] = cs
		}
	}
	for k, cs := range out {
		out[k] = dedupeCandidates(cs)
	}
	return out
}

// dedupeCandidates sorts cs by address:port and keeps one candidate per
// address:port: the first that is not terminating, else the first. The
// stable sort keeps slice order among copies, so "first" is the first in
// slice-name order.
func dedupeCandidates(cs []candidate) []candidate {
	slices.SortStableFunc(cs, func(a, b candidate) int {
		if c := compareEndpoints(a.Endpoint, b.Endpoint); c != 0 {
			return c
		}
		return boolOrder(a.Terminating) - boolOrder(b.Terminating)
	})
	return slices.CompactFunc(cs, func(a, b candidate) bool { return compareEndpoints(a.Endpoint, b.Endpoint) == 0 })
}

func boolOrder(b bool) int {
	if b {
		return 1
	}
	return 0
}

// sliceEndpoints parses a slice's endpoints (without ports). Like
// kube-proxy, only the first address of an endpoint is used.
func (b *builder) sliceEndpoints(s *discoveryv1.EndpointSlice, f Family, op objectProblems) []candidate {
	out := make([]candidate, 0, len(s.Endpoints))
	for i, ep := range s.Endpoints {
		// Built only for a problem: most endpoints have none.
		field := func() string { return fmt.Sprintf("endpoints[%d].addresses", i) }
		if len(ep.Addresses) == 0 {
			op.add(field(), "empty: endpoint skipped")
			continue
		}
		ip, err := netip.ParseAddr(ep.Addresses[0])
		if err != nil || ip.Zone() != "" {
			op.add(field()+"[0]", "invalid IP %q: endpoint skipped", ep.Addresses[0])
			continue
		}
		ip = ip.Unmap()
		if !f.Contains(ip) {
			op.add(field()+"[0]", "%s is not an %s address (addressType %s): endpoint skipped", ip, f, s.AddressType)
			continue
		}
		c := candidate{Endpoint: Endpoint{
			IP:          ip,
			Ready:       ep.Conditions.Ready == nil || *ep.Conditions.Ready,
			Serving:     ep.Conditions.Serving == nil || *ep.Conditions.Serving,
			Terminating: ep.Conditions.Terminating != nil && *ep.Conditions.Terminating,
		}}
		if ep.NodeName != nil {
			c.NodeName = *ep.NodeName
			c.Local = b.cfg.NodeName != "" && c.NodeName == b.cfg.NodeName
		}
		if ep.Hints != nil {
			c.hints = &hints{}
			for _, z := range ep.Hints.ForZones {
				c.hints.zones = append(c.hints.zones, z.Name)
			}
			for _, n := range ep.Hints.ForNodes {
				c.hints.nodes = append(c.hints.nodes, n.Name)
			}
		}
		out = append(out, c)
	}
	return out
}

// categorize fills ClusterEndpoints, LocalEndpoints, HasEndpoints and
// Topology, with kube-proxy's rules:
//
//   - Cluster policy (used when internalTrafficPolicy is Cluster or the
//     port is externally accessible): ready endpoints, narrowed by topology
//     hints when they apply; if none is ready anywhere, serving terminating
//     endpoints.
//   - Local policy (used when either policy is Local): this node's ready
//     endpoints; if it has none, its serving terminating ones. The fallback
//     is decided separately from the Cluster one.
func (b *builder) categorize(sp *ServicePort, cands []candidate) {
	usesCluster := !sp.InternalPolicyLocal || sp.ExternallyAccessible()
	usesLocal := sp.InternalPolicyLocal || (sp.ExternalPolicyLocal && sp.ExternallyAccessible())

	if usesCluster {
		zone := b.labels[corev1.LabelTopologyZone]
		mode := topologyMode(cands, b.cfg.NodeName, zone)
		sp.Topology = mode
		sp.ClusterEndpoints = pick(cands, func(c *candidate) bool {
			switch mode {
			case "Zone":
				return c.Ready && c.hasZoneHint(zone)
			case "Node":
				return c.Ready && c.hasNodeHint(b.cfg.NodeName)
			}
			return c.Ready
		})
		if len(sp.ClusterEndpoints) == 0 {
			sp.Topology = ""
			sp.ClusterEndpoints = pick(cands, func(c *candidate) bool { return c.Serving && c.Terminating })
		}
		sp.HasEndpoints = len(sp.ClusterEndpoints) > 0
	}
	if !usesLocal {
		return
	}
	var localReady, localTerminating bool
	for _, c := range cands {
		switch {
		case c.Ready:
			sp.HasEndpoints = true
			localReady = localReady || c.Local
		case c.Serving && c.Terminating:
			sp.HasEndpoints = true
			localTerminating = localTerminating || c.Local
		}
	}
	switch {
	case localReady:
		sp.LocalEndpoints = pick(cands, func(c *candidate) bool { return c.Local && c.Ready })
	case localTerminating:
		sp.LocalEndpoints = pick(cands, func(c *candidate) bool { return c.Local && c.Serving && c.Terminating })
	}
}

// topologyMode says which hints narrow the cluster endpoints: "Node" when
// every ready endpoint has node hints and one names this node (set for
// trafficDistribution PreferSameNode), else "Zone" when every ready
// endpoint has zone hints and one names this node's zone (PreferSameZone,
// PreferClose, topology-mode Auto), else "" (no narrowing).
func topologyMode(cands []candidate, node, zone string) string {
	allNode, allZone := true, true
	forNode, forZone := false, false
	for i := range cands {
		c := &cands[i]
		if !c.Ready {
			continue
		}
		if len(c.nodeHints()) == 0 {
			allNode = false
		} else if c.hasNodeHint(node) {
			forNode = true
		}
		if len(c.zoneHints()) == 0 {
			allZone = false
		} else if c.hasZoneHint(zone) {
			forZone = true
		}
	}
	switch {
	case allNode && forNode && node != "":
		return "Node"
	case allZone && forZone && zone != "":
		return "Zone"
	}
	return ""
}

func pick(cands []candidate, keep func(*candidate) bool) []Endpoint {
	n := 0
	for i := range cands {
		if keep(&cands[i]) {
			n++
		}
	}
	if n == 0 {
		return nil
	}
	out := make([]Endpoint, 0, n)
	for i := range cands {
		if keep(&cands[i]) {
			out = append(out, cands[i].Endpoint)
		}
	}
	return out
}
