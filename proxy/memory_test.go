package proxy

import (
	"encoding/binary"
	"hash/fnv"
	"net/netip"
	"testing"
	"unsafe"
)

// The hasher is FNV-1a over the fields' encodings, as hash/fnv computes
// it, and allocates nothing.
func TestHasherIsFNV1aWithoutAllocations(t *testing.T) {
	h, want := newHasher(), fnv.New64a()
	u64 := func(v uint64) { want.Write(binary.LittleEndian.AppendUint64(nil, v)) }
	h.u64(7)
	u64(7)
	h.str("default/web")
	u64(11)
	want.Write([]byte("default/web"))
	for _, a := range []netip.Addr{{}, netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("fe80::1%eth0")} {
		h.addr(a)
		b, _ := a.MarshalBinary()
		u64(uint64(len(b)))
		want.Write(b)
	}
	if h.sum != want.Sum64() {
		t.Errorf("hasher: %x, FNV-1a of the same bytes: %x", h.sum, want.Sum64())
	}

	sp := &ServicePort{Key: Key{Namespace: "default", Name: "web", Protocol: TCP}, ClusterIP: netip.MustParseAddr("10.96.0.1"), Port: 80}
	for i := range 10 {
		sp.ClusterEndpoints = append(sp.ClusterEndpoints, Endpoint{IP: netip.AddrFrom4([4]byte{10, 128, 0, byte(i)}), Port: 8080, NodeName: "node-1", Ready: true})
	}
	if n := testing.AllocsPerRun(10, func() { servicePortHash(sp) }); n != 0 {
		t.Errorf("servicePortHash: %v allocations", n)
	}
}

func TestEndpointTakes48Bytes(t *testing.T) {
	if n := unsafe.Sizeof(Endpoint{}); n != 48 {
		t.Errorf("Endpoint takes %d bytes", n)
	}
}
