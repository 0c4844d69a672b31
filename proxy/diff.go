package proxy

import (
	"encoding/binary"
	"net/netip"
)

// hasher writes fields in a fixed order, each length-prefixed or fixed
// size, so that different contents never encode to the same bytes. It is
// FNV-1a (64 bits) computed in place: through hash/fnv's interface every
// string written and every address marshalled was an allocation, three
// per endpoint of a build.
type hasher struct{ sum uint64 }

const (
	fnvOffset64 = 14695981039346656037
	fnvPrime64  = 1099511628211
)

func newHasher() hasher { return hasher{sum: fnvOffset64} }

func (h *hasher) bytes(b []byte) {
	for _, c := range b {
		h.sum = (h.sum ^ uint64(c)) * fnvPrime64
	}
}

func (h *hasher) u64(v uint64) {
	var buf [8]byte
	binary.LittleEndian.PutUint64(buf[:], v)
	h.bytes(buf[:])
}

func (h *hasher) str(s string) {
	h.u64(uint64(len(s)))
	for i := 0; i < len(s); i++ {
		h.sum = (h.sum ^ uint64(s[i])) * fnvPrime64
	}
}

func (h *hasher) boolean(b bool) {
	if b {
		h.u64(1)
	} else {
		h.u64(0)
	}
}
func (h *hasher) addr(a netip.Addr) {
	var buf [16]byte
	b, _ := a.AppendBinary(buf[:0]) // as MarshalBinary
	h.u64(uint64(len(b)))
	h.bytes(b)
}
func (h *hasher) addrs(as []netip.Addr) {
	h.u64(uint64(len(as)))
	for _, a := range as {
		h.addr(a)
	}
}
func (h *hasher) prefixes(ps []netip.Prefix) {
	h.u64(uint64(len(ps)))
	for _, p := range ps {
		h.addr(p.Addr())
		h.u64(uint64(p.Bits()))
	}
}
func (h *hasher) endpoints(es []Endpoint) {
	h.u64(uint64(len(es)))
	for _, e := range es {
		h.addr(e.IP)
		h.u64(uint64(e.Port))
		h.str(e.NodeName)
		h.boolean(e.Local)
		h.boolean(e.Ready)
		h.boolean(e.Serving)
		h.boolean(e.Terminating)
	}
}

// servicePortHash covers every field of sp but Hash itself.
func servicePortHash(sp *ServicePort) uint64 {
	h := newHasher()
	h.str(sp.Key.Namespace)
	h.str(sp.Key.Name)
	h.str(string(sp.Key.Protocol))
	h.str(sp.Key.Port)
	h.addr(sp.ClusterIP)
	h.u64(uint64(sp.Port))
	h.u64(uint64(sp.NodePort))
	h.addrs(sp.ExternalIPs)
	h.addrs(sp.LoadBalancerIPs)
	h.prefixes(sp.SourceRanges)
	h.u64(uint64(sp.HealthCheckNodePort))
	h.boolean(sp.InternalPolicyLocal)
	h.boolean(sp.ExternalPolicyLocal)
	h.u64(uint64(sp.AffinitySeconds))
	h.endpoints(sp.ClusterEndpoints)
	h.endpoints(sp.LocalEndpoints)
	h.boolean(sp.HasEndpoints)
	h.str(sp.Topology)
	return h.sum
}

// globalHash covers the per-family settings shared by all services.
func globalHash(fs *FamilyState) uint64 {
	h := newHasher()
	h.u64(uint64(fs.Family))
	h.boolean(fs.MasqueradeAll)
	h.prefixes(fs.ClusterCIDRs)
	h.addr(fs.NodeIP)
	h.boolean(fs.NodePorts.AllLocal)
	h.addrs(fs.NodePorts.Addresses)
	return h.sum
}

// FamilyDiff is what changed in one family between two States.
type FamilyDiff struct {
	// GlobalChanged: the settings shared by all services changed
	// (FamilyState.GlobalHash); rules that embed them must be rewritten.
	GlobalChanged bool
	Added         []Key // in the new State only
	Changed       []Key // in both, with different hashes
	Removed       []Key // in the old State only
}

// Empty reports whether nothing changed.
func (d FamilyDiff) Empty() bool {
	return !d.GlobalChanged && len(d.Added)+len(d.Changed)+len(d.Removed) == 0
}

// Diff reports what changed from prev to s in family f, in O(n) over the
// two sorted service lists, comparing hashes only. A nil prev (or a nil
// family state) counts as empty: everything is added.
func (s *State) Diff(prev *State, f Family) FamilyDiff {
	var old []*ServicePort
	var d FamilyDiff
	cur := s.Family(f)
	if prev != nil && prev.Family(f) != nil {
		old = prev.Family(f).Services
		d.GlobalChanged = prev.Family(f).GlobalHash != cur.GlobalHash
	} else {
		d.GlobalChanged = true
	}
	if s.delta != nil && prev != nil && prev.id != 0 && s.delta.from == prev.id {
		// Only these keys can differ (Builder): O(changed).
		for _, k := range s.delta.keys[famIndex(f)] {
			o, n := prev.Family(f).Service(k), cur.Service(k)
			switch {
			case o == nil && n != nil:
				d.Added = append(d.Added, k)
			case o != nil && n == nil:
				d.Removed = append(d.Removed, k)
			case o != nil && o.Hash != n.Hash:
				d.Changed = append(d.Changed, k)
			}
		}
		return d
	}
	i, j := 0, 0
	for i < len(old) || j < len(cur.Services) {
		switch {
		case j == len(cur.Services) || (i < len(old) && old[i].Key.Compare(cur.Services[j].Key) < 0):
			d.Removed = append(d.Removed, old[i].Key)
			i++
		case i == len(old) || old[i].Key.Compare(cur.Services[j].Key) > 0:
			d.Added = append(d.Added, cur.Services[j].Key)
			j++
		default:
			if old[i].Hash != cur.Services[j].Hash {
				d.Changed = append(d.Changed, cur.Services[j].Key)
			}
			i++
			j++
		}
	}
	return d
}
