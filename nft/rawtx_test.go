package nft

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/svcproxy/svcproxy/proxy"
)

// captured runs fn on a tx of a google/nftables connection that records
// the messages it would send, and returns them.
func captured(t *testing.T, fn func(*tx)) []netlink.Message {
	t.Helper()
	var got []netlink.Message
	c, err := nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
		for _, m := range req {
			if m.Header.Type != netlink.HeaderType(unix.NFNL_MSG_BATCH_BEGIN) && m.Header.Type != netlink.HeaderType(unix.NFNL_MSG_BATCH_END) {
				got = append(got, m)
			}
		}
		return req, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	fn(&tx{conn: c, nextID: 1, tables: map[*family]*nftables.Table{}, owner: &Backend{}})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	return got
}

// rawMessages splits a raw batch into its messages.
func rawMessages(t *testing.T, rb *rawBatch) []netlink.Message {
	t.Helper()
	var all []byte
	all = append(all, rb.head...)
	for _, c := range rb.chunks {
		all = append(all, c...)
	}
	all = append(all, rb.tail...)
	var out []netlink.Message
	for len(all) > 0 {
		var m netlink.Message
		n := binary.NativeEndian.Uint32(all)
		if err := m.UnmarshalBinary(all[:n]); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
		all = all[nlmsgAlign(int(n)):]
	}
	return out
}

func nlmsgAlign(n int) int { return (n + 3) &^ 3 }

// attrs decodes a message's attributes (after the nfgenmsg header) by
// type, the nested flag dropped.
func attrs(t *testing.T, m netlink.Message) map[uint16][]byte {
	t.Helper()
	ad, err := netlink.NewAttributeDecoder(m.Data[4:])
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint16][]byte{}
	for ad.Next() {
		out[ad.Type()&^unix.NLA_F_NESTED] = ad.Bytes()
	}
	return out
}

// listItems returns the payloads of the items of a nested list,
// whatever their attribute types (google/nftables numbers element list
// items 1, 2, 3...; nft numbers them all NFTA_LIST_ELEM).
func listItems(t *testing.T, b []byte) [][]byte {
	t.Helper()
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for ad.Next() {
		out = append(out, ad.Bytes())
	}
	return out
}

// The raw batches encode elements, chains and rules as google/nftables
// does (the kernel tests check what they program; this checks the bytes,
// without root).
func TestRawEncodingMatchesGoogleNftables(t *testing.T) {
	for _, f := range []*family{ipv4, ipv6} {
		addr := func(i int) netip.Addr {
			if f == ipv6 {
				return netip.MustParseAddr(fmt.Sprintf("fd00::%d", i+1))
			}
			return netip.MustParseAddr(fmt.Sprintf("10.0.0.%d", i+1))
		}
		sets := []struct {
			s   *setDef
			els []element
		}{
			{&setDef{name: mapServiceIPs, kind: destMap}, []element{
				{addr: addr(0), proto: proxy.TCP, port: 80, verdict: goTo("clusterip-ABCDEFGH")},
				{addr: addr(1), proto: proxy.UDP, port: 53, verdict: goTo(chainReject)},
				{addr: addr(2), proto: proxy.SCTP, port: 9, verdict: vDrop},
			}},
			{&setDef{name: mapNodePorts, kind: portMap}, []element{{proto: proxy.TCP, port: 30080, verdict: goTo("nodeport-X")}}},
			{&setDef{name: setNodePortIPs, kind: addrSet}, []element{{addr: addr(3)}, {addr: addr(4)}}},
			{&setDef{name: setHairpin, kind: hairpinSet}, []element{{addr: addr(5)}}},
			{&setDef{name: "clusterip-ABCDEFGH-cluster", kind: endpointMap}, []element{
				{addr: addr(0), proto: proxy.TCP, port: 80, index: 0, to: netip.AddrPortFrom(addr(6), 8080)},
				{addr: addr(0), proto: proxy.TCP, port: 80, index: 1, to: netip.AddrPortFrom(addr(7), 8443)},
			}},
			{&setDef{name: "nodeport-X-local", kind: nodePortEndpointMap}, []element{{proto: proxy.UDP, port: 30053, index: 3, to: netip.AddrPortFrom(addr(8), 53)}}},
		}
		for _, c := range sets {
			t.Run(f.keyword+"/"+c.s.name, func(t *testing.T) {
				want := captured(t, func(t2 *tx) {
					if err := t2.elements(f, c.s, c.els, false); err != nil {
						t.Fatal(err)
					}
				})
				rb := &rawBatch{}
				var seq uint32
				es := &elemStream{f: f, s: c.s, out: rb, seq: &seq}
				for _, e := range c.els {
					es.add(e)
				}
				es.finish()
				got := rawMessages(t, rb)
				if len(got) != 1 || len(want) != 1 {
					t.Fatalf("%d raw messages, %d google/nftables ones; want 1 each", len(got), len(want))
				}
				if got[0].Header.Type != want[0].Header.Type || got[0].Data[0] != want[0].Data[0] {
					t.Fatalf("type/family %v/%d, want %v/%d", got[0].Header.Type, got[0].Data[0], want[0].Header.Type, want[0].Data[0])
				}
				ga, wa := attrs(t, got[0]), attrs(t, want[0])
				for _, typ := range []uint16{unix.NFTA_SET_ELEM_LIST_TABLE, unix.NFTA_SET_ELEM_LIST_SET} {
					if !bytes.Equal(ga[typ], wa[typ]) {
						t.Errorf("attribute %d: %q, want %q", typ, ga[typ], wa[typ])
					}
				}
				gi, wi := listItems(t, ga[unix.NFTA_SET_ELEM_LIST_ELEMENTS]), listItems(t, wa[unix.NFTA_SET_ELEM_LIST_ELEMENTS])
				if len(gi) != len(wi) {
					t.Fatalf("%d elements, want %d", len(gi), len(wi))
				}
				for i := range gi {
					if !bytes.Equal(gi[i], wi[i]) {
						t.Errorf("element %d:\n got %x\nwant %x", i, gi[i], wi[i])
					}
				}
			})
		}

		t.Run(f.keyword+"/flush set", func(t *testing.T) {
			want := captured(t, func(t2 *tx) { t2.flushSetNamed(f, mapServiceIPs) })
			rb := &rawBatch{}
			rb.addTail(flushSetMsg(nil, 1, f, mapServiceIPs))
			got := rawMessages(t, rb)
			if len(got) != 1 || len(want) != 1 || got[0].Header.Type != want[0].Header.Type || !bytes.Equal(got[0].Data, want[0].Data) {
				t.Errorf("got %+v, want %+v", got, want)
			}
		})

		// Chains: a base chain, and a shared one with a pick and a mark.
		sk := skeleton(f, &proxy.FamilyState{Family: f.Family})
		var fr fragment
		fr.sharedChain(f, "clusterip", []rule{{markSet}, {bucketPick{byAddr: true, role: pickCluster, lo: 1, hi: 4}}})
		for _, ch := range append(sk.chains[:2:2], fr.chains[0]) {
			for _, flush := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/chain %s flush=%v", f.keyword, ch.name, flush), func(t *testing.T) {
					want := captured(t, func(t2 *tx) { t2.addChain(f, ch, flush) })
					rb := &rawBatch{}
					var seq uint32
					if _, err := appendChain(rb, nil, &seq, f, ch, flush); err != nil {
						t.Fatal(err)
					}
					got := rawMessages(t, rb)
					if len(got) != len(want) {
						t.Fatalf("%d raw messages, want %d", len(got), len(want))
					}
					for i := range got {
						if got[i].Header.Type != want[i].Header.Type {
							t.Fatalf("message %d: type %v, want %v", i, got[i].Header.Type, want[i].Header.Type)
						}
						// Rules are appended, as google/nftables asks;
						// it also asks an echo, which svcproxy never reads.
						if g, w := got[i].Header.Flags, want[i].Header.Flags&^(unix.NLM_F_ECHO|netlink.Acknowledge); g != w {
							t.Errorf("message %d: flags %v, want %v", i, g, w)
						}
						ga, wa := attrs(t, got[i]), attrs(t, want[i])
						if len(ga) != len(wa) {
							t.Errorf("message %d: attributes %v, want %v", i, ga, wa)
						}
						for typ, w := range wa {
							if !bytes.Equal(ga[typ], w) {
								t.Errorf("message %d, attribute %d:\n got %x\nwant %x", i, typ, ga[typ], w)
							}
						}
					}
				})
			}
		}
	}
}
