package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Full syncs send their set elements, chains and rules in transactions
// that svcproxy encodes itself, straight into the bytes handed to the
// kernel. google/nftables makes several small allocations per element,
// asks the kernel to echo every rule back, keeps every message of a
// transaction until Flush and then copies all of them twice more into one
// buffer; for the million elements and 20k rules of a 50k-service cold
// sync that was most of the sync's allocations and, as a transaction was
// held whole, a large part of its peak heap. A raw batch holds only
// encoded messages, in chunks sent as they are (one sendmsg with an iovec
// per chunk). Rule expressions are still encoded by google/nftables
// (expr.Marshal); sets, whose creation carries nft's type descriptions,
// are still created through it, in transactions of their own before.

const (
	// elemListMax bounds the encoded element list of one message: it is
	// one netlink attribute, whose length is 16 bits.
	elemListMax = 0xffff &^ 3
	// rawChunk is the allocation unit of a raw batch.
	rawChunk = 1 << 20
	// rawAckTimeout only guards against waiting forever for replies the
	// kernel has already queued (it processes a batch inside sendmsg).
	rawAckTimeout = time.Minute
)

// prefillBytes bounds a transaction that fills sets no packet can reach
// yet (see fullSync), so that little is held at once. A variable for
// tests.
var prefillBytes = 4 << 20

// rawBatch is one kernel transaction being encoded: head, then the
// chunks, then tail, each holding whole messages.
type rawBatch struct {
	head, tail []byte
	chunks     [][]byte
	spare      [][]byte // emptied chunks, for reuse
	msgs       int
	size       int // bytes of the chunks
	// Where the last message of each part starts: the last one sent alone
	// asks for an acknowledgement (see sendRaw).
	lastHead, lastChunk, lastTail int
}

// add appends one complete message to the chunks.
func (rb *rawBatch) add(msg []byte) {
	n := len(rb.chunks)
	if n == 0 || cap(rb.chunks[n-1])-len(rb.chunks[n-1]) < len(msg) {
		var c []byte
		if k := len(rb.spare); k > 0 && cap(rb.spare[k-1]) >= len(msg) {
			c, rb.spare = rb.spare[k-1], rb.spare[:k-1]
		} else {
			c = make([]byte, 0, max(rawChunk, len(msg)))
		}
		rb.chunks = append(rb.chunks, c)
		n++
	}
	rb.lastChunk = len(rb.chunks[n-1])
	rb.chunks[n-1] = append(rb.chunks[n-1], msg...)
	rb.msgs++
	rb.size += len(msg)
}

// addHead appends a message sent before the chunks.
func (rb *rawBatch) addHead(msg []byte) {
	rb.lastHead = len(rb.head)
	rb.head = append(rb.head, msg...)
	rb.msgs++
}

// addTail appends a message sent after the chunks.
func (rb *rawBatch) addTail(msg []byte) {
	rb.lastTail = len(rb.tail)
	rb.tail = append(rb.tail, msg...)
	rb.msgs++
}

// lastMsg is the message sent last.
func (rb *rawBatch) lastMsg() []byte {
	switch {
	case len(rb.tail) > 0:
		return rb.tail[rb.lastTail:]
	case rb.size > 0:
		return rb.chunks[len(rb.chunks)-1][rb.lastChunk:]
	}
	return rb.head[rb.lastHead:]
}

// reset empties the batch, keeping its chunks for reuse.
func (rb *rawBatch) reset() {
	for _, c := range rb.chunks {
		rb.spare = append(rb.spare, c[:0])
	}
	rb.chunks = rb.chunks[:0]
	rb.head, rb.tail = rb.head[:0], rb.tail[:0]
	rb.msgs, rb.size = 0, 0
}

// Netlink encoding: headers in host order, nftables values big-endian.
var ne = binary.NativeEndian

// beginMsg appends a netlink and nfnetlink header for an nftables message
// of family f and returns the message's offset (its length is set by
// endMsg).
func beginMsg(b []byte, typ uint16, flags uint16, seq uint32, fam byte) ([]byte, int) {
	off := len(b)
	b = ne.AppendUint32(b, 0)
	b = ne.AppendUint16(b, unix.NFNL_SUBSYS_NFTABLES<<8|typ)
	b = ne.AppendUint16(b, flags)
	b = ne.AppendUint32(b, seq)
	b = ne.AppendUint32(b, 0)
	b = append(b, fam, unix.NFNETLINK_V0, 0, 0)
	return b, off
}

func endMsg(b []byte, off int) { ne.PutUint32(b[off:], uint32(len(b)-off)) }

// attrStart appends an attribute header whose length attrEnd sets.
func attrStart(b []byte, typ uint16) ([]byte, int) {
	off := len(b)
	b = ne.AppendUint16(b, 0)
	b = ne.AppendUint16(b, typ)
	return b, off
}

// attrEnd sets the length of the attribute at off and pads it.
func attrEnd(b []byte, off int) []byte {
	ne.PutUint16(b[off:], uint16(len(b)-off))
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func attrBytes(b []byte, typ uint16, v []byte) []byte {
	b, off := attrStart(b, typ)
	return attrEnd(append(b, v...), off)
}

func attrString(b []byte, typ uint16, s string) []byte {
	b, off := attrStart(b, typ)
	b = append(b, s...)
	return attrEnd(append(b, 0), off)
}

// appendElem encodes one element of set s as an NFTA_LIST_ELEM, as
// google/nftables would (nlElement is the reference).
func appendElem(b []byte, f *family, s *setDef, e element) []byte {
	b, le := attrStart(b, unix.NFTA_LIST_ELEM|unix.NLA_F_NESTED)
	b, k := attrStart(b, unix.NFTA_SET_ELEM_KEY|unix.NLA_F_NESTED)
	b, v := attrStart(b, unix.NFTA_DATA_VALUE)
	b = appendKey(b, s, e)
	b = attrEnd(b, v)
	b = attrEnd(b, k)
	var d, vd int
	switch s.kind {
	case endpointMap, nodePortEndpointMap:
		b, d = attrStart(b, unix.NFTA_SET_ELEM_DATA|unix.NLA_F_NESTED)
		b, v = attrStart(b, unix.NFTA_DATA_VALUE)
		b = append(b, e.to.Addr().AsSlice()...)
		b = binary.BigEndian.AppendUint16(b, e.to.Port())
		b = append(b, 0, 0)
		b = attrEnd(b, v)
		b = attrEnd(b, d)
	case destMap, portMap:
		b, d = attrStart(b, unix.NFTA_SET_ELEM_DATA|unix.NLA_F_NESTED)
		b, vd = attrStart(b, unix.NFTA_DATA_VERDICT|unix.NLA_F_NESTED)
		var code [4]byte
		binary.BigEndian.PutUint32(code[:], uint32(e.verdict.kind))
		b = attrBytes(b, unix.NFTA_VERDICT_CODE, code[:])
		if e.verdict.chain != "" {
			b = attrString(b, unix.NFTA_VERDICT_CHAIN, e.verdict.chain)
		}
		b = attrEnd(b, vd)
		b = attrEnd(b, d)
	}
	return attrEnd(b, le)
}

// appendKey appends the key of e in set s: each part of a concatenation
// padded to 4 bytes.
func appendKey(b []byte, s *setDef, e element) []byte {
	protoPort := func(b []byte) []byte {
		b = append(b, protoNum(e.proto), 0, 0, 0)
		b = binary.BigEndian.AppendUint16(b, e.port)
		return append(b, 0, 0)
	}
	switch s.kind {
	case destMap:
		return protoPort(append(b, e.addr.AsSlice()...))
	case portMap:
		return protoPort(b)
	case hairpinSet:
		return append(append(b, e.addr.AsSlice()...), e.addr.AsSlice()...)
	case endpointMap:
		return ne.AppendUint32(protoPort(append(b, e.addr.AsSlice()...)), e.index)
	case nodePortEndpointMap:
		return ne.AppendUint32(protoPort(b), e.index)
	}
	return append(b, e.addr.AsSlice()...)
}

// elemStream fills NEWSETELEM messages for one set, each as full as the
// element list attribute allows, and hands every completed one to its
// batch.
type elemStream struct {
	f       *family
	s       *setDef
	out     *rawBatch
	seq     *uint32
	msg     []byte // the message being filled
	msgOff  int
	listOff int
	n       int
	scratch []byte
}

func (es *elemStream) add(e element) {
	es.scratch = appendElem(es.scratch[:0], es.f, es.s, e)
	if es.n > 0 && len(es.msg)-es.listOff+len(es.scratch) > elemListMax {
		es.finish()
	}
	if es.n == 0 {
		*es.seq++
		es.msg, es.msgOff = beginMsg(es.msg[:0], unix.NFT_MSG_NEWSETELEM, unix.NLM_F_REQUEST|unix.NLM_F_CREATE, *es.seq, byte(es.f.table))
		es.msg = attrString(es.msg, unix.NFTA_SET_ELEM_LIST_TABLE, TableName)
		es.msg = attrString(es.msg, unix.NFTA_SET_ELEM_LIST_SET, es.s.name)
		es.msg, es.listOff = attrStart(es.msg, unix.NFTA_SET_ELEM_LIST_ELEMENTS|unix.NLA_F_NESTED)
	}
	es.msg = append(es.msg, es.scratch...)
	es.n++
}

// finish completes the message being filled, if any, and hands it on.
func (es *elemStream) finish() {
	if es.n == 0 {
		return
	}
	es.msg = attrEnd(es.msg, es.listOff)
	endMsg(es.msg, es.msgOff)
	es.out.add(es.msg)
	es.msg, es.n = es.msg[:0], 0
}

// flushSetMsg appends a message removing every element of a set.
func flushSetMsg(b []byte, seq uint32, f *family, set string) []byte {
	b, off := beginMsg(b, unix.NFT_MSG_DELSETELEM, unix.NLM_F_REQUEST, seq, byte(f.table))
	b = attrString(b, unix.NFTA_SET_ELEM_LIST_TABLE, TableName)
	b = attrString(b, unix.NFTA_SET_ELEM_LIST_SET, set)
	endMsg(b, off)
	return b
}

// flushChainMsg appends a message removing every rule of a chain.
func flushChainMsg(b []byte, seq uint32, f *family, chain string) []byte {
	b, off := beginMsg(b, unix.NFT_MSG_DELRULE, unix.NLM_F_REQUEST, seq, byte(f.table))
	b = attrString(b, unix.NFTA_RULE_TABLE, TableName)
	b = attrString(b, unix.NFTA_RULE_CHAIN, chain)
	endMsg(b, off)
	return b
}

// appendChain appends to rb the messages that create chain c (a no-op if
// it exists) and append its rules, as tx.addChain does; with flush, the
// chain's rules are removed first. scratch is reused for each message and
// returned.
func appendChain(rb *rawBatch, scratch []byte, seq *uint32, f *family, c *chainDef, flush bool) ([]byte, error) {
	next := func() uint32 { *seq++; return *seq }
	b, off := beginMsg(scratch[:0], unix.NFT_MSG_NEWCHAIN, unix.NLM_F_REQUEST|unix.NLM_F_CREATE, next(), byte(f.table))
	b = attrString(b, unix.NFTA_CHAIN_TABLE, TableName)
	b = attrString(b, unix.NFTA_CHAIN_NAME, c.name)
	var h, list int
	if c.base != nil {
		var v [4]byte
		b, h = attrStart(b, unix.NFTA_CHAIN_HOOK|unix.NLA_F_NESTED)
		binary.BigEndian.PutUint32(v[:], uint32(c.base.hook))
		b = attrBytes(b, unix.NFTA_HOOK_HOOKNUM, v[:])
		binary.BigEndian.PutUint32(v[:], uint32(c.base.priority))
		b = attrBytes(b, unix.NFTA_HOOK_PRIORITY, v[:])
		b = attrEnd(b, h)
		binary.BigEndian.PutUint32(v[:], uint32(nftables.ChainPolicyAccept))
		b = attrBytes(b, unix.NFTA_CHAIN_POLICY, v[:])
		b = attrString(b, unix.NFTA_CHAIN_TYPE, string(c.base.typ))
	}
	endMsg(b, off)
	rb.add(b)
	if flush {
		b = flushChainMsg(b[:0], next(), f, c.name)
		rb.add(b)
	}
	for _, r := range c.rules {
		b, off = beginMsg(b[:0], unix.NFT_MSG_NEWRULE, unix.NLM_F_REQUEST|unix.NLM_F_CREATE|unix.NLM_F_APPEND, next(), byte(f.table))
		b = attrString(b, unix.NFTA_RULE_TABLE, TableName)
		b = attrString(b, unix.NFTA_RULE_CHAIN, c.name)
		b, list = attrStart(b, unix.NFTA_RULE_EXPRESSIONS|unix.NLA_F_NESTED)
		for _, st := range r {
			for _, e := range st.exprs(f, nil) {
				enc, err := expr.Marshal(byte(f.table), e)
				if err != nil {
					return b, fmt.Errorf("chain %s: %w", c.name, err)
				}
				b = attrBytes(b, unix.NFTA_LIST_ELEM|unix.NLA_F_NESTED, enc)
			}
		}
		b = attrEnd(b, list)
		endMsg(b, off)
		rb.add(b)
	}
	return b, nil
}

func batchMsg(typ uint16, seq uint32) []byte {
	b := ne.AppendUint32(nil, 0)
	b = ne.AppendUint16(b, typ)
	b = ne.AppendUint16(b, unix.NLM_F_REQUEST)
	b = ne.AppendUint32(b, seq)
	b = ne.AppendUint32(b, 0)
	b = append(b, unix.AF_UNSPEC, unix.NFNETLINK_V0)
	b = binary.BigEndian.AppendUint16(b, unix.NFNL_SUBSYS_NFTABLES)
	endMsg(b, 0)
	return b
}

// rawConn returns the backend's own netlink connection (also used for
// the ruleset generation), with socket buffers large enough for a whole
// batch.
func (b *Backend) rawConn() (*netlink.Conn, error) {
	if b.genConn == nil {
		cfg := &netlink.Config{}
		if b.netnsFD >= 0 {
			cfg.NetNS = b.netnsFD
		}
		c, err := netlink.Dial(unix.NETLINK_NETFILTER, cfg)
		if err != nil {
			return nil, fmt.Errorf("netlink: %w", err)
		}
		if err := bigBuffers(c); err != nil {
			c.Close()
			return nil, fmt.Errorf("netlink: %w", err)
		}
		b.genConn = c
	}
	return b.genConn, nil
}

func (b *Backend) closeRawConn() {
	if b.genConn != nil {
		b.genConn.Close()
		b.genConn = nil
	}
}

// sendRaw commits rb as one transaction; on error the kernel has applied
// none of it. Only the last message asks for an acknowledgement: the
// kernel processes a batch inside sendmsg and then replies, in message
// order, with an error for each refused message, or one for the whole
// batch if the commit fails, before the acknowledgements; so the batch
// committed if and only if the last message's acknowledgement is the
// first reply and says so. (google/nftables asks one for every message,
// and an echo of every rule: ~52k replies to read in a 50k cold sync.)
func (b *Backend) sendRaw(rb *rawBatch) error {
	if rb.msgs == 0 {
		return nil
	}
	c, err := b.rawConn()
	if err != nil {
		return err
	}
	last := rb.lastMsg()
	ne.PutUint16(last[6:], ne.Uint16(last[6:])|unix.NLM_F_ACK)
	b.seq++
	bufs := [][]byte{batchMsg(unix.NFNL_MSG_BATCH_BEGIN, b.seq)}
	if len(rb.head) > 0 {
		bufs = append(bufs, rb.head)
	}
	bufs = append(bufs, rb.chunks...)
	if len(rb.tail) > 0 {
		bufs = append(bufs, rb.tail)
	}
	b.seq++
	bufs = append(bufs, batchMsg(unix.NFNL_MSG_BATCH_END, b.seq))
	err = sendAndAck(c, bufs, ne.Uint32(last[8:]))
	if err != nil {
		// Unread replies would confuse the next exchange.
		b.closeRawConn()
		return fmt.Errorf("nftables transaction of %d messages: %w", rb.msgs, err)
	}
	b.lastMessages += rb.msgs
	b.txs++
	return nil
}

// sendAndAck sends bufs in one sendmsg and waits for the acknowledgement
// of message lastSeq; any error reply before it is the batch's failure.
func sendAndAck(c *netlink.Conn, bufs [][]byte, lastSeq uint32) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var sendErr error
	if err := rc.Write(func(fd uintptr) bool {
		_, sendErr = unix.SendmsgBuffers(int(fd), bufs, nil, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}, 0)
		return !errors.Is(sendErr, unix.EAGAIN)
	}); err != nil {
		return err
	}
	if sendErr != nil {
		return fmt.Errorf("sendmsg: %w", sendErr)
	}
	if err := c.SetReadDeadline(time.Now().Add(rawAckTimeout)); err != nil {
		return err
	}
	defer c.SetReadDeadline(time.Time{})
	for {
		replies, err := c.Receive()
		if err != nil {
			return err // an error reply: the batch was refused
		}
		for _, m := range replies {
			if m.Header.Type == netlink.Error && m.Header.Sequence == lastSeq {
				return nil
			}
		}
	}
}
