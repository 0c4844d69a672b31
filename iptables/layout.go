package iptables

import (
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/svcproxy/svcproxy/proxy"
)

// The rule layout, per family (iptables for IPv4, ip6tables for IPv6). A
// packet's path, hook by hook:
//
//	nat PREROUTING, OUTPUT ─▶ SVCP-SERVICES:
//	    -d VIP -p P --dport N -g SVCP-SVC-*|SVCP-SVL-*|SVCP-EXT-*   (one rule per destination)
//	    NodePort addresses -j SVCP-NODEPORTS: -p P --dport NP -g SVCP-EXT-*
//	SVCP-EXT-*: masquerade or short-circuit, then SVCP-SVC-* or SVCP-SVL-*
//	SVCP-SVC-* / SVCP-SVL-*: masquerade off-cluster ClusterIP traffic, then
//	    a -m statistic cascade, two rules a step: from the endpoint itself
//	    ─▶ SVCP-HPN-* (hairpin masquerade, DNAT), from elsewhere DNAT;
//	    with affinity, kube-proxy's: -m recent --rcheck, cascade ─▶
//	    SVCP-SEP-*: hairpin masquerade, -m recent --set, DNAT
//	nat POSTROUTING ─▶ SVCP-POSTROUTING: masquerade packets marked 0x4000
//
//	filter INPUT / FORWARD / OUTPUT, ctstate NEW ─▶ SVCP-INPUT / SVCP-FORWARD / SVCP-OUTPUT:
//	    -j SVCP-FIREWALL: original destination (conntrack) is a LB IP with
//	        source ranges -g SVCP-FW-*: RETURN for allowed sources, else DROP
//	    (INPUT only) NodePort addresses -j SVCP-NODEPORTS: REJECT / DROP
//	    -j SVCP-SERVICES: REJECT / DROP what was not DNATed and has no usable endpoint
//
// Packets meet the fate the nftables backend (nft/layout.go) gives them;
// the form differs:
//   - nft's verdict maps are one rule per element in the dispatch chains,
//     using -g (goto) as the maps do: an external chain that ends without a
//     verdict (externalTrafficPolicy Local, no local endpoint) leaves
//     svcproxy's chains instead of being matched again by the NodePort rule.
//   - nft drops sources outside loadBalancerSourceRanges in prerouting,
//     before DNAT. The filter table has no prerouting hook, so the firewall
//     runs in filter INPUT/FORWARD/OUTPUT, after DNAT, and matches the
//     connection's original destination (-m conntrack --ctorigdst
//     --ctorigdstport). Same packets dropped; the only side effect is that an
//     affinity entry may be recorded for a client whose packet is then
//     dropped.
//   - endpoints are picked by kube-proxy's cascade of -m statistic
//     --probability 1/(n-i) rules, the last one unconditional (nft: numgen).
//   - hairpin traffic (an endpoint reaching itself through the Service) is
//     marked by source address once the endpoint is chosen, as kube-proxy's
//     endpoint chains do (but in the service's SVCP-HPN-* chain, see
//     service); nft marks it in postrouting (source == destination, from a
//     set of endpoint addresses). Same packets masqueraded.
//
// Chain names are stable: SVCP-<kind>-<16 base32 chars of sha256 of the
// service key> (and of the endpoint for SVCP-SEP-*). A changed service keeps
// its chain names; its chains are rewritten in place (atomically, in the
// same iptables-restore as the dispatch chains).
const (
	tableFilter = "filter"
	tableNAT    = "nat"

	chainPrefix = "SVCP-"

	chainServices    = "SVCP-SERVICES"  // nat: dispatch; filter: no-endpoint verdicts
	chainNodePorts   = "SVCP-NODEPORTS" // nat: NodePort dispatch; filter: no-endpoint NodePort verdicts
	chainPostrouting = "SVCP-POSTROUTING"
	chainMarkMasq    = "SVCP-MARK-MASQ"
	chainFirewall    = "SVCP-FIREWALL"
	chainInput       = "SVCP-INPUT"
	chainForward     = "SVCP-FORWARD"
	chainOutput      = "SVCP-OUTPUT"

	prefixSVC = "SVCP-SVC-" // cluster-policy endpoints
	prefixSVL = "SVCP-SVL-" // local-policy endpoints
	prefixEXT = "SVCP-EXT-" // external destinations
	prefixFW  = "SVCP-FW-"  // load-balancer source ranges (filter table)
	prefixSEP = "SVCP-SEP-" // one endpoint (affinity)
	prefixHPN = "SVCP-HPN-" // hairpin: an endpoint reaching itself

	// masqMark is the packet mark bit that asks for masquerading
	// (kube-proxy's 0x4000, as in the nftables backend).
	masqMark = "0x4000"

	// maxComment is the longest comment the kernel's comment match keeps
	// (XT_MAX_COMMENT_LEN is 256 with the terminating NUL); iptables cuts
	// longer ones silently, so Render cuts them too.
	maxComment = 255
)

// tables are the tables svcproxy writes, in the order Sync restores them:
// filter first, so that a load balancer's firewall is in place before nat
// makes it reachable.
var tables = []string{tableFilter, tableNAT}

// family holds what differs between iptables and ip6tables.
type family struct {
	proxy.Family
	loopback   string
	rejectWith string
	recentMask string // as iptables-save prints the default --mask
}

var (
	ipv4 = &family{Family: proxy.IPv4, loopback: "127.0.0.0/8", rejectWith: "icmp-port-unreachable", recentMask: "255.255.255.255"}
	ipv6 = &family{Family: proxy.IPv6, loopback: "::1/128", rejectWith: "icmp6-port-unreachable",
		recentMask: "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"}
)

func familyFor(f proxy.Family) *family {
	if f == proxy.IPv6 {
		return ipv6
	}
	return ipv4
}

// chain is one of our chains with its rules, each rule being the text that
// follows "-A NAME " in iptables-save's output.
type chain struct {
	table string
	name  string
	rules []string
}

// Dispatch chains, rewritten whole by every sync from the rules each
// service contributes.
type dispatchID int

const (
	natServices dispatchID = iota
	natNodePorts
	filterServices
	filterNodePorts
	filterFirewall
	numDispatch
)

// fragment is what one service port contributes: its own chains, and its
// rules in the shared dispatch chains.
type fragment struct {
	chains   []*chain
	dispatch [numDispatch][]string
}

func (fr *fragment) add(table, name string, rules []string) string {
	fr.chains = append(fr.chains, &chain{table: table, name: name, rules: rules})
	return name
}

// jump is a rule svcproxy inserts (at position 1) into a built-in chain.
type jump struct {
	table, chain string
	spec         string // the rule as iptables-save prints it; no quoting needed
}

// jumps are the same in both families.
var jumps = []jump{
	{tableNAT, "PREROUTING", "-m comment --comment svcproxy -j " + chainServices},
	{tableNAT, "OUTPUT", "-m comment --comment svcproxy -j " + chainServices},
	{tableNAT, "POSTROUTING", "-m comment --comment svcproxy -j " + chainPostrouting},
	{tableFilter, "INPUT", "-m conntrack --ctstate NEW -m comment --comment svcproxy -j " + chainInput},
	{tableFilter, "FORWARD", "-m conntrack --ctstate NEW -m comment --comment svcproxy -j " + chainForward},
	{tableFilter, "OUTPUT", "-m conntrack --ctstate NEW -m comment --comment svcproxy -j " + chainOutput},
}

// builtinChains are the chains of the tables we use that iptables creates.
var builtinChains = map[string]bool{"PREROUTING": true, "INPUT": true, "FORWARD": true, "OUTPUT": true, "POSTROUTING": true}

// rule prints one rule in the order iptables-save prints its parts: source,
// destination, protocol, then matches in the order given (the comment
// first), then the target.
type rule struct {
	src, dst       string // prefixes, "" for none
	srcNot, dstNot bool
	proto          proxy.Protocol // "" for none
	comment        string         // the full `-m comment --comment X` or ""
	match          string         // further matches
	target         string         // "-j X ...", "-g X", or "" for none
}

func (r rule) String() string {
	var b strings.Builder
	b.Grow(len(r.src) + len(r.dst) + len(r.comment) + len(r.match) + len(r.target) + 24) // one allocation
	sep := func() {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
	}
	addr := func(neg bool, flag, v string) {
		if v == "" {
			return
		}
		sep()
		if neg {
			b.WriteString("! ")
		}
		b.WriteString(flag + " " + v)
	}
	addr(r.srcNot, "-s", r.src)
	addr(r.dstNot, "-d", r.dst)
	for _, s := range []string{protoFlag(r.proto), r.comment, r.match, r.target} {
		if s != "" {
			sep()
			b.WriteString(s)
		}
	}
	return b.String()
}

func protoFlag(p proxy.Protocol) string {
	if p == "" {
		return ""
	}
	return "-p " + p.Lower()
}

// portMatch is `-m tcp --dport 80` (the protocol's own match).
func portMatch(p proxy.Protocol, port uint16) string {
	return fmt.Sprintf("-m %s --dport %d", p.Lower(), port)
}

// addrString prints an address as iptables (glibc's inet_ntop) does: like
// netip, except that an IPv6 address whose first 96 bits are zero and whose
// 7th group is not is printed with an embedded IPv4 address ("::1.2.3.4").
func addrString(a netip.Addr) string {
	a = a.WithZone("")
	if a.Is6() && !a.Is4In6() {
		b := a.As16()
		if slices.Equal(b[:12], make([]byte, 12)) && (b[12] != 0 || b[13] != 0) {
			return "::" + netip.AddrFrom4([4]byte(b[12:])).String()
		}
	}
	return a.String()
}

func prefixString(p netip.Prefix) string {
	p = p.Masked()
	return addrString(p.Addr()) + "/" + strconv.Itoa(p.Bits())
}

func hostString(a netip.Addr) string { return prefixString(netip.PrefixFrom(a, a.BitLen())) }

func addrPortString(ap netip.AddrPort) string {
	if ap.Addr().Is4() {
		return addrString(ap.Addr()) + ":" + strconv.Itoa(int(ap.Port()))
	}
	return "[" + addrString(ap.Addr()) + "]:" + strconv.Itoa(int(ap.Port()))
}

// commentMatch is `-m comment --comment TEXT` for text of untrusted origin
// (service names come from manifests). Every byte outside [A-Za-z0-9._/:-]
// becomes '_', and the text is cut to 255 bytes, so that it can neither end
// the token nor the line in an iptables-restore payload. It is quoted as
// iptables-save quotes it: unless it is made only of [A-Za-z0-9_-].
func commentMatch(text string) string {
	b := []byte(text)
	if len(b) > maxComment {
		b = b[:maxComment]
	}
	bare := len(b) > 0
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		case c == '.', c == '/', c == ':':
			bare = false
		default:
			b[i] = '_'
		}
	}
	if bare {
		return "-m comment --comment " + string(b)
	}
	return `-m comment --comment "` + string(b) + `"`
}

// probability is --probability 1/n as iptables-save prints it: the kernel
// keeps it as a multiple of 2^-31, printed with 11 decimals. (The i-th of
// n rules of a cascade has 1/(n-i).)
func probability(n int) string {
	if n < len(probabilities) {
		return probabilities[n]
	}
	return formatProbability(n)
}

// probabilities holds probability(n) for the endpoint counts of nearly
// every Service, formatted once rather than per cascade step.
var probabilities = func() []string {
	p := make([]string, 256)
	for n := 1; n < len(p); n++ {
		p[n] = formatProbability(n)
	}
	return p
}()

func formatProbability(n int) string {
	v := math.Round(float64(1<<31) / float64(n))
	return fmt.Sprintf("%.11f", v/float64(1<<31))
}

// hashName is prefix + 16 base32 characters of the SHA-256 of parts (each
// length-prefixed, so that different parts never hash the same input).
func hashName(prefix string, parts ...string) string {
	h := sha256.New()
	var n [8]byte
	for _, p := range parts {
		binary.BigEndian.PutUint64(n[:], uint64(len(p)))
		h.Write(n[:])
		h.Write([]byte(p))
	}
	return prefix + base32.StdEncoding.EncodeToString(h.Sum(nil))[:16]
}

func endpointChain(key string, ap netip.AddrPort) string {
	return hashName(prefixSEP, key, addrPortString(ap))
}

func verdictTarget(f *family, v proxy.Verdict) string {
	if v == proxy.Drop {
		return "-j DROP"
	}
	return "-j REJECT --reject-with " + f.rejectWith
}

// service lays out one service port. A port whose protocol is not TCP,
// UDP or SCTP (Build never makes one) gets no rules.
func service(f *family, fs *proxy.FamilyState, sp *proxy.ServicePort) *fragment {
	fr := &fragment{}
	switch sp.Key.Protocol {
	case proxy.TCP, proxy.UDP, proxy.SCTP:
	default:
		return fr
	}
	key := sp.Key.String()
	cm := commentMatch(key)
	proto := sp.Key.Protocol
	hash := hashName("", key)

	// Endpoint choice. kube-proxy gives every endpoint a chain of its own
	// (hairpin masquerade, then DNAT), reached by a -m statistic cascade.
	// Those were nine chains in ten, and iptables-restore pays per chain:
	// every -j target, DNAT included, is looked up by name among the
	// declared chains (libxtables: 512 hash buckets of lists; libiptc: a
	// coarse index, then a list walk), so a cold restore is quadratic in
	// the chains (10k services, 111k chains: 55 % of
	// iptables-legacy-restore's CPU in strcmp).
	// Without affinity a port has no endpoint chain: each cascade step is
	// two rules drawing with the same probability, of which the packet
	// meets exactly one (their -s / ! -s exclude each other and are tested
	// before the draw) — from the endpoint's own address to SVCP-HPN-*
	// (mark for masquerade, then DNAT to the sender's address, which is
	// that endpoint's), from any other straight to DNAT. The last step
	// draws nothing: it marks a hairpin packet, then DNATs. The same
	// endpoint probabilities and the same packets masqueraded as with
	// kube-proxy's chains. With affinity (the -m recent lists are per
	// endpoint chain), or when two endpoints share an address (the
	// sender's address would not tell them apart), the port keeps
	// kube-proxy's endpoint chains.
	//
	// The endpoint chains and the rules choosing them carry no comment, as
	// in kube-proxy's large-cluster mode: they are nearly all the rules, and
	// a comment is a match of its own (a 256-byte one in the legacy table
	// blob, which every sync rewrites; an xt compat expression in nft), a
	// third of the time of a restore. The service's key is in the dispatch
	// rules that lead here.
	eps := unionEndpoints(sp.ClusterEndpoints, sp.LocalEndpoints)
	type epText struct{ src, dnat string } // -s ADDR/32, -j DNAT --to-destination ADDR:PORT
	text := make(map[netip.AddrPort]epText, len(eps))
	for _, ep := range eps {
		ap := netip.AddrPortFrom(ep.IP, ep.Port)
		text[ap] = epText{hostString(ep.IP), "-j DNAT --to-destination " + addrPortString(ap)}
	}
	perEndpoint := sp.AffinitySeconds > 0 || sharedAddress(eps)
	sep := map[netip.AddrPort]string{}
	if perEndpoint {
		for _, ep := range eps {
			ap := netip.AddrPortFrom(ep.IP, ep.Port)
			name := endpointChain(key, ap)
			rules := []string{rule{src: text[ap].src, target: "-j " + chainMarkMasq}.String()}
			if sp.AffinitySeconds > 0 {
				rules = append(rules, rule{match: "-m recent --set --name " + name + " --mask " + f.recentMask + " --rsource"}.String())
			}
			rules = append(rules, rule{proto: proto, target: text[ap].dnat}.String())
			sep[ap] = fr.add(tableNAT, name, rules)
		}
	}
	hairpin, drawn := prefixHPN+hash, map[netip.AddrPort]bool{} // the endpoints a cascade step draws

	// Policy chains: pick an endpoint. The chain ClusterIP traffic enters
	// also masquerades it when it comes from off the cluster.
	masq := clusterIPMasquerade(fs, sp, cm)
	policyChain := func(prefix string, eps []proxy.Endpoint, internal bool) string {
		if len(eps) == 0 {
			return ""
		}
		rules := make([]string, 0, 1+3*len(eps))
		if internal && masq != "" {
			rules = append(rules, masq)
		}
		if sp.AffinitySeconds > 0 {
			for _, ep := range eps {
				c := sep[netip.AddrPortFrom(ep.IP, ep.Port)]
				rules = append(rules, rule{
					match:  fmt.Sprintf("-m recent --rcheck --seconds %d --reap --name %s --mask %s --rsource", sp.AffinitySeconds, c, f.recentMask),
					target: "-j " + c}.String())
			}
		}
		for i, ep := range eps {
			ap := netip.AddrPortFrom(ep.IP, ep.Port)
			var pick string
			if i < len(eps)-1 {
				pick = "-m statistic --mode random --probability " + probability(len(eps)-i)
			}
			if perEndpoint {
				rules = append(rules, rule{match: pick, target: "-j " + sep[ap]}.String())
				continue
			}
			t := text[ap]
			if pick == "" {
				rules = append(rules, rule{src: t.src, target: "-j " + chainMarkMasq}.String(), rule{proto: proto, target: t.dnat}.String())
				continue
			}
			drawn[ap] = true
			rules = append(rules, rule{src: t.src, match: pick, target: "-j " + hairpin}.String(),
				rule{src: t.src, srcNot: true, proto: proto, match: pick, target: t.dnat}.String())
		}
		return fr.add(tableNAT, prefix+hash, rules)
	}
	clusterChain := policyChain(prefixSVC, sp.ClusterEndpoints, !sp.InternalPolicyLocal)
	localChain := policyChain(prefixSVL, sp.LocalEndpoints, sp.InternalPolicyLocal)
	if len(drawn) > 0 {
		rules := []string{rule{target: "-j " + chainMarkMasq}.String()}
		for _, ep := range eps {
			if ap := netip.AddrPortFrom(ep.IP, ep.Port); drawn[ap] {
				rules = append(rules, rule{src: text[ap].src, proto: proto, target: text[ap].dnat}.String())
			}
		}
		fr.add(tableNAT, hairpin, rules)
	}
	internalChain := clusterChain
	if sp.InternalPolicyLocal {
		internalChain = localChain
	}

	// External chain: the model's routes, in order.
	extChain := ""
	if routes := fs.ExternalRoutes(sp); len(routes) > 0 {
		var rules []string
		for _, r := range routes {
			base := rule{comment: cm}
			switch r.From {
			case proxy.PodSender:
				base.src = prefixString(r.Prefix)
			case proxy.NodeSender:
				base.match = "-m addrtype --src-type LOCAL"
			}
			if r.Masquerade {
				m := base
				m.target = "-j " + chainMarkMasq
				rules = append(rules, m.String())
			}
			target := clusterChain
			if r.Local {
				target = localChain
			}
			base.target = "-j " + target
			rules = append(rules, base.String())
		}
		extChain = fr.add(tableNAT, prefixEXT+hash, rules)
	}

	// Firewall chain: load-balancer source ranges, matched on the
	// connection's original destination.
	if len(sp.LoadBalancerIPs) > 0 && len(sp.SourceRanges) > 0 {
		var rules []string
		for _, r := range sp.SourceRanges {
			rules = append(rules, rule{src: prefixString(r), comment: cm, target: "-j RETURN"}.String())
		}
		rules = append(rules, rule{comment: cm, target: "-j DROP"}.String())
		fw := fr.add(tableFilter, prefixFW+hash, rules)
		for _, ip := range sp.LoadBalancerIPs {
			fr.dispatch[filterFirewall] = append(fr.dispatch[filterFirewall], rule{proto: proto, comment: cm,
				match:  fmt.Sprintf("-m conntrack --ctorigdst %s --ctorigdstport %d", addrString(ip), sp.Port),
				target: "-g " + fw}.String())
		}
	}

	// Dispatch rules.
	dest := func(id dispatchID, ip netip.Addr, port uint16, target string) {
		r := rule{proto: proto, comment: cm, match: portMatch(proto, port), target: target}
		if ip.IsValid() {
			r.dst = hostString(ip)
		}
		fr.dispatch[id] = append(fr.dispatch[id], r.String())
	}
	externalIPs := append(slices.Clone(sp.ExternalIPs), sp.LoadBalancerIPs...)
	if v := sp.InternalVerdict(); v == proxy.Forward {
		dest(natServices, sp.ClusterIP, sp.Port, "-g "+internalChain)
	} else {
		dest(filterServices, sp.ClusterIP, sp.Port, verdictTarget(f, v))
	}
	if extChain != "" {
		for _, ip := range externalIPs {
			dest(natServices, ip, sp.Port, "-g "+extChain)
		}
		if sp.NodePort != 0 {
			dest(natNodePorts, netip.Addr{}, sp.NodePort, "-g "+extChain)
		}
	}
	if v := sp.ExternalVerdict(); v != proxy.Forward && sp.ExternallyAccessible() {
		for _, ip := range externalIPs {
			dest(filterServices, ip, sp.Port, verdictTarget(f, v))
		}
		if sp.NodePort != 0 {
			dest(filterNodePorts, netip.Addr{}, sp.NodePort, verdictTarget(f, v))
		}
	}
	return fr
}

// clusterIPMasquerade is the rule that marks ClusterIP traffic for
// masquerading, as the model decides; "" when none is.
func clusterIPMasquerade(fs *proxy.FamilyState, sp *proxy.ServicePort, cm string) string {
	all, notFrom, ok := fs.ClusterIPMasquerade()
	if !ok {
		return ""
	}
	r := rule{dst: hostString(sp.ClusterIP), proto: sp.Key.Protocol, comment: cm,
		match: portMatch(sp.Key.Protocol, sp.Port), target: "-j " + chainMarkMasq}
	if !all {
		r.src, r.srcNot = prefixString(notFrom), true
	}
	return r.String()
}

// sharedAddress reports whether two of eps (sorted by address) have the
// same IP.
func sharedAddress(eps []proxy.Endpoint) bool {
	for i := 1; i < len(eps); i++ {
		if eps[i].IP == eps[i-1].IP {
			return true
		}
	}
	return false
}

func unionEndpoints(a, b []proxy.Endpoint) []proxy.Endpoint {
	out := append(slices.Clone(a), b...)
	slices.SortFunc(out, func(x, y proxy.Endpoint) int {
		return netip.AddrPortFrom(x.IP, x.Port).Compare(netip.AddrPortFrom(y.IP, y.Port))
	})
	return slices.CompactFunc(out, func(x, y proxy.Endpoint) bool { return x.IP == y.IP && x.Port == y.Port })
}

// nodePortRules are the rules of a per-hook chain that send NodePort
// traffic to the table's SVCP-NODEPORTS; none when the family accepts no
// NodePorts.
func nodePortRules(f *family, np proxy.NodePortMatch) []string {
	if np.AllLocal {
		return []string{rule{dst: f.loopback, dstNot: true, match: "-m addrtype --dst-type LOCAL", target: "-j " + chainNodePorts}.String()}
	}
	var out []string
	for _, a := range np.Addresses {
		out = append(out, rule{dst: hostString(a), target: "-j " + chainNodePorts}.String())
	}
	return out
}

// skeleton returns the fixed chains of a family, the dispatch chains
// filled from frags (in service order).
func skeleton(f *family, fs *proxy.FamilyState, frags []*fragment) []*chain {
	gather := func(id dispatchID, tail ...string) []string {
		var out []string
		for _, fr := range frags {
			out = append(out, fr.dispatch[id]...)
		}
		return append(out, tail...)
	}
	nodePorts := nodePortRules(f, fs.NodePorts)
	toFirewall, toServices := "-j "+chainFirewall, "-j "+chainServices
	return []*chain{
		{tableNAT, chainServices, gather(natServices, nodePorts...)},
		{tableNAT, chainNodePorts, gather(natNodePorts)},
		{tableNAT, chainMarkMasq, []string{"-j MARK --set-xmark " + masqMark + "/" + masqMark}},
		{tableNAT, chainPostrouting, []string{
			"-m mark ! --mark " + masqMark + "/" + masqMark + " -j RETURN",
			"-j MARK --set-xmark " + masqMark + "/0x0",
			"-j MASQUERADE --random-fully",
		}},
		{tableFilter, chainInput, append(append([]string{toFirewall}, nodePorts...), toServices)},
		{tableFilter, chainForward, []string{toFirewall, toServices}},
		{tableFilter, chainOutput, []string{toFirewall, toServices}},
		{tableFilter, chainFirewall, gather(filterFirewall)},
		{tableFilter, chainServices, gather(filterServices)},
		{tableFilter, chainNodePorts, gather(filterNodePorts)},
	}
}
