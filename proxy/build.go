package proxy

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Labels that take an object away from kube-proxy (and so from svcproxy):
// kube-proxy's informers select "!service-proxy-name,!headless".
const (
	LabelServiceProxyName = "service.kubernetes.io/service-proxy-name"
	LabelHeadless         = corev1.IsHeadlessService
)

// DefaultAffinitySeconds is the ClientIP affinity timeout when the Service
// does not set one (3 hours).
const DefaultAffinitySeconds = 10800

// Build computes the node-local desired state from API objects. It is pure
// and deterministic: the same objects in any order give an identical State.
// It never fails: input it cannot use is skipped and recorded in
// State.Problems, and everything else is still built.
func Build(in Inputs, cfg Config) *State {
	st, _ := build(in, cfg, nil)
	return st
}

// build is Build, reusing what memo built before when memo is not nil.
// It also returns each family's service ports as they were before
// conflicts were resolved (IPv4, IPv6).
func build(in Inputs, cfg Config, memo *Builder) (*State, [2][]*ServicePort) {
	b := &builder{cfg: cfg}
	b.node(in.Nodes)
	slicesBySvc := b.groupSlices(in.EndpointSlices)
	var prev map[*corev1.Service]*builtService
	if memo != nil {
		prev = memo.start(b)
	}

	st := &State{}
	fams := map[Family]*FamilyState{}
	for _, f := range []Family{IPv4, IPv6} {
		fs := &FamilyState{Family: f, MasqueradeAll: cfg.MasqueradeAll, Services: []*ServicePort{}}
		// kube-proxy's local-traffic detector uses the first CIDR of each family.
		for _, c := range cfg.ClusterCIDRs {
			if f.Contains(c.Addr()) {
				fs.ClusterCIDRs = []netip.Prefix{c.Masked()}
				break
			}
		}
		fs.NodeIP = b.primaryIP(f)
		fs.NodePorts = nodePortMatch(f, cfg.NodePortAddresses, b.nodeIPs)
		fs.NodePorts.Addresses = sortedUniqueAddrs(fs.NodePorts.Addresses)
		fs.GlobalHash = globalHash(fs)
		fams[f] = fs
	}
	st.IPv4, st.IPv6 = fams[IPv4], fams[IPv6]

	for _, svc := range dedupe(&b.problems, "Service", in.Services) {
		var ports []*ServicePort
		var ext *ExternalName
		if sl := slicesBySvc[svc.Namespace+"/"+svc.Name]; memo != nil {
			ports, ext = memo.service(b, prev, svc, sl)
		} else {
			ports, ext = b.service(svc, sl)
		}
		if ext != nil {
			st.ExternalNames = append(st.ExternalNames, *ext)
		}
		for _, sp := range ports {
			fs := st.Family(familyOf(sp.ClusterIP))
			fs.Services = append(fs.Services, sp)
		}
	}
	var raw [2][]*ServicePort
	for i, fs := range st.Families() {
		slices.SortFunc(fs.Services, func(a, b *ServicePort) int { return a.Key.Compare(b.Key) })
		if memo != nil {
			raw[i] = slices.Clone(fs.Services)
		}
		resolveConflicts(fs, &b.problems)
	}
	st.Problems = b.problems.result()
	slices.SortFunc(st.Problems, compareProblems)
	st.Problems = slices.Compact(st.Problems)
	return st, raw
}

type builder struct {
	cfg      Config
	problems problems
	labels   map[string]string
	nodeIPs  []netip.Addr

	portEndpoints map[endpointPortKey][]candidate // endpoints' result, reused
}

func familyOf(a netip.Addr) Family {
	if a.Is4() {
		return IPv4
	}
	return IPv6
}

// node takes this node's labels and addresses from its Node object, unless
// the Config provides them.
func (b *builder) node(nodes []*corev1.Node) {
	var mine []*corev1.Node
	for _, n := range nodes {
		if n != nil && b.cfg.NodeName != "" && n.Name == b.cfg.NodeName {
			mine = append(mine, n)
		}
	}
	var node *corev1.Node
	if d := dedupe(&b.problems, "Node", mine); len(d) > 0 {
		node = d[0]
	}
	b.labels = b.cfg.NodeLabels
	if b.labels == nil && node != nil {
		b.labels = node.Labels
	}
	b.nodeIPs = b.cfg.NodeIPs
	if len(b.nodeIPs) > 0 || node == nil {
		return
	}
	op := objectProblems{&b.problems, "Node", "", node.Name}
	for _, t := range []corev1.NodeAddressType{corev1.NodeInternalIP, corev1.NodeExternalIP} {
		for i, a := range node.Status.Addresses {
			if a.Type != t {
				continue
			}
			ip, err := netip.ParseAddr(a.Address)
			if err != nil {
				op.add(fmt.Sprintf("status.addresses[%d].address", i), "invalid IP %q: address skipped", a.Address)
				continue
			}
			b.nodeIPs = append(b.nodeIPs, ip.Unmap())
		}
	}
}

func (b *builder) primaryIP(f Family) netip.Addr {
	for _, ip := range b.nodeIPs {
		if f.Contains(ip) {
			return ip
		}
	}
	return netip.Addr{}
}

type namedObject interface {
	*corev1.Service | *discoveryv1.EndpointSlice | *corev1.Node
	GetNamespace() string
	GetName() string
}

// dedupe sorts objects by namespace/name, drops nils, and keeps one object
// per name. Two different objects under one name can only come from
// manifests; which one wins must not depend on input order, so the one
// whose JSON sorts first is kept, and a problem is recorded.
func dedupe[T namedObject](ps *problems, kind string, objs []T) []T {
	type entry struct {
		obj  T
		json string
	}
	var es []entry
	for _, o := range objs {
		if o != nil {
			es = append(es, entry{obj: o})
		}
	}
	byName := func(a, b entry) int {
		return cmp.Or(strings.Compare(a.obj.GetNamespace(), b.obj.GetNamespace()), strings.Compare(a.obj.GetName(), b.obj.GetName()))
	}
	slices.SortStableFunc(es, byName)
	out := make([]T, 0, len(es))
	for i := 0; i < len(es); {
		j := i + 1
		for j < len(es) && byName(es[i], es[j]) == 0 {
			j++
		}
		group := es[i:j]
		if len(group) > 1 {
			for k := range group {
				data, _ := json.Marshal(group[k].obj)
				group[k].json = string(data)
			}
			slices.SortFunc(group, func(a, b entry) int { return strings.Compare(a.json, b.json) })
			if group[0].json != group[len(group)-1].json {
				ps.add(kind, group[0].obj.GetNamespace(), group[0].obj.GetName(), "metadata.name",
					"%d different objects share this name: one is used, chosen by content, the others are skipped", len(group))
			}
		}
		out = append(out, group[0].obj)
		i = j
	}
	return out
}

// service turns one Service into its ports, per family, or into an
// ExternalName entry. A Service that gets no rules returns neither.
func (b *builder) service(svc *corev1.Service, slices []*discoveryv1.EndpointSlice) ([]*ServicePort, *ExternalName) {
	op := objectProblems{&b.problems, "Service", svc.Namespace, svc.Name}
	if _, ok := svc.Labels[LabelServiceProxyName]; ok {
		return nil, nil // owned by another proxy
	}
	if _, ok := svc.Labels[LabelHeadless]; ok {
		return nil, nil
	}
	switch svc.Spec.Type {
	case corev1.ServiceTypeExternalName:
		name := strings.TrimSuffix(svc.Spec.ExternalName, ".")
		if errs := validation.IsDNS1123Subdomain(name); name == "" || len(errs) > 0 {
			op.add("spec.externalName", "%q is not a DNS name: %s", svc.Spec.ExternalName, strings.Join(errs, "; "))
			return nil, nil
		}
		return nil, &ExternalName{Namespace: svc.Namespace, Name: svc.Name, ExternalName: svc.Spec.ExternalName}
	case "", corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort, corev1.ServiceTypeLoadBalancer:
	default:
		op.add("spec.type", "unknown type %q: Service skipped", svc.Spec.Type)
		return nil, nil
	}

	clusterIPs := b.clusterIPs(svc, op)
	if len(clusterIPs) == 0 {
		return nil, nil
	}
	spec := b.serviceSpec(svc, op)
	eps := b.endpoints(svc, slices)

	var out []*ServicePort
	for _, clusterIP := range clusterIPs {
		f := familyOf(clusterIP)
		fs := &spec.family[famIndex(f)]
		for _, p := range spec.ports {
			sp := &ServicePort{
				Key:                 Key{Namespace: svc.Namespace, Name: svc.Name, Protocol: p.protocol, Port: p.name},
				ClusterIP:           clusterIP,
				Port:                p.port,
				NodePort:            p.nodePort,
				ExternalIPs:         fs.externalIPs,
				LoadBalancerIPs:     fs.lbIPs,
				HealthCheckNodePort: spec.healthCheckNodePort,
				InternalPolicyLocal: spec.internalLocal,
				ExternalPolicyLocal: spec.externalLocal,
				AffinitySeconds:     spec.affinitySeconds,
				created:             svc.CreationTimestamp.Time,
			}
			if len(fs.sourceRanges) > 0 && len(fs.lbIPs) > 0 {
				sp.SourceRanges = sourceRanges(fs.sourceRanges, fs.lbIPs, b.primaryIP(f))
			}
			b.categorize(sp, eps[endpointPortKey{f, p.protocol, p.name}])
			sp.Hash = servicePortHash(sp)
			out = append(out, sp)
		}
	}
	return out, nil
}

// sourceRanges adds the load-balancer IPs to the allowed sources when a
// range contains the node's IP: a node reaching a VIP that is also bound
// locally arrives with the VIP as its source (kube-proxy's allowFromNode).
func sourceRanges(ranges []netip.Prefix, lbIPs []netip.Addr, nodeIP netip.Addr) []netip.Prefix {
	out := slices.Clone(ranges)
	if nodeIP.IsValid() && slices.ContainsFunc(ranges, func(p netip.Prefix) bool { return p.Contains(nodeIP) }) {
		for _, ip := range lbIPs {
			out = append(out, netip.PrefixFrom(ip, ip.BitLen()))
		}
	}
	return sortedUniquePrefixes(out)
}

// clusterIPs returns the Service's ClusterIPs, at most one per family, or
// none for a headless Service.
func (b *builder) clusterIPs(svc *corev1.Service, op objectProblems) []netip.Addr {
	raw, field := svc.Spec.ClusterIPs, "spec.clusterIPs"
	if len(raw) == 0 {
		raw, field = []string{svc.Spec.ClusterIP}, "spec.clusterIP"
	}
	if raw[0] == corev1.ClusterIPNone {
		return nil // headless: DNS only
	}
	if raw[0] == "" {
		op.add("spec.clusterIP", "missing: Service skipped")
		return nil
	}
	var out []netip.Addr
	var seen [2]bool // by famIndex
	for i, s := range raw {
		f := func() string { // only for a problem
			if field == "spec.clusterIPs" {
				return fmt.Sprintf("%s[%d]", field, i)
			}
			return field
		}
		ip, err := netip.ParseAddr(s)
		if err != nil || ip.Zone() != "" {
			op.add(f(), "invalid IP %q: skipped", s)
			continue
		}
		ip = ip.Unmap()
		if ip.IsUnspecified() || ip.IsMulticast() || ip.IsLoopback() {
			op.add(f(), "%s cannot be a ClusterIP: skipped", ip)
			continue
		}
		if seen[famIndex(familyOf(ip))] {
			op.add(f(), "second %s ClusterIP %s: skipped", familyOf(ip), ip)
			continue
		}
		seen[famIndex(familyOf(ip))] = true
		out = append(out, ip)
	}
	return out
}

type portSpec struct {
	name     string
	protocol Protocol
	port     uint16
	nodePort uint16
}

type familySpec struct {
	externalIPs  []netip.Addr
	lbIPs        []netip.Addr
	sourceRanges []netip.Prefix
}

// serviceSpec is the validated, family-split part of a Service's spec and
// status that every port shares.
type serviceSpec struct {
	ports               []portSpec
	family              [2]familySpec // IPv4, IPv6 (famIndex)
	internalLocal       bool
	externalLocal       bool
	healthCheckNodePort uint16
	affinitySeconds     int32
}

func (b *builder) serviceSpec(svc *corev1.Service, op objectProblems) *serviceSpec {
	s := &serviceSpec{}
	// Less garbage per Service: a map of the names seen only for several
	// ports, field names only for a problem.
	var seen map[[2]string]bool
	if len(svc.Spec.Ports) > 1 {
		seen = map[[2]string]bool{}
	}
	for i, p := range svc.Spec.Ports {
		field := func() string { return fmt.Sprintf("spec.ports[%d]", i) }
		proto := Protocol(p.Protocol)
		switch proto {
		case "":
			proto = TCP // the API's default
		case TCP, UDP, SCTP:
		default:
			op.add(field()+".protocol", "unknown protocol %q: port skipped", p.Protocol)
			continue
		}
		if p.Port < 1 || p.Port > 65535 {
			op.add(field()+".port", "%d is out of range 1-65535: port skipped", p.Port)
			continue
		}
		if p.NodePort < 0 || p.NodePort > 65535 {
			op.add(field()+".nodePort", "%d is out of range 1-65535: port skipped", p.NodePort)
			continue
		}
		k := [2]string{p.Name, string(proto)}
		if seen[k] {
			op.add(field()+".name", "port name %q is used twice for %s: port skipped", p.Name, proto)
			continue
		}
		if seen != nil {
			seen[k] = true
		}
		s.ports = append(s.ports, portSpec{name: p.Name, protocol: proto, port: uint16(p.Port), nodePort: uint16(p.NodePort)})
	}
	if len(s.ports) == 0 && len(svc.Spec.Ports) == 0 {
		op.add("spec.ports", "no ports: Service gets no rules")
	}

	for i, str := range svc.Spec.ExternalIPs {
		ip, err := netip.ParseAddr(strings.TrimSpace(str))
		if err != nil || ip.Zone() != "" {
			op.add(fmt.Sprintf("spec.externalIPs[%d]", i), "invalid IP %q: skipped", str)
			continue
		}
		fs := &s.family[famIndex(familyOf(ip.Unmap()))]
		fs.externalIPs = append(fs.externalIPs, ip.Unmap())
	}
	for i, ing := range svc.Status.LoadBalancer.Ingress {
		if ing.IP == "" {
			continue // hostname-only ingress: nothing to program
		}
		if ing.IPMode != nil && *ing.IPMode != corev1.LoadBalancerIPModeVIP {
			continue // ipMode Proxy: the load balancer delivers to the node, not to the VIP
		}
		ip, err := netip.ParseAddr(ing.IP)
		if err != nil || ip.Zone() != "" {
			op.add(fmt.Sprintf("status.loadBalancer.ingress[%d].ip", i), "invalid IP %q: skipped", ing.IP)
			continue
		}
		fs := &s.family[famIndex(familyOf(ip.Unmap()))]
		fs.lbIPs = append(fs.lbIPs, ip.Unmap())
	}
	for i, str := range svc.Spec.LoadBalancerSourceRanges {
		p, err := netip.ParsePrefix(strings.TrimSpace(str))
		if err != nil {
			op.add(fmt.Sprintf("spec.loadBalancerSourceRanges[%d]", i), "invalid CIDR %q: skipped", str)
			continue
		}
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()).Masked()
		fs := &s.family[famIndex(familyOf(p.Addr()))]
		fs.sourceRanges = append(fs.sourceRanges, p)
	}
	for i := range s.family {
		fs := &s.family[i]
		fs.externalIPs = sortedUniqueAddrs(fs.externalIPs)
		fs.lbIPs = sortedUniqueAddrs(fs.lbIPs)
		fs.sourceRanges = sortedUniquePrefixes(fs.sourceRanges)
		// A range of length 0 allows every source: no restriction at all.
		// A family with no range of its own is not restricted either.
		if slices.ContainsFunc(fs.sourceRanges, func(p netip.Prefix) bool { return p.Bits() == 0 }) {
			fs.sourceRanges = nil
		}
	}

	if p := svc.Spec.InternalTrafficPolicy; p != nil {
		switch *p {
		case corev1.ServiceInternalTrafficPolicyLocal:
			s.internalLocal = true
		case corev1.ServiceInternalTrafficPolicyCluster, "":
		default:
			op.add("spec.internalTrafficPolicy", "unknown policy %q: Cluster used", *p)
		}
	}
	switch svc.Spec.ExternalTrafficPolicy {
	case corev1.ServiceExternalTrafficPolicyLocal:
		s.externalLocal = externallyAccessible(svc)
	case corev1.ServiceExternalTrafficPolicyCluster, "":
	default:
		op.add("spec.externalTrafficPolicy", "unknown policy %q: Cluster used", svc.Spec.ExternalTrafficPolicy)
	}
	if svc.Spec.Type == corev1.ServiceTypeLoadBalancer && s.externalLocal {
		switch hc := svc.Spec.HealthCheckNodePort; {
		case hc == 0:
			op.add("spec.healthCheckNodePort", "missing for a LoadBalancer with externalTrafficPolicy Local: no health check server")
		case hc < 0 || hc > 65535:
			op.add("spec.healthCheckNodePort", "%d is out of range 1-65535: no health check server", hc)
		default:
			s.healthCheckNodePort = uint16(hc)
		}
	}

	switch svc.Spec.SessionAffinity {
	case corev1.ServiceAffinityClientIP:
		s.affinitySeconds = DefaultAffinitySeconds
		if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
			if t := *c.ClientIP.TimeoutSeconds; t < 1 || t > 86400 {
				op.add("spec.sessionAffinityConfig.clientIP.timeoutSeconds", "%d is out of range 1-86400: %d used", t, DefaultAffinitySeconds)
			} else {
				s.affinitySeconds = t
			}
		}
	case corev1.ServiceAffinityNone, "":
	default:
		op.add("spec.sessionAffinity", "unknown affinity %q: None used", svc.Spec.SessionAffinity)
	}
	return s
}

// externallyAccessible is the API's notion: externalTrafficPolicy applies
// to NodePort and LoadBalancer Services and to ClusterIP ones with
// externalIPs.
func externallyAccessible(svc *corev1.Service) bool {
	switch svc.Spec.Type {
	case corev1.ServiceTypeNodePort, corev1.ServiceTypeLoadBalancer:
		return true
	case "", corev1.ServiceTypeClusterIP:
		return len(svc.Spec.ExternalIPs) > 0
	}
	return false
}

func sortedUniqueAddrs(in []netip.Addr) []netip.Addr {
	slices.SortFunc(in, netip.Addr.Compare)
	return slices.Compact(in)
}

func sortedUniquePrefixes(in []netip.Prefix) []netip.Prefix {
	slices.SortFunc(in, func(a, b netip.Prefix) int {
		return cmp.Or(a.Addr().Compare(b.Addr()), a.Bits()-b.Bits())
	})
	return slices.Compact(in)
}
