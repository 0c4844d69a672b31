package nft

import (
	"crypto/sha256"
	"encoding/base32"
	"hash/maphash"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/google/nftables"

	"github.com/svcproxy/svcproxy/proxy"
)

// The rule layout. A packet's path through the table:
//
//	nat-prerouting / nat-output ─▶ services:
//	    daddr . proto . dport vmap @service-ips            ─▶ clusterip-* / external-*
//	    (NodePort addresses) proto . dport vmap @service-nodeports ─▶ nodeport-*
//	clusterip-*: mark off-cluster traffic for masquerade, then, for each
//	    endpoint count k of the chain's bucket, dnat to daddr . proto .
//	    dport . numgen random mod k map @<chain>-cluster-<k>
//	external-* / nodeport-*: the model's routes — mark for masquerade or
//	    short-circuit — each ending in such dnats (nodeport-*: keyed by
//	    proto . dport) through the cluster or local endpoint maps
//	affinity services: service-* / local-* / external-* chains of their own;
//	    check each endpoint's affinity set, else `numgen random mod k 0` for
//	    k = N..2, then the last; endpoint-*: remember the client, dnat
//	nat-postrouting ─▶ masquerading: mark hairpin packets (source == destination
//	    after DNAT, via @hairpin-ips), then masquerade what is marked 0x4000
//
//	filter-prerouting / filter-output (before DNAT) ─▶ firewall-check:
//	    LB IP . proto . port vmap @firewall-ips ─▶ firewall-*: drop sources outside the ranges
//	filter-input / filter-forward / filter-output-post-dnat (after DNAT) ─▶
//	    service-endpoints-check / nodeport-endpoints-check: reject or drop
//	    what was not DNATed and has no usable endpoint
//
// Services without affinity are data: the clusterip-, external- and
// nodeport- chains are shared by every service port with the same content
// (endpoint count buckets, routes), so the table holds a few dozen chains
// whatever the number of services, and an endpoint replaced by another, or
// a count change within its bucket (countBucket), changes only
// endpoint-map data, which the kernel commits without re-validating the
// table's jumps (it does for every new rule or jumping element).
//
// The number of sets does not grow with the number of services (but for
// affinity, as in kube-proxy, one per endpoint of an affinity Service):
// the kernel finds a set by name in a list, so per-service sets make a
// sync quadratic. Shared chains have a map per role and count of their
// bucket, mostly empty: how many depends on the variety of counts and
// routes, not on the number of services (34 at every benchmark scale).
//
// Chain names carry a hash of their content (and, but for shared chains,
// of the service key): once created, they never change. A changed Service
// gets new ones, the maps are re-pointed to them, and the old ones are
// flushed and then deleted. That keeps every sync to adds and element
// swaps, and lets a restarted svcproxy recognise what is already correct.
const (
	chainServices       = "services"
	chainMasquerading   = "masquerading"
	chainReject         = "reject-chain"
	chainFirewallCheck  = "firewall-check"
	chainEndpointsCheck = "service-endpoints-check"
	chainNodePortsCheck = "nodeport-endpoints-check"

	mapServiceIPs          = "service-ips"
	mapNodePorts           = "service-nodeports"
	mapNoEndpoints         = "no-endpoint-services"
	mapNoEndpointNodePorts = "no-endpoint-nodeports"
	mapFirewall            = "firewall-ips"
	setNodePortIPs         = "nodeport-ips"
	setHairpin             = "hairpin-ips"
)

// Endpoint maps, where a shared chain's `numgen random mod k` sends a
// destination, belong to that chain: "<chain>-cluster-<k>" holds the
// ClusterEndpoints of the destinations that use the chain and have k of
// them, "<chain>-local-<k>" their LocalEndpoints. A map is created and
// deleted with its chain, so a new chain's rules bind to empty maps:
// binding a rule to a map makes the kernel walk every element already in
// it, which a table-wide map would turn into O(all endpoints) per new
// endpoint count. One map per count, rather than one per role with an
// offset per count, for the same reason: a full sync that rewrites an
// existing chain binds each of its rules again, and a bucket's rules all
// binding one map of 500k elements walked it once per rule (measured: 8
// rules, 0.33 s; 8 maps, one of them full, 0.04 s).
const (
	pickCluster = "cluster"
	pickLocal   = "local"
)

func pickRole(local bool) string {
	if local {
		return pickLocal
	}
	return pickCluster
}

// pickMap names the endpoint map of a shared chain for a role and count.
func pickMap(chain, role string, n int) string { return chain + "-" + role + "-" + strconv.Itoa(n) }

// Count buckets: a shared chain serves every endpoint count of a bucket,
// so that a count change within it (a rolling update's ±1 or surge, a
// replica added) moves map data instead of re-pointing the destination
// (a verdict change, after which the kernel re-validates the whole table:
// O(services)). The chain has one pick rule per count k of the bucket,
// `numgen random mod k map @<chain>-<role>-<k>`, and a destination with N
// endpoints has its elements in the map for N only: the rules for other
// counts miss their lookup, which ends the rule without a dnat, and the
// one for N picks each endpoint with probability 1/N (as kube-proxy
// does). The price: up to (bucket size) lookups for a new connection (nat
// chains see a connection's first packet only; a route's sender match is
// evaluated again by each of its rules), hence small buckets for small
// counts, at most 32 counts, and exact counts above the last bound. 1 and
// 2 share a bucket (a one-replica rollout goes 1 → 2 → 1).
var countBucketBounds = []int{4, 8, 16, 32, 64}

// countBucket is the range of endpoint counts that share chains with n
// (n > 0).
func countBucket(n int) (lo, hi int) {
	lo = 1
	for _, b := range countBucketBounds {
		if n <= b {
			return lo, b
		}
		lo = b + 1
	}
	return n, n
}

// fragment is the part of a table that one service port (or the fixed
// skeleton) contributes.
type fragment struct {
	chains []*chainDef
	sets   []*setDef
	elems  []setElem
	// hairpin lists the endpoint addresses of the fragment; @hairpin-ips
	// holds the union over all fragments.
	hairpin []netip.Addr
	// shared, if set, remembers the shared chains built so far (see
	// sharedChains).
	shared *sharedChains
}

// sharedChains lets a full sync build each shared chain once: a shared
// chain depends only on its prefix and rules, and the thousands of ports
// of a family share a few dozen, each of which would otherwise be printed,
// hashed and cloned again per port.
type sharedChains struct {
	seed maphash.Seed
	m    map[uint64][]sharedChain
}

type sharedChain struct {
	prefix string
	rules  []rule
	chain  *chainDef
}

func newSharedChains() *sharedChains {
	return &sharedChains{seed: maphash.MakeSeed(), m: map[uint64][]sharedChain{}}
}

func (sc *sharedChains) key(prefix string, rules []rule) uint64 {
	var h maphash.Hash
	h.SetSeed(sc.seed)
	h.WriteString(prefix)
	for _, r := range rules {
		maphash.WriteComparable(&h, len(r))
		for _, st := range r {
			maphash.WriteComparable(&h, st)
		}
	}
	return h.Sum64()
}

func (sc *sharedChains) get(k uint64, prefix string, rules []rule) *chainDef {
	for _, e := range sc.m[k] {
		if e.prefix == prefix && slices.EqualFunc(e.rules, rules, slices.Equal[rule]) {
			return e.chain
		}
	}
	return nil
}

type setElem struct {
	set string
	el  element
}

func base(typ nftables.ChainType, hook nftables.ChainHook, hookName string, prio int32) *baseChain {
	return &baseChain{typ: typ, hook: hook, hookName: hookName, priority: prio}
}

// skeleton is the fixed part of a family's table: base chains, dispatch
// chains and maps, masquerading.
func skeleton(f *family, fs *proxy.FamilyState) *fragment {
	fr := &fragment{}
	for _, s := range []*setDef{
		{name: mapServiceIPs, kind: destMap}, {name: mapNodePorts, kind: portMap},
		{name: mapNoEndpoints, kind: destMap}, {name: mapNoEndpointNodePorts, kind: portMap},
		{name: mapFirewall, kind: destMap}, {name: setHairpin, kind: hairpinSet},
	} {
		fr.sets = append(fr.sets, s)
	}
	// Which destinations count as NodePort addresses.
	var nodePortMatch []stmt
	switch np := fs.NodePorts; {
	case np.AllLocal:
		nodePortMatch = []stmt{fibLocal{}, addrMatch{negate: true, prefix: f.loopback}}
	case len(np.Addresses) > 0:
		fr.sets = append(fr.sets, &setDef{name: setNodePortIPs, kind: addrSet})
		for _, a := range np.Addresses {
			fr.elems = append(fr.elems, setElem{setNodePortIPs, element{addr: a}})
		}
		nodePortMatch = []stmt{inSet{set: setNodePortIPs}}
	}
	withNodePorts := func(rest ...stmt) []rule {
		if nodePortMatch == nil {
			return nil
		}
		return []rule{append(slices.Clone(nodePortMatch), rest...)}
	}
	newOnly := func(chain string) rule { return rule{ctStateNew{}, jump(chain)} }
	fr.chains = []*chainDef{
		{name: "nat-prerouting", base: base(nftables.ChainTypeNAT, *nftables.ChainHookPrerouting, "prerouting", -100), rules: []rule{{jump(chainServices)}}},
		{name: "nat-output", base: base(nftables.ChainTypeNAT, *nftables.ChainHookOutput, "output", -100), rules: []rule{{jump(chainServices)}}},
		{name: "nat-postrouting", base: base(nftables.ChainTypeNAT, *nftables.ChainHookPostrouting, "postrouting", 100), rules: []rule{{jump(chainMasquerading)}}},
		{name: "filter-prerouting", base: base(nftables.ChainTypeFilter, *nftables.ChainHookPrerouting, "prerouting", -110), rules: []rule{newOnly(chainFirewallCheck)}},
		{name: "filter-output", base: base(nftables.ChainTypeFilter, *nftables.ChainHookOutput, "output", -110), rules: []rule{newOnly(chainFirewallCheck)}},
		{name: "filter-input", base: base(nftables.ChainTypeFilter, *nftables.ChainHookInput, "input", -110), rules: []rule{newOnly(chainNodePortsCheck), newOnly(chainEndpointsCheck)}},
		{name: "filter-forward", base: base(nftables.ChainTypeFilter, *nftables.ChainHookForward, "forward", -110), rules: []rule{newOnly(chainEndpointsCheck)}},
		{name: "filter-output-post-dnat", base: base(nftables.ChainTypeFilter, *nftables.ChainHookOutput, "output", -90), rules: []rule{newOnly(chainEndpointsCheck)}},
		{name: chainServices, rules: append([]rule{{dispatch{withAddr: true, set: mapServiceIPs}}}, withNodePorts(dispatch{set: mapNodePorts})...)},
		{name: chainFirewallCheck, rules: []rule{{dispatch{withAddr: true, set: mapFirewall}}}},
		{name: chainEndpointsCheck, rules: []rule{{dispatch{withAddr: true, set: mapNoEndpoints}}}},
		{name: chainNodePortsCheck, rules: withNodePorts(dispatch{set: mapNoEndpointNodePorts})},
		{name: chainReject, rules: []rule{{rejectIt}}},
		{name: chainMasquerading, rules: []rule{{hairpin{set: setHairpin}, markSet}, {markUnset, vReturn}, {markClear}, {masqueradeIt}}},
	}
	return fr
}

// service lays out one service port: its chains, its sets, and the map
// elements that make it reachable.
func service(f *family, fs *proxy.FamilyState, sp *proxy.ServicePort) *fragment {
	return serviceInto(&fragment{}, f, fs, sp)
}

// serviceInto lays out a service port into fr, reusing its slices: a full
// sync lays out every port in turn and lets each fragment go once sent.
// Only the slices are reused; chains and sets are new each time.
func serviceInto(fr *fragment, f *family, fs *proxy.FamilyState, sp *proxy.ServicePort) *fragment {
	fr.chains, fr.sets, fr.elems, fr.hairpin = fr.chains[:0], fr.sets[:0], fr.elems[:0], fr.hairpin[:0]
	if sp.AffinitySeconds > 0 {
		return affinityService(fr, f, fs, sp)
	}
	return pooledService(fr, f, fs, sp)
}

// pooledService lays out a service port without affinity as data: its
// destinations go to chains shared by every service with endpoint counts
// in the same buckets and the same routes, whose `numgen random mod k`
// index the endpoint maps, which hold the service's endpoints. The port
// has no chain of its own (but for source ranges).
func pooledService(fr *fragment, f *family, fs *proxy.FamilyState, sp *proxy.ServicePort) *fragment {
	proto := sp.Key.Protocol
	fr.hairpin = appendUnionIPs(fr.hairpin, sp.ClusterEndpoints, sp.LocalEndpoints)
	// Room for the elements: each destination's, and its endpoints'.
	dests := 1 + len(sp.ExternalIPs) + len(sp.LoadBalancerIPs)
	if sp.NodePort != 0 {
		dests++
	}
	fr.elems = slices.Grow(fr.elems, dests*(1+len(sp.ClusterEndpoints)+len(sp.LocalEndpoints))+len(sp.LoadBalancerIPs))

	// fill puts the endpoints for one destination into the endpoint map
	// of chain ch for the role.
	fill := func(ch string, local bool, addr netip.Addr, port uint16, eps []proxy.Endpoint) {
		m := pickMap(ch, pickRole(local), len(eps))
		for i, ep := range eps {
			fr.elem(m, element{addr: addr, proto: proto, port: port, index: uint32(i), to: netip.AddrPortFrom(ep.IP, ep.Port)})
		}
	}
	// pick names its map by role and its count's bucket; sharedChain makes
	// it one rule per count, each with a map of the chain's own.
	pick := func(byAddr, local bool, eps []proxy.Endpoint) bucketPick {
		lo, hi := countBucket(len(eps))
		return bucketPick{byAddr: byAddr, role: pickRole(local), lo: lo, hi: hi}
	}

	// ClusterIP.
	if v := sp.InternalVerdict(); v == proxy.Forward {
		eps := sp.InternalEndpoints()
		var rules []rule
		if masq := clusterIPMasqueradeRule(fs); masq != nil {
			rules = append(rules, masq)
		}
		rules = append(rules, rule{pick(true, sp.InternalPolicyLocal, eps)})
		ch := fr.sharedChain(f, "clusterip", rules)
		fr.elem(mapServiceIPs, element{addr: sp.ClusterIP, proto: proto, port: sp.Port, verdict: goTo(ch)})
		fill(ch, sp.InternalPolicyLocal, sp.ClusterIP, sp.Port, eps)
	} else {
		fr.elem(mapNoEndpoints, element{addr: sp.ClusterIP, proto: proto, port: sp.Port, verdict: noEndpointVerdict(v)})
	}

	// External destinations: the model's routes, in order, each ending in
	// a pick from the endpoints it names.
	externalIPs := append(slices.Clone(sp.ExternalIPs), sp.LoadBalancerIPs...)
	if routes := fs.ExternalRoutes(sp); len(routes) > 0 {
		routeChain := func(prefix string, byAddr bool) string {
			var rules []rule
			for _, r := range routes {
				match := routeMatch(r)
				if r.Masquerade {
					rules = append(rules, append(slices.Clone(match), markSet))
				}
				eps := sp.ClusterEndpoints
				if r.Local {
					eps = sp.LocalEndpoints
				}
				rules = append(rules, append(slices.Clone(match), pick(byAddr, r.Local, eps)))
			}
			return fr.sharedChain(f, prefix, rules)
		}
		usesLocal := slices.ContainsFunc(routes, func(r proxy.Route) bool { return r.Local })
		usesCluster := slices.ContainsFunc(routes, func(r proxy.Route) bool { return !r.Local })
		fillRoutes := func(ch string, addr netip.Addr, port uint16) {
			if usesCluster {
				fill(ch, false, addr, port, sp.ClusterEndpoints)
			}
			if usesLocal {
				fill(ch, true, addr, port, sp.LocalEndpoints)
			}
		}
		if len(externalIPs) > 0 {
			ch := routeChain("external", true)
			for _, ip := range externalIPs {
				fr.elem(mapServiceIPs, element{addr: ip, proto: proto, port: sp.Port, verdict: goTo(ch)})
				fillRoutes(ch, ip, sp.Port)
			}
		}
		if sp.NodePort != 0 {
			ch := routeChain("nodeport", false)
			fr.elem(mapNodePorts, element{proto: proto, port: sp.NodePort, verdict: goTo(ch)})
			fillRoutes(ch, netip.Addr{}, sp.NodePort)
		}
	}
	fr.firewall(f, sp)
	fr.noEndpoints(sp, externalIPs)
	return fr
}

// routeMatch is the sender match of a route.
func routeMatch(r proxy.Route) []stmt {
	switch r.From {
	case proxy.PodSender:
		return []stmt{addrMatch{src: true, prefix: r.Prefix}}
	case proxy.NodeSender:
		return []stmt{fibLocal{src: true}}
	}
	return nil
}

// clusterIPMasqueradeRule marks ClusterIP traffic for masquerading as
// the model decides (nil when none is). It sits in chains reached from
// ClusterIPs only, so it needs no destination match.
func clusterIPMasqueradeRule(fs *proxy.FamilyState) rule {
	all, notFrom, ok := fs.ClusterIPMasquerade()
	switch {
	case !ok:
		return nil
	case all:
		return rule{markSet}
	}
	return rule{addrMatch{src: true, negate: true, prefix: notFrom}, markSet}
}

// firewall adds the source-range chain of a load-balancer port.
func (fr *fragment) firewall(f *family, sp *proxy.ServicePort) {
	if len(sp.LoadBalancerIPs) == 0 || len(sp.SourceRanges) == 0 {
		return
	}
	var rules []rule
	for _, r := range sp.SourceRanges {
		rules = append(rules, rule{addrMatch{src: true, prefix: r}, vReturn})
	}
	rules = append(rules, rule{vDrop})
	fw := fr.chain(f, "firewall", sp.Key.String(), rules)
	for _, ip := range sp.LoadBalancerIPs {
		fr.elem(mapFirewall, element{addr: ip, proto: sp.Key.Protocol, port: sp.Port, verdict: goTo(fw)})
	}
}

// noEndpoints adds the reject or drop verdicts of external destinations
// that have nowhere to go.
func (fr *fragment) noEndpoints(sp *proxy.ServicePort, externalIPs []netip.Addr) {
	v := sp.ExternalVerdict()
	if v == proxy.Forward || !sp.ExternallyAccessible() {
		return
	}
	for _, ip := range externalIPs {
		fr.elem(mapNoEndpoints, element{addr: ip, proto: sp.Key.Protocol, port: sp.Port, verdict: noEndpointVerdict(v)})
	}
	if sp.NodePort != 0 {
		fr.elem(mapNoEndpointNodePorts, element{proto: sp.Key.Protocol, port: sp.NodePort, verdict: noEndpointVerdict(v)})
	}
}

// affinityService lays out a service port with ClientIP affinity as
// kube-proxy does: chains of its own, and per endpoint a chain and a set
// remembering its clients.
func affinityService(fr *fragment, f *family, fs *proxy.FamilyState, sp *proxy.ServicePort) *fragment {
	key := sp.Key.String()
	proto := sp.Key.Protocol

	// With affinity, one chain per endpoint either policy uses: it
	// remembers the client, then DNATs.
	epChain := map[netip.AddrPort]string{}
	affSet := map[netip.AddrPort]string{}
	for _, ep := range unionEndpoints(sp.ClusterEndpoints, sp.LocalEndpoints) {
		fr.hairpin = append(fr.hairpin, ep.IP)
		if sp.AffinitySeconds == 0 {
			continue
		}
		ap := netip.AddrPortFrom(ep.IP, ep.Port)
		epKey := key + "__" + ap.Addr().String() + "/" + strconv.Itoa(int(ap.Port()))
		s := &setDef{name: contentName("affinity", epKey, strconv.Itoa(int(sp.AffinitySeconds))), kind: affinity, timeout: sp.AffinitySeconds}
		fr.sets = append(fr.sets, s)
		affSet[ap] = s.name
		epChain[ap] = fr.chain(f, "endpoint", epKey, []rule{{refreshAffinity{set: s.name}}, {dnat{proto: proto, to: ap}}})
	}
	fr.hairpin = slices.Compact(fr.hairpin) // sorted by address already

	// Policy chains: pick an endpoint. The chain ClusterIP traffic enters
	// also marks it for masquerading when it comes from off the cluster.
	masq := clusterIPMasquerade(fs, sp)
	policyChain := func(prefix string, eps []proxy.Endpoint, internal bool) string {
		if len(eps) == 0 {
			return ""
		}
		var rules []rule
		if internal && masq != nil {
			rules = append(rules, masq)
		}
		// Each endpoint's action: with affinity, go to its chain (which
		// remembers the client); without, DNAT right here.
		action := func(ep proxy.Endpoint) stmt {
			ap := netip.AddrPortFrom(ep.IP, ep.Port)
			if sp.AffinitySeconds > 0 {
				return goTo(epChain[ap])
			}
			return dnat{proto: proto, to: ap}
		}
		if sp.AffinitySeconds > 0 {
			for _, ep := range eps {
				ap := netip.AddrPortFrom(ep.IP, ep.Port)
				rules = append(rules, rule{inSet{src: true, set: affSet[ap]}, goTo(epChain[ap])})
			}
		}
		for i, ep := range eps {
			if left := len(eps) - i; left > 1 {
				rules = append(rules, rule{oneIn{n: left}, action(ep)})
			} else {
				rules = append(rules, rule{action(ep)})
			}
		}
		return fr.chain(f, prefix, key, rules)
	}
	clusterChain := policyChain("service", sp.ClusterEndpoints, !sp.InternalPolicyLocal)
	localChain := policyChain("local", sp.LocalEndpoints, sp.InternalPolicyLocal)
	internalChain := clusterChain
	if sp.InternalPolicyLocal {
		internalChain = localChain
	}

	// External chain: the model's routes, in order.
	extChain := ""
	if routes := fs.ExternalRoutes(sp); len(routes) > 0 {
		var rules []rule
		for _, r := range routes {
			match := routeMatch(r)
			if r.Masquerade {
				rules = append(rules, append(slices.Clone(match), markSet))
			}
			target := clusterChain
			if r.Local {
				target = localChain
			}
			rules = append(rules, append(slices.Clone(match), goTo(target)))
		}
		extChain = fr.chain(f, "external", key, rules)
	}

	fr.firewall(f, sp)

	// Map elements.
	externalIPs := append(slices.Clone(sp.ExternalIPs), sp.LoadBalancerIPs...)
	if v := sp.InternalVerdict(); v == proxy.Forward {
		fr.elem(mapServiceIPs, element{addr: sp.ClusterIP, proto: proto, port: sp.Port, verdict: goTo(internalChain)})
	} else {
		fr.elem(mapNoEndpoints, element{addr: sp.ClusterIP, proto: proto, port: sp.Port, verdict: noEndpointVerdict(v)})
	}
	if extChain != "" {
		for _, ip := range externalIPs {
			fr.elem(mapServiceIPs, element{addr: ip, proto: proto, port: sp.Port, verdict: goTo(extChain)})
		}
		if sp.NodePort != 0 {
			fr.elem(mapNodePorts, element{proto: proto, port: sp.NodePort, verdict: goTo(extChain)})
		}
	}
	fr.noEndpoints(sp, externalIPs)
	return fr
}

// clusterIPMasquerade is the rule that marks ClusterIP traffic for
// masquerading, as the model decides; nil when none is.
func clusterIPMasquerade(fs *proxy.FamilyState, sp *proxy.ServicePort) rule {
	all, notFrom, ok := fs.ClusterIPMasquerade()
	if !ok {
		return nil
	}
	r := rule{addrMatch{prefix: netip.PrefixFrom(sp.ClusterIP, sp.ClusterIP.BitLen())}, portMatch{proto: sp.Key.Protocol, port: sp.Port}}
	if !all {
		r = append(r, addrMatch{src: true, negate: true, prefix: notFrom})
	}
	return append(r, markSet)
}

func noEndpointVerdict(v proxy.Verdict) verdict {
	if v == proxy.Drop {
		return vDrop
	}
	return goTo(chainReject)
}

// appendUnionIPs appends the addresses of two endpoint lists, each sorted
// by address, merged in order without duplicates.
func appendUnionIPs(out []netip.Addr, a, b []proxy.Endpoint) []netip.Addr {
	start := len(out)
	add := func(ip netip.Addr) {
		if len(out) == start || out[len(out)-1] != ip {
			out = append(out, ip)
		}
	}
	for len(a) > 0 || len(b) > 0 {
		if len(b) == 0 || (len(a) > 0 && a[0].IP.Compare(b[0].IP) <= 0) {
			add(a[0].IP)
			a = a[1:]
		} else {
			add(b[0].IP)
			b = b[1:]
		}
	}
	return out
}

func unionEndpoints(a, b []proxy.Endpoint) []proxy.Endpoint {
	out := append(slices.Clone(a), b...)
	slices.SortFunc(out, func(x, y proxy.Endpoint) int {
		return netip.AddrPortFrom(x.IP, x.Port).Compare(netip.AddrPortFrom(y.IP, y.Port))
	})
	return slices.CompactFunc(out, func(x, y proxy.Endpoint) bool { return x.IP == y.IP && x.Port == y.Port })
}

// chain adds a chain whose name is derived from its key and content, and
// returns the name.
func (fr *fragment) chain(f *family, prefix, key string, rules []rule) string {
	var content strings.Builder
	for _, r := range rules {
		content.WriteString(r.text(f))
		content.WriteByte('\n')
	}
	c := &chainDef{name: contentName(prefix, key, content.String()), rules: rules}
	fr.chains = append(fr.chains, c)
	return c.name
}

// sharedChain adds a chain named by its content alone, which every
// fragment with the same content shares, and returns its name. The
// content names the endpoint maps of its picks by role; the chain gets
// maps of its own for them (pickMap). A rule with a bucketPick becomes one
// rule per count of the bucket, in order.
func (fr *fragment) sharedChain(f *family, prefix string, rules []rule) string {
	var key uint64
	if fr.shared != nil {
		key = fr.shared.key(prefix, rules)
		if c := fr.shared.get(key, prefix, rules); c != nil {
			fr.chains = append(fr.chains, c)
			return c.name
		}
	}
	var own []rule
	for _, r := range rules {
		i := slices.IndexFunc(r, func(st stmt) bool { _, ok := st.(bucketPick); return ok })
		if i < 0 {
			own = append(own, slices.Clone(r))
			continue
		}
		p := r[i].(bucketPick)
		for k := p.lo; k <= p.hi; k++ {
			kr := slices.Clone(r)
			kr[i] = dnatPick{byAddr: p.byAddr, set: p.role, n: k}
			own = append(own, kr)
		}
	}
	var content strings.Builder
	for _, r := range own {
		content.WriteString(r.text(f))
		content.WriteByte('\n')
	}
	sum := sha256.Sum256([]byte(prefix + "\x00" + content.String()))
	c := &chainDef{name: prefix + "-" + base32.StdEncoding.EncodeToString(sum[:])[:8], shared: true, rules: own}
	for _, r := range own {
		for i, st := range r {
			p, ok := st.(dnatPick)
			if !ok {
				continue
			}
			p.set = pickMap(c.name, p.set, p.n)
			r[i] = p
			if !slices.ContainsFunc(c.maps, func(m *setDef) bool { return m.name == p.set }) {
				kind := nodePortEndpointMap
				if p.byAddr {
					kind = endpointMap
				}
				c.maps = append(c.maps, &setDef{name: p.set, kind: kind})
			}
		}
	}
	fr.chains = append(fr.chains, c)
	if fr.shared != nil {
		fr.shared.m[key] = append(fr.shared.m[key], sharedChain{prefix: prefix, rules: rules, chain: c})
	}
	return c.name
}

func (fr *fragment) elem(set string, e element) { fr.elems = append(fr.elems, setElem{set, e}) }

// contentName is "prefix-HASH-readable": HASH covers the key and the
// content, readable is the key made safe for nft identifiers.
func contentName(prefix, key, content string) string {
	sum := sha256.Sum256([]byte(prefix + "\x00" + key + "\x00" + content))
	h := base32.StdEncoding.EncodeToString(sum[:])[:8]
	return prefix + "-" + h + "-" + readable(key)
}

// readable keeps the characters nft accepts in an unquoted identifier and
// bounds the length (names are limited to 255 bytes).
func readable(s string) string {
	b := []byte(s)
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '/', c == '_', c == '-':
		case c == ':':
			b[i] = '.'
		default:
			b[i] = '_'
		}
	}
	if len(b) > 200 {
		b = b[:200]
	}
	return string(b)
}

// desired builds the complete table of one family.
func desired(fs *proxy.FamilyState) *table {
	f := familyFor(fs.Family)
	t := newTable(f)
	t.add(skeleton(f, fs))
	for _, sp := range fs.Services {
		t.add(service(f, fs, sp))
	}
	return t
}

func (t *table) add(fr *fragment) {
	for _, s := range fr.sets {
		t.sets[s.name] = s
	}
	for _, c := range fr.chains {
		t.chains[c.name] = c
		for _, m := range c.maps {
			t.sets[m.name] = m
		}
	}
	for _, e := range fr.elems {
		t.elems[e.set] = append(t.elems[e.set], e.el)
	}
	for _, ip := range fr.hairpin {
		if !t.hairpin[ip] {
			t.hairpin[ip] = true
			t.elems[setHairpin] = append(t.elems[setHairpin], element{addr: ip})
		}
	}
}

// Render returns the canonical text of the rules for s: both tables as
// `nft list table` prints them, sets and chains sorted by name, elements
// sorted, dynamic set contents omitted.
func Render(s *proxy.State) string {
	return desired(s.IPv4).text() + desired(s.IPv6).text()
}
