package nft

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"

	"github.com/svcproxy/svcproxy/proxy"
)

// TableName is the name of svcproxy's table in each of the ip and ip6
// families. Nothing outside these two tables is ever touched.
const TableName = "svcproxy"

type setKind uint8

const (
	destMap    setKind = iota // addr . proto . port : verdict
	portMap                   // proto . port : verdict
	addrSet                   // addr
	affinity                  // addr, filled by packets, entries expire
	hairpinSet                // addr . addr, one per endpoint address
	// endpointMap and nodePortEndpointMap choose a DNAT destination:
	// (addr . proto . port | proto . port) . index : endpoint addr . port,
	// where index is the rule's `numgen random mod N`.
	endpointMap
	nodePortEndpointMap
)

// setDef is a named set or map of the table.
type setDef struct {
	name    string
	kind    setKind
	timeout int32 // affinity: seconds
}

// element is a member of a set or map; which fields count depends on the
// set's kind.
type element struct {
	addr    netip.Addr
	proto   proxy.Protocol
	port    uint16
	verdict verdict
	// Endpoint maps: the index within the service's endpoints, and the
	// endpoint it stands for.
	index uint32
	to    netip.AddrPort
}

// baseChain describes the hook of a base chain.
type baseChain struct {
	typ      nftables.ChainType
	hook     nftables.ChainHook
	hookName string
	priority int32
}

type chainDef struct {
	name  string
	base  *baseChain
	rules []rule
	// shared chains are named by content alone and used by every service
	// port whose content is the same; they live while one uses them.
	shared bool
	// maps are the endpoint maps of a shared chain's picks, which live
	// and die with it.
	maps []*setDef
}

// text is the chain's body: the hook line, if any, then one line per rule.
func (c *chainDef) text(f *family) string {
	var b strings.Builder
	if c.base != nil {
		fmt.Fprintf(&b, "\t\ttype %s hook %s priority %s; policy accept;\n", c.base.typ, c.base.hookName, priorityText(c.base))
	}
	for _, r := range c.rules {
		b.WriteString("\t\t")
		b.WriteString(r.text(f))
		b.WriteString("\n")
	}
	return b.String()
}

// priorityText prints a priority as nft does: a standard priority valid
// for the hook by name, one within 10 of it as "name +/- n", any other as
// a number.
func priorityText(b *baseChain) string {
	std := []struct {
		name string
		val  int32
		hook string // "" for every hook
	}{{"raw", -300, ""}, {"mangle", -150, ""}, {"dstnat", -100, "prerouting"}, {"filter", 0, ""}, {"security", 50, ""}, {"srcnat", 100, "postrouting"}}
	for _, s := range std {
		if s.hook != "" && s.hook != b.hookName {
			continue
		}
		switch d := b.priority - s.val; {
		case d == 0:
			return s.name
		case d > 0 && d <= 10:
			return fmt.Sprintf("%s + %d", s.name, d)
		case d < 0 && d >= -10:
			return fmt.Sprintf("%s - %d", s.name, -d)
		}
	}
	return fmt.Sprint(b.priority)
}

func (s *setDef) typeText(f *family) string {
	switch s.kind {
	case destMap:
		return fmt.Sprintf("%s_addr . inet_proto . inet_service : verdict", f.addrTypeName())
	case portMap:
		return "inet_proto . inet_service : verdict"
	case hairpinSet:
		return fmt.Sprintf("%[1]s_addr . %[1]s_addr", f.addrTypeName())
	case endpointMap:
		return fmt.Sprintf("%[1]s_addr . inet_proto . inet_service . mark : %[1]s_addr . inet_service", f.addrTypeName())
	case nodePortEndpointMap:
		return fmt.Sprintf("inet_proto . inet_service . mark : %s_addr . inet_service", f.addrTypeName())
	}
	return f.addrTypeName() + "_addr"
}

func (f *family) addrTypeName() string {
	if f.Family == proxy.IPv6 {
		return "ipv6"
	}
	return "ipv4"
}

func (s *setDef) isMap() bool {
	switch s.kind {
	case destMap, portMap, endpointMap, nodePortEndpointMap:
		return true
	}
	return false
}

func (s *setDef) elemText(e element) string {
	switch s.kind {
	case destMap:
		return fmt.Sprintf("%s . %s . %d : %s", e.addr, e.proto.Lower(), e.port, e.verdict.text(nil))
	case portMap:
		return fmt.Sprintf("%s . %d : %s", e.proto.Lower(), e.port, e.verdict.text(nil))
	case hairpinSet:
		return fmt.Sprintf("%s . %s", e.addr, e.addr)
	case endpointMap:
		return fmt.Sprintf("%s . %s . %d . 0x%08x : %s . %d", e.addr, e.proto.Lower(), e.port, e.index, e.to.Addr(), e.to.Port())
	case nodePortEndpointMap:
		return fmt.Sprintf("%s . %d . 0x%08x : %s . %d", e.proto.Lower(), e.port, e.index, e.to.Addr(), e.to.Port())
	}
	return e.addr.String()
}

// perLine is how many elements nft prints on one line of a set listing:
// IPv4 addresses two by two, the rest one by one.
func (s *setDef) perLine(f *family) int {
	switch {
	case s.kind == addrSet && f.Family == proxy.IPv4:
		return 2
	}
	return 1
}

// formatElements prints `elements = { ... }` the way nft lists it, with
// the elements sorted as text (the kernel's own order is arbitrary).
func formatElements(texts []string, perLine int) string {
	slices.Sort(texts)
	var b strings.Builder
	b.WriteString("\t\telements = { ")
	for i, t := range texts {
		if i > 0 {
			if i%perLine == 0 {
				b.WriteString(",\n\t\t\t     ")
			} else {
				b.WriteString(", ")
			}
		}
		b.WriteString(t)
	}
	b.WriteString(" }\n")
	return b.String()
}

// table is the complete desired content of one family's table.
type table struct {
	fam    *family
	sets   map[string]*setDef
	elems  map[string][]element // by set name
	chains map[string]*chainDef
	// hairpin is the set of addresses already in @hairpin-ips.
	hairpin map[netip.Addr]bool
}

func newTable(f *family) *table {
	return &table{fam: f, sets: map[string]*setDef{}, elems: map[string][]element{}, chains: map[string]*chainDef{}, hairpin: map[netip.Addr]bool{}}
}

// text prints the table as `nft list table` does, with sets and chains in
// name order (the kernel lists them in creation order; Canonical sorts a
// kernel listing the same way).
func (t *table) text() string {
	var blocks []string
	for _, name := range sortedKeys(t.sets) {
		s := t.sets[name]
		var b strings.Builder
		word := "set"
		if s.isMap() {
			word = "map"
		}
		fmt.Fprintf(&b, "\t%s %s {\n\t\ttype %s\n", word, s.name, s.typeText(t.fam))
		if s.kind == affinity {
			// The kernel gives a set filled from the packet path a maximum
			// size of 65535 itself; sending that size as a hint would make
			// it allocate a hash table for 65535 elements up front.
			fmt.Fprintf(&b, "\t\tsize 65535\n\t\tflags dynamic,timeout\n\t\ttimeout %s\n", durationText(s.timeout))
		}
		if es := t.elems[name]; len(es) > 0 {
			texts := make([]string, len(es))
			for i, e := range es {
				texts[i] = s.elemText(e)
			}
			b.WriteString(formatElements(texts, s.perLine(t.fam)))
		}
		b.WriteString("\t}\n")
		blocks = append(blocks, b.String())
	}
	for _, name := range sortedKeys(t.chains) {
		c := t.chains[name]
		blocks = append(blocks, fmt.Sprintf("\tchain %s {\n%s\t}\n", c.name, c.text(t.fam)))
	}
	return fmt.Sprintf("table %s %s {\n%s}\n", t.fam.keyword, TableName, strings.Join(blocks, "\n"))
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// durationText prints seconds as nft prints a timeout: "3h", "1m30s",
// "1d2h3m4s".
func durationText(sec int32) string {
	if sec <= 0 {
		return "0s"
	}
	var b strings.Builder
	for _, u := range []struct {
		n    int32
		unit string
	}{{86400, "d"}, {3600, "h"}, {60, "m"}, {1, "s"}} {
		if v := sec / u.n; v > 0 {
			fmt.Fprintf(&b, "%d%s", v, u.unit)
			sec %= u.n
		}
	}
	return b.String()
}
