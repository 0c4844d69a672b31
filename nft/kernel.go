package nft

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// maxMessages bounds the netlink messages of one google/nftables
// transaction (a variable for tests). It asks an ACK for every message and
// reads them after sending the whole batch, so the ACKs of one transaction
// must fit the socket's receive buffer (socketBuffer, forced as root).
// Measured: see docs/performance.md.
var maxMessages = 20000

const (
	socketBuffer = 64 << 20
	// elemListBytes bounds the encoded elements of one message: the
	// element list is one netlink attribute, whose length is 16 bits.
	elemListBytes = 48 << 10
)

// tx accumulates one kernel transaction.
type tx struct {
	conn   *nftables.Conn
	msgs   int
	nextID uint32
	tables map[*family]*nftables.Table
	// counter, if set, accumulates the messages of flushed transactions.
	counter *int
	owner   *Backend
	// validating counts the messages after which the kernel re-validates
	// the whole table at commit (O(table)): new rules, and element adds
	// with a jump or goto.
	validating int
}

func (b *Backend) newTx() (*tx, error) {
	if b.conn == nil {
		opts := []nftables.ConnOption{nftables.AsLasting(), nftables.WithSockOptions(bigBuffers)}
		if b.netnsFD >= 0 {
			opts = append(opts, nftables.WithNetNSFd(b.netnsFD))
		}
		c, err := nftables.New(opts...)
		if err != nil {
			return nil, fmt.Errorf("netlink: %w", err)
		}
		b.conn = c
	}
	return &tx{conn: b.conn, nextID: 1, tables: map[*family]*nftables.Table{}, counter: &b.lastMessages, owner: b}, nil
}

// bigBuffers raises the socket buffers past the system limits (root only;
// without root the normal limits stay and large transactions are split
// more finely by maxMessages anyway).
func bigBuffers(c *netlink.Conn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	return rc.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, socketBuffer)
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, socketBuffer)
	})
}

func (t *tx) table(f *family) *nftables.Table {
	if tb, ok := t.tables[f]; ok {
		return tb
	}
	tb := &nftables.Table{Name: TableName, Family: f.table}
	t.tables[f] = tb
	return tb
}

func (t *tx) addTable(f *family) {
	t.conn.AddTable(t.table(f))
	t.msgs++
}

func (t *tx) nlSet(f *family, s *setDef) *nftables.Set {
	ns := &nftables.Set{Table: t.table(f), Name: s.name}
	switch s.kind {
	case destMap:
		ns.IsMap, ns.Concatenation = true, true
		ns.KeyType = nftables.MustConcatSetType(f.addrType, nftables.TypeInetProto, nftables.TypeInetService)
		ns.DataType = nftables.TypeVerdict
	case portMap:
		ns.IsMap, ns.Concatenation = true, true
		ns.KeyType = nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService)
		ns.DataType = nftables.TypeVerdict
	case addrSet:
		ns.KeyType = f.addrType
	case hairpinSet:
		ns.Concatenation = true
		ns.KeyType = nftables.MustConcatSetType(f.addrType, f.addrType)
	case affinity:
		ns.KeyType = f.addrType
		ns.Dynamic, ns.HasTimeout = true, true
		ns.Timeout = secs(s.timeout)
	case endpointMap:
		ns.IsMap, ns.Concatenation = true, true
		ns.KeyType = nftables.MustConcatSetType(f.addrType, nftables.TypeInetProto, nftables.TypeInetService, nftables.TypeMark)
		ns.DataType = nftables.MustConcatSetType(f.addrType, nftables.TypeInetService)
	case nodePortEndpointMap:
		ns.IsMap, ns.Concatenation = true, true
		ns.KeyType = nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService, nftables.TypeMark)
		ns.DataType = nftables.MustConcatSetType(f.addrType, nftables.TypeInetService)
	}
	return ns
}

func (t *tx) addSet(f *family, s *setDef) error {
	ns := t.nlSet(f, s)
	ns.ID = t.id()
	t.msgs++
	return t.conn.AddSet(ns, nil)
}

func (t *tx) id() uint32 {
	t.nextID++
	return t.nextID
}

func (t *tx) delSet(f *family, name string) {
	t.conn.DelSet(&nftables.Set{Table: t.table(f), Name: name})
	t.msgs++
}

// flushSetNamed removes all elements of a set known only by name (the
// kernel needs no more to flush it).
func (t *tx) flushSetNamed(f *family, name string) {
	t.conn.FlushSet(&nftables.Set{Table: t.table(f), Name: name})
	t.msgs++
}

func (t *tx) chainRef(f *family, name string) *nftables.Chain {
	return &nftables.Chain{Name: name, Table: t.table(f)}
}

// addChain creates the chain (a no-op if it exists) and appends its rules.
// With flush, the chain's current rules are removed first, in the same
// transaction.
func (t *tx) addChain(f *family, c *chainDef, flush bool) {
	nc := t.chainRef(f, c.name)
	if c.base != nil {
		nc.Type = c.base.typ
		nc.Hooknum = nftables.ChainHookRef(c.base.hook)
		nc.Priority = nftables.ChainPriorityRef(nftables.ChainPriority(c.base.priority))
		accept := nftables.ChainPolicyAccept
		nc.Policy = &accept
	}
	t.conn.AddChain(nc)
	t.msgs++
	if flush {
		t.conn.FlushChain(nc)
		t.msgs++
	}
	for _, r := range c.rules {
		var exprs []expr.Any
		for _, s := range r {
			exprs = append(exprs, s.exprs(f, &encoder{tx: t, f: f})...)
		}
		t.conn.AddRule(&nftables.Rule{Table: nc.Table, Chain: nc, Exprs: exprs})
		t.msgs++
		t.validating++
	}
}

func (t *tx) flushChain(f *family, name string) {
	t.conn.FlushChain(t.chainRef(f, name))
	t.msgs++
}

func (t *tx) delChain(f *family, name string) {
	t.conn.DelChain(t.chainRef(f, name))
	t.msgs++
}

// elements adds (or, with del, deletes) elements of one set, as many per
// message as fit one netlink attribute.
func (t *tx) elements(f *family, s *setDef, els []element, del bool) error {
	ns := t.nlSet(f, s)
	send := func(nl []nftables.SetElement) error {
		if len(nl) == 0 {
			return nil
		}
		t.msgs++
		if del {
			return t.conn.SetDeleteElements(ns, nl)
		}
		if slices.ContainsFunc(nl, func(e nftables.SetElement) bool {
			return e.VerdictData != nil && (e.VerdictData.Kind == expr.VerdictJump || e.VerdictData.Kind == expr.VerdictGoto)
		}) {
			t.validating++
		}
		return t.conn.SetAddElements(ns, nl)
	}
	var batch []nftables.SetElement
	size := 0
	for _, e := range els {
		el := nlElement(f, s, e)
		// Key, verdict chain name, and the attribute headers around them.
		n := len(el.Key) + len(el.Val) + len(e.verdict.chain) + 48
		if size+n > elemListBytes {
			if err := send(batch); err != nil {
				return err
			}
			batch, size = nil, 0
		}
		batch = append(batch, el)
		size += n
	}
	return send(batch)
}

func nlElement(f *family, s *setDef, e element) nftables.SetElement {
	var key []byte
	pad := func(b []byte) []byte { return append(b, make([]byte, (4-len(b)%4)%4)...) }
	switch s.kind {
	case destMap:
		key = append(key, e.addr.AsSlice()...)
		key = append(key, pad([]byte{protoNum(e.proto)})...)
		key = append(key, pad(be16(e.port))...)
	case portMap:
		key = append(key, pad([]byte{protoNum(e.proto)})...)
		key = append(key, pad(be16(e.port))...)
	case hairpinSet:
		key = append(e.addr.AsSlice(), e.addr.AsSlice()...)
	case endpointMap:
		key = append(key, e.addr.AsSlice()...)
		key = append(key, pad([]byte{protoNum(e.proto)})...)
		key = append(key, pad(be16(e.port))...)
		key = append(key, ne32(e.index)...)
	case nodePortEndpointMap:
		key = append(key, pad([]byte{protoNum(e.proto)})...)
		key = append(key, pad(be16(e.port))...)
		key = append(key, ne32(e.index)...)
	default:
		key = e.addr.AsSlice()
	}
	el := nftables.SetElement{Key: key}
	switch s.kind {
	case endpointMap, nodePortEndpointMap:
		el.Val = append(e.to.Addr().AsSlice(), pad(be16(e.to.Port()))...)
	case destMap, portMap:
		el.VerdictData = &expr.Verdict{Kind: e.verdict.kind, Chain: e.verdict.chain}
	}
	return el
}

// flush sends the transaction; on error the kernel has applied none of it.
func (t *tx) flush() error {
	if t.msgs == 0 {
		return nil
	}
	if err := t.conn.Flush(); err != nil {
		// The connection may hold unread replies or a sticky error: start
		// the next transaction on a fresh one.
		t.owner.closeConn()
		return fmt.Errorf("nftables transaction of %d messages: %w", t.msgs, err)
	}
	if t.counter != nil {
		*t.counter += t.msgs
		t.owner.lastValidating += t.validating
	}
	t.owner.txs++
	return nil
}

// closeConn drops the lasting netlink connection.
func (b *Backend) closeConn() {
	if b.conn != nil {
		_ = b.conn.CloseLasting()
		b.conn = nil
	}
}

// encoder gives statements what they may need from the transaction.
type encoder struct {
	tx *tx
	f  *family
}

// listNames returns the names of the chains and sets in our table of
// family f, or ok=false when the table does not exist.
func (b *Backend) listNames(f *family) (chains, sets map[string]bool, ok bool, err error) {
	t, err := b.newTx()
	if err != nil {
		return nil, nil, false, err
	}
	tb := t.table(f)
	if _, err := t.conn.ListTableOfFamily(TableName, f.table); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, nil, false, nil
		}
		return nil, nil, false, fmt.Errorf("listing table %s %s: %w", f.keyword, TableName, err)
	}
	all, err := t.conn.ListChainsOfTableFamily(f.table)
	if err != nil {
		return nil, nil, false, fmt.Errorf("listing chains: %w", err)
	}
	chains = map[string]bool{}
	for _, c := range all {
		if c.Table.Name == TableName {
			chains[c.Name] = true
		}
	}
	ss, err := t.conn.GetSets(tb)
	if err != nil {
		return nil, nil, false, fmt.Errorf("listing sets: %w", err)
	}
	sets = map[string]bool{}
	for _, s := range ss {
		if !s.Anonymous {
			sets[s.Name] = true
		}
	}
	return chains, sets, true, nil
}

func secs(s int32) time.Duration { return time.Duration(s) * time.Second }

// addrKey identifies an element within its set.
func elemKey(s *setDef, e element) string {
	switch s.kind {
	case destMap:
		return netip.AddrPortFrom(e.addr, e.port).String() + "/" + string(e.proto)
	case portMap:
		return fmt.Sprintf("%d/%s", e.port, e.proto)
	case endpointMap:
		return fmt.Sprintf("%s/%s#%d", netip.AddrPortFrom(e.addr, e.port), e.proto, e.index)
	case nodePortEndpointMap:
		return fmt.Sprintf("%d/%s#%d", e.port, e.proto, e.index)
	}
	return e.addr.String()
}
