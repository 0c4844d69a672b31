package nft

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/svcproxy/svcproxy/proxy"
)

// A rule is a list of statements. Each statement knows two forms of
// itself: the text `nft list` prints for it, and the netlink expressions
// that nft would generate for that text. Tests on a real kernel check that
// the two agree (the kernel's listing of what the expressions programmed
// equals the text).
type stmt interface {
	text(f *family) string
	exprs(f *family, e *encoder) []expr.Any
}

type rule []stmt

func (r rule) text(f *family) string {
	parts := make([]string, len(r))
	for i, s := range r {
		parts[i] = s.text(f)
	}
	return strings.Join(parts, " ")
}

// family holds what differs between the ip and ip6 tables.
type family struct {
	proxy.Family
	table    nftables.TableFamily
	keyword  string // "ip" or "ip6"
	addrLen  uint32
	saddrOff uint32
	daddrOff uint32
	addrType nftables.SetDatatype
	// Registers nft uses for the 2nd and 3rd part of addr . proto . port.
	protoReg, portReg uint32
	loopback          netip.Prefix
	rejectCode        uint8 // ICMP port unreachable / ICMPv6 port unreachable
	natFamily         uint32
}

var (
	ipv4 = &family{
		Family: proxy.IPv4, table: nftables.TableFamilyIPv4, keyword: "ip", addrLen: 4, saddrOff: 12, daddrOff: 16,
		addrType: nftables.TypeIPAddr, protoReg: 9, portReg: 10, loopback: netip.MustParsePrefix("127.0.0.0/8"),
		rejectCode: 3, natFamily: unix.NFPROTO_IPV4,
	}
	ipv6 = &family{
		Family: proxy.IPv6, table: nftables.TableFamilyIPv6, keyword: "ip6", addrLen: 16, saddrOff: 8, daddrOff: 24,
		addrType: nftables.TypeIP6Addr, protoReg: 2, portReg: 13, loopback: netip.MustParsePrefix("::1/128"),
		rejectCode: 4, natFamily: unix.NFPROTO_IPV6,
	}
)

func familyFor(f proxy.Family) *family {
	if f == proxy.IPv6 {
		return ipv6
	}
	return ipv4
}

func protoNum(p proxy.Protocol) byte {
	switch p {
	case proxy.UDP:
		return unix.IPPROTO_UDP
	case proxy.SCTP:
		return unix.IPPROTO_SCTP
	}
	return unix.IPPROTO_TCP
}

func be16(v uint16) []byte { return binaryutil.BigEndian.PutUint16(v) }
func ne32(v uint32) []byte { return binaryutil.NativeEndian.PutUint32(v) }

// verdict ends a rule or is the value of a map element.
type verdict struct {
	kind  expr.VerdictKind
	chain string
}

func jump(c string) verdict { return verdict{kind: expr.VerdictJump, chain: c} }
func goTo(c string) verdict { return verdict{kind: expr.VerdictGoto, chain: c} }

var (
	vReturn = verdict{kind: expr.VerdictReturn}
	vDrop   = verdict{kind: expr.VerdictDrop}
)

func (v verdict) text(*family) string {
	switch v.kind {
	case expr.VerdictJump:
		return "jump " + v.chain
	case expr.VerdictGoto:
		return "goto " + v.chain
	case expr.VerdictReturn:
		return "return"
	case expr.VerdictDrop:
		return "drop"
	}
	return "accept"
}

func (v verdict) exprs(*family, *encoder) []expr.Any {
	return []expr.Any{&expr.Verdict{Kind: v.kind, Chain: v.chain}}
}

// ctStateNew is `ct state new`.
type ctStateNew struct{}

func (ctStateNew) text(*family) string { return "ct state new" }
func (ctStateNew) exprs(*family, *encoder) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: ne32(expr.CtStateBitNEW), Xor: ne32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ne32(0)},
	}
}

// addrMatch is `ip saddr 10.0.0.0/8`, `ip daddr != 127.0.0.0/8`, or a
// single address.
type addrMatch struct {
	src    bool
	negate bool
	prefix netip.Prefix
}

func (m addrMatch) field() string {
	if m.src {
		return "saddr"
	}
	return "daddr"
}

func (m addrMatch) text(f *family) string {
	op := ""
	if m.negate {
		op = "!= "
	}
	v := m.prefix.String()
	if m.prefix.IsSingleIP() {
		v = m.prefix.Addr().String()
	}
	return fmt.Sprintf("%s %s %s%s", f.keyword, m.field(), op, v)
}

func (m addrMatch) offset(f *family) uint32 {
	if m.src {
		return f.saddrOff
	}
	return f.daddrOff
}

// exprs mirror nft: a byte-aligned prefix loads just its bytes; any other
// prefix loads the whole address and masks it.
func (m addrMatch) exprs(f *family, _ *encoder) []expr.Any {
	op := expr.CmpOpEq
	if m.negate {
		op = expr.CmpOpNeq
	}
	addr := m.prefix.Masked().Addr().AsSlice()
	bits := m.prefix.Bits()
	if bits%8 == 0 {
		n := uint32(bits / 8)
		return []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: m.offset(f), Len: n},
			&expr.Cmp{Op: op, Register: 1, Data: addr[:n]},
		}
	}
	maskBytes := make([]byte, f.addrLen)
	for i := 0; i < bits; i++ {
		maskBytes[i/8] |= 0x80 >> (i % 8)
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: m.offset(f), Len: f.addrLen},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: f.addrLen, Mask: maskBytes, Xor: make([]byte, f.addrLen)},
		&expr.Cmp{Op: op, Register: 1, Data: addr},
	}
}

// portMatch is `tcp dport 80`.
type portMatch struct {
	proto proxy.Protocol
	port  uint16
}

func (m portMatch) text(*family) string { return fmt.Sprintf("%s dport %d", m.proto.Lower(), m.port) }
func (m portMatch) exprs(*family, *encoder) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{protoNum(m.proto)}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: be16(m.port)},
	}
}

// fibLocal is `fib saddr type local` or `fib daddr type local`.
type fibLocal struct{ src bool }

func (m fibLocal) text(*family) string {
	if m.src {
		return "fib saddr type local"
	}
	return "fib daddr type local"
}
func (m fibLocal) exprs(*family, *encoder) []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: 1, ResultADDRTYPE: true, FlagSADDR: m.src, FlagDADDR: !m.src},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ne32(unix.RTN_LOCAL)},
	}
}

// dispatch is `ip daddr . meta l4proto . th dport vmap @m` (withAddr) or
// `meta l4proto . th dport vmap @m`.
type dispatch struct {
	withAddr bool
	set      string
}

func (d dispatch) text(f *family) string {
	if d.withAddr {
		return fmt.Sprintf("%s daddr . meta l4proto . th dport vmap @%s", f.keyword, d.set)
	}
	return fmt.Sprintf("meta l4proto . th dport vmap @%s", d.set)
}

func (d dispatch) exprs(f *family, _ *encoder) []expr.Any {
	var out []expr.Any
	protoReg, portReg := uint32(1), uint32(9)
	if d.withAddr {
		out = append(out, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: f.daddrOff, Len: f.addrLen})
		protoReg, portReg = f.protoReg, f.portReg
	}
	return append(out,
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: protoReg},
		&expr.Payload{DestRegister: portReg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: 1, SetName: d.set, IsDestRegSet: true, DestRegister: 0},
	)
}

// inSet is `ip daddr @s` / `ip saddr @s`.
type inSet struct {
	src bool
	set string
}

func (m inSet) text(f *family) string {
	field := "daddr"
	if m.src {
		field = "saddr"
	}
	return fmt.Sprintf("%s %s @%s", f.keyword, field, m.set)
}

func (m inSet) exprs(f *family, _ *encoder) []expr.Any {
	off := f.daddrOff
	if m.src {
		off = f.saddrOff
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: f.addrLen},
		&expr.Lookup{SourceRegister: 1, SetName: m.set},
	}
}

// oneIn is `numgen random mod n 0`: true with probability 1/n. A
// cascade of them — 1/N, 1/(N-1), ..., 1/2, then unconditional — picks
// each of N endpoints with probability 1/N, using no set: the kernel finds
// sets by name in a list, so per-service sets make syncs quadratic.
type oneIn struct{ n int }

func (o oneIn) text(*family) string { return fmt.Sprintf("numgen random mod %d 0", o.n) }
func (o oneIn) exprs(*family, *encoder) []expr.Any {
	return []expr.Any{
		&expr.Numgen{Register: 1, Modulus: uint32(o.n), Type: unix.NFT_NG_RANDOM},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ne32(0)},
	}
}

// hairpin is `ip saddr . ip daddr @s`: after DNAT, a packet whose source
// is its destination (a pod sent to itself through a Service).
type hairpin struct{ set string }

func (h hairpin) text(f *family) string {
	return fmt.Sprintf("%[1]s saddr . %[1]s daddr @%[2]s", f.keyword, h.set)
}

func (h hairpin) exprs(f *family, _ *encoder) []expr.Any {
	second := uint32(9)
	if f.addrLen == 16 {
		second = 2
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: f.saddrOff, Len: f.addrLen},
		&expr.Payload{DestRegister: second, Base: expr.PayloadBaseNetworkHeader, Offset: f.daddrOff, Len: f.addrLen},
		&expr.Lookup{SourceRegister: 1, SetName: h.set},
	}
}

// refreshAffinity is `update @s { ip saddr }`: remember (or refresh) the
// client in the endpoint's affinity set.
type refreshAffinity struct{ set string }

func (u refreshAffinity) text(f *family) string {
	return fmt.Sprintf("update @%s { %s saddr }", u.set, f.keyword)
}
func (u refreshAffinity) exprs(f *family, _ *encoder) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: f.saddrOff, Len: f.addrLen},
		&expr.Dynset{SrcRegKey: 1, SetName: u.set, Operation: unix.NFT_DYNSET_OP_UPDATE},
	}
}

// dnat is `meta l4proto tcp dnat to 10.0.0.1:8080`.
type dnat struct {
	proto proxy.Protocol
	to    netip.AddrPort
}

func (d dnat) text(*family) string {
	return fmt.Sprintf("meta l4proto %s dnat to %s", d.proto.Lower(), d.to)
}
func (d dnat) exprs(f *family, _ *encoder) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{protoNum(d.proto)}},
		&expr.Immediate{Register: 1, Data: d.to.Addr().AsSlice()},
		&expr.Immediate{Register: 2, Data: be16(d.to.Port())},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: f.natFamily, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
	}
}

// MasqueradeMark is the packet mark bit that asks for masquerading. It is
// kube-proxy's bit (0x4000): set in the nat chains, tested and cleared in
// postrouting, so that other users of the mark keep their bits.
const MasqueradeMark = 0x4000

type markStmt uint8

const (
	markSet      markStmt = iota // meta mark set meta mark | 0x00004000
	markUnset                    // meta mark & 0x00004000 == 0x00000000
	markClear                    // meta mark set meta mark ^ 0x00004000
	masqueradeIt                 // masquerade fully-random
	rejectIt                     // reject
)

func (m markStmt) text(*family) string {
	switch m {
	case markSet:
		return fmt.Sprintf("meta mark set meta mark | 0x%08x", MasqueradeMark)
	case markUnset:
		return fmt.Sprintf("meta mark & 0x%08x == 0x00000000", MasqueradeMark)
	case markClear:
		return fmt.Sprintf("meta mark set meta mark ^ 0x%08x", MasqueradeMark)
	case masqueradeIt:
		return "masquerade fully-random"
	}
	return "reject"
}

func (m markStmt) exprs(f *family, _ *encoder) []expr.Any {
	load := &expr.Meta{Key: expr.MetaKeyMARK, Register: 1}
	store := &expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1}
	switch m {
	case markSet:
		return []expr.Any{load, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: ne32(^uint32(MasqueradeMark)), Xor: ne32(MasqueradeMark)}, store}
	case markUnset:
		return []expr.Any{load, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: ne32(MasqueradeMark), Xor: ne32(0)}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ne32(0)}}
	case markClear:
		return []expr.Any{load, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: ne32(^uint32(0)), Xor: ne32(MasqueradeMark)}, store}
	case masqueradeIt:
		return []expr.Any{&expr.Masq{FullyRandom: true}}
	}
	return []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: f.rejectCode}}
}

// dnatPick is `dnat ip to ip daddr . meta l4proto . th dport . numgen
// random mod N map @m` (byAddr) or `dnat ip to meta l4proto . th dport .
// numgen random mod N map @m`: one random draw picks entry 0..N-1 of the
// destination's endpoints in an endpoint map. The rule depends only on N,
// so services share it, and an endpoint replaced by another is a change of
// data in the map, which the kernel commits without re-validating the
// table. When the map has no entry for the destination (it has another
// count), the lookup's miss ends the rule and evaluation goes on with the
// next one.
type dnatPick struct {
	byAddr bool
	set    string
	n      int
}

func (d dnatPick) text(f *family) string {
	key := "meta l4proto . th dport"
	if d.byAddr {
		key = f.keyword + " daddr . " + key
	}
	return fmt.Sprintf("dnat %s to %s . numgen random mod %d map @%s", f.keyword, key, d.n, d.set)
}

func (d dnatPick) exprs(f *family, _ *encoder) []expr.Any {
	var out []expr.Any
	protoReg, portReg, numReg := uint32(1), uint32(9), uint32(10)
	if d.byAddr {
		out = append(out, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: f.daddrOff, Len: f.addrLen})
		protoReg, portReg, numReg = f.protoReg, f.portReg, f.portReg+1
	}
	// The endpoint's port follows its address: the next 32-bit register
	// for IPv4, the next 128-bit one (NFT_REG_2) for IPv6.
	dataPortReg := uint32(9)
	if f.addrLen == 16 {
		dataPortReg = 2
	}
	return append(out,
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: protoReg},
		&expr.Payload{DestRegister: portReg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Numgen{Register: numReg, Modulus: uint32(d.n), Type: unix.NFT_NG_RANDOM},
		&expr.Lookup{SourceRegister: 1, SetName: d.set, IsDestRegSet: true, DestRegister: 1},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: f.natFamily, RegAddrMin: 1, RegProtoMin: dataPortReg},
	)
}

// bucketPick stands, in the rules a shared chain is made from, for the
// dnatPick rules of the endpoint counts lo..hi (countBucket), into which
// sharedChain expands it; it never reaches the kernel. role is the map's
// role (pickCluster or pickLocal).
type bucketPick struct {
	byAddr bool
	role   string
	lo, hi int
}

func (p bucketPick) text(*family) string { return fmt.Sprintf("pick %s %d-%d", p.role, p.lo, p.hi) }
func (bucketPick) exprs(*family, *encoder) []expr.Any {
	panic("nft: a bucketPick reached the kernel; sharedChain expands it")
}
