package nft

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/svcproxy/svcproxy/proxy"
)

// Backend programs a proxy.State as nftables rules over netlink. It keeps
// the last State it committed, plus names and reference counts, and sends
// only what changed; it never lists the kernel's table on a regular sync.
// The first sync, a sync after a failure, and a sync after RequestFullSync
// rewrite everything instead (in place, atomically per chain), which
// adopts a table left by a previous run and repairs tampering.
//
// A Backend is safe for concurrent use; syncs are serialised.
type Backend struct {
	netnsFD int
	conn    *nftables.Conn // lasting; nil until first use and after an error
	// genConn carries the generation queries and the raw element
	// transactions (rawtx.go); nil until first use and after an error.
	genConn *netlink.Conn
	seq     uint32 // of raw messages

	mu       sync.Mutex
	fullNext bool
	// verifyNext: RequestFullSync was called. The next Sync is full unless
	// the kernel's ruleset generation shows that no transaction was
	// committed since our last one (cleanGen, valid while genKnown).
	verifyNext bool
	genKnown   bool
	cleanGen   uint32
	txs        uint32 // transactions committed, ever
	// skipped counts full syncs found unnecessary that way.
	skipped  uint64
	lastFull bool
	// lastMessages counts the netlink messages of the last Sync;
	// lastValidating those of an incremental one that make the kernel
	// re-validate the table (see tx.validating; full syncs always do).
	lastMessages, lastValidating int
	// repairs counts full syncs that found the kernel changed behind our
	// back (see tampered).
	repairs uint64
	// last is the State of the last successful sync: what the kernel
	// holds, service port by service port. A port's previous fragment is
	// rebuilt from it when the port changes or goes (service is
	// deterministic), so no fragment is kept.
	last *proxy.State
	fams map[*family]*committed
}

// committed is what the kernel holds for one family, as far as we know,
// beyond what last says: the names of what we created, and the reference
// counts that decide when a shared object goes. Nothing here is per
// service port.
type committed struct {
	live map[string]bool // chains
	sets map[string]bool
	// Flushed chains and unreferenced sets, deleted at the next sync.
	staleChains map[string]bool
	staleSets   map[string]bool
	// hairpin counts the service ports using each endpoint address; the
	// address is in @hairpin-ips while its count is positive.
	hairpin addrCounts
	// refs counts the service ports using each shared chain; the chain
	// lives while its count is positive.
	refs map[string]int
	// serviceIPs is the element count of @service-ips (see tampered).
	serviceIPs int
}

func newCommitted() *committed {
	return &committed{live: map[string]bool{}, sets: map[string]bool{}, staleChains: map[string]bool{},
		staleSets: map[string]bool{}, hairpin: newAddrCounts(), refs: map[string]int{}}
}

// addrCounts counts per address, compactly (8 bytes a slot for IPv4
// instead of 32 for a map keyed by netip.Addr): at 50k services × 10
// endpoints it holds half a million addresses.
type addrCounts struct {
	v4 map[[4]byte]int32
	v6 map[[16]byte]int32
}

func newAddrCounts() addrCounts {
	return addrCounts{v4: map[[4]byte]int32{}, v6: map[[16]byte]int32{}}
}

func (a addrCounts) get(ip netip.Addr) int {
	if ip.Is4() {
		return int(a.v4[ip.As4()])
	}
	return int(a.v6[ip.As16()])
}

// set records n users of ip; 0 forgets it.
func (a addrCounts) set(ip netip.Addr, n int) {
	switch {
	case ip.Is4() && n == 0:
		delete(a.v4, ip.As4())
	case ip.Is4():
		a.v4[ip.As4()] = int32(n)
	case n == 0:
		delete(a.v6, ip.As16())
	default:
		a.v6[ip.As16()] = int32(n)
	}
}

func (a addrCounts) each(fn func(netip.Addr)) {
	for k := range a.v4 {
		fn(netip.AddrFrom4(k))
	}
	for k := range a.v6 {
		fn(netip.AddrFrom16(k))
	}
}

var _ proxy.Backend = (*Backend)(nil)

// Option configures a Backend.
type Option func(*Backend)

// WithNetNS makes the backend program the network namespace behind fd
// instead of the caller's.
func WithNetNS(fd int) Option { return func(b *Backend) { b.netnsFD = fd } }

// New returns a Backend. Nothing is sent to the kernel until Sync.
func New(opts ...Option) *Backend {
	b := &Backend{netnsFD: -1, fullNext: true}
	for _, o := range opts {
		o(b)
	}
	return b
}

// Render implements proxy.Backend.
func (b *Backend) Render(s *proxy.State) string { return Render(s) }

// RequestFullSync makes the next Sync rewrite everything, which repairs
// any change made to svcproxy's tables by someone else — unless the
// kernel's ruleset generation proves that nothing was committed to
// nftables, in any table, since svcproxy's own last transaction: then
// there is nothing to repair, and the Sync is an incremental one
// (SkippedFullSyncs counts these). The daemon calls it every
// --sync-period.
func (b *Backend) RequestFullSync() {
	b.mu.Lock()
	b.verifyNext = true
	b.mu.Unlock()
}

// LastSyncFull reports whether the last Sync rewrote everything.
func (b *Backend) LastSyncFull() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.lastFull
}

// SkippedFullSyncs counts the requested full syncs that the ruleset
// generation showed unnecessary.
func (b *Backend) SkippedFullSyncs() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.skipped
}

// Sync implements proxy.Backend. When it fails, the kernel keeps the rules
// of the last successful transaction, and the next Sync is a full one.
func (b *Backend) Sync(ctx context.Context, s *proxy.State) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	var err error
	b.lastMessages, b.lastValidating = 0, 0
	full := b.fullNext || b.last == nil
	before, genErr := b.generation()
	if b.verifyNext && !full {
		if full = genErr != nil || !b.genKnown || before != b.cleanGen; !full {
			b.skipped++
		}
	}
	b.verifyNext = false
	b.lastFull = full
	txs := b.txs
	if full {
		err = b.fullSync(s)
	} else {
		err = b.incrementalSync(s)
	}
	if err != nil {
		b.fullNext, b.genKnown = true, false
		return err
	}
	b.fullNext = false
	b.last = s
	// What this sync flushed is unreferenced now: delete it right away, in
	// a transaction of its own. A failure here leaves only empty chains
	// and unused sets, which the next sync deletes again.
	if err := b.deleteStale(); err != nil {
		klog.ErrorS(err, "Deleting stale nftables objects; will retry at the next sync")
	}
	// The generation is clean if it moved by our transactions alone.
	after, afterErr := b.generation()
	b.genKnown = genErr == nil && afterErr == nil && after-before == b.txs-txs
	b.cleanGen = after
	return nil
}

// deleteStale deletes the chains and sets the last sync flushed.
func (b *Backend) deleteStale() error {
	t, err := b.newTx()
	if err != nil {
		return err
	}
	// Sets first: deleting a map drops its references to chains.
	for f, c := range b.fams {
		for n := range c.staleSets {
			t.delSet(f, n)
		}
	}
	for f, c := range b.fams {
		for n := range c.staleChains {
			t.delChain(f, n)
		}
	}
	if err := t.flush(); err != nil {
		return err
	}
	for _, c := range b.fams {
		c.staleChains, c.staleSets = map[string]bool{}, map[string]bool{}
	}
	return nil
}

// Cleanup implements proxy.Backend: it deletes both svcproxy tables, in
// one transaction, and nothing else.
func (b *Backend) Cleanup(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	t, err := b.newTx()
	if err != nil {
		return err
	}
	for _, f := range []*family{ipv4, ipv6} {
		if _, err := t.conn.ListTableOfFamily(TableName, f.table); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			return fmt.Errorf("listing table %s %s: %w", f.keyword, TableName, err)
		}
		t.conn.DelTable(t.table(f))
		t.msgs++
	}
	if err := t.flush(); err != nil {
		return err
	}
	b.last, b.fams, b.fullNext = nil, nil, true
	b.closeConn()
	return nil
}

// Close releases the netlink connection. The rules stay in place.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closeConn()
	b.closeRawConn()
	return nil
}

// Repairs is how many full syncs found svcproxy's tables changed by
// someone else (and rewrote them).
func (b *Backend) Repairs() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.repairs
}

// tampered reports whether the kernel differs from what we committed (c,
// and the last State), as far as cheap checks tell: the table, every chain
// and set we created, the rule count of the services chain (an inserted or
// flushed rule shows there), and the element count of the service-ips map.
func (b *Backend) tampered(f *family, c *committed, chains, sets map[string]bool, present bool) bool {
	if !present {
		return true
	}
	for n := range c.live {
		if !chains[n] {
			return true
		}
	}
	for n := range c.sets {
		if !sets[n] {
			return true
		}
	}
	t, err := b.newTx()
	if err != nil {
		return false
	}
	tb := t.table(f)
	rules, err := t.conn.GetRules(tb, t.chainRef(f, chainServices))
	if err != nil || len(rules) != len(chainsOf(skeleton(f, b.last.Family(f.Family)))[chainServices].rules) {
		return true
	}
	els, err := t.conn.GetSetElements(&nftables.Set{Table: tb, Name: mapServiceIPs})
	return err != nil || len(els) != c.serviceIPs
}

// chainRank orders chain creation so that every chain exists before a
// rule refers to it: leaves first, base chains last.
func chainRank(c *chainDef) int {
	switch {
	case c.base != nil:
		return 5
	case c.name == chainReject || c.name == chainMasquerading:
		return 0
	case strings.HasPrefix(c.name, "endpoint-"):
		return 1
	case strings.HasPrefix(c.name, "service-") || strings.HasPrefix(c.name, "local-"):
		return 2
	case strings.HasPrefix(c.name, "external-") || strings.HasPrefix(c.name, "firewall-"):
		return 3
	}
	return 4
}

func sortChains(cs []*chainDef) {
	// Stable by rank, then name, for reproducible transactions.
	slices.SortFunc(cs, func(a, b *chainDef) int {
		if d := chainRank(a) - chainRank(b); d != 0 {
			return d
		}
		return strings.Compare(a.name, b.name)
	})
}

// batcher splits work into transactions of at most maxMessages.
type batcher struct {
	b   *Backend
	cur *tx
}

func (bt *batcher) tx() (*tx, error) {
	if bt.cur != nil && bt.cur.msgs < maxMessages {
		return bt.cur, nil
	}
	if bt.cur != nil {
		if err := bt.cur.flush(); err != nil {
			return nil, err
		}
	}
	t, err := bt.b.newTx()
	bt.cur = t
	return t, err
}

// flush commits the transaction being built, if any.
func (bt *batcher) flush() error {
	t := bt.cur
	bt.cur = nil
	if t == nil {
		return nil
	}
	return t.flush()
}

// kernelNames is what a full sync found in the kernel for one family.
type kernelNames struct {
	chains, sets map[string]bool
	present      bool
}

// fullRun is one full sync in progress.
type fullRun struct {
	b       *Backend
	bt      *batcher  // the table, sets, deletes
	pre     *rawBatch // chains, and elements of unreachable sets
	pub     *rawBatch // the publishing transaction
	scratch []byte
}

// fullSync writes the whole desired state. Each service port's fragment
// is built once and let go as it is sent: its sets go into google/nftables
// transactions (created when missing), its chains and elements into raw
// batches (rawtx.go), chains created or rewritten in place (flushed and
// refilled in one transaction), elements streamed set by set. Two kinds of
// sets:
//
//   - an endpoint map this sync creates, for a shared chain it creates:
//     no packet can reach it before a dispatch map points at the chain,
//     so its elements are committed as they accumulate, with chains, in
//     transactions of a few MiB, after the map and chain exist (the
//     chain's rules thus bind to an empty map, which the kernel does not
//     walk);
//   - every other set (the dispatch maps, which make services reachable,
//     the hairpin set, maps that already existed): flushed and refilled
//     in one last transaction, which also flushes the chains and sets no
//     longer wanted, so that no half-written service is ever reachable.
//
// Chains and sets found in the kernel but not wanted are flushed now and
// deleted at the next sync.
func (b *Backend) fullSync(s *proxy.State) error {
	fss := s.Families()
	kernel := make([]kernelNames, len(fss))
	repaired := false
	for i, fs := range fss {
		f := familyFor(fs.Family)
		chains, sets, present, err := b.listNames(f)
		if err != nil {
			return err
		}
		if b.fams != nil && b.fams[f] != nil && b.tampered(f, b.fams[f], chains, sets, present) {
			repaired = true
			klog.InfoS("nftables rules were changed by someone else; repairing", "family", f.keyword)
		}
		kernel[i] = kernelNames{chains: chains, sets: sets, present: present}
	}
	r := &fullRun{b: b, bt: &batcher{b: b}, pre: &rawBatch{}, pub: &rawBatch{}}
	fams := map[*family]*committed{}
	for i, fs := range fss {
		f := familyFor(fs.Family)
		var prev *committed
		if b.fams != nil {
			prev = b.fams[f]
		}
		c, err := r.family(f, fs, kernel[i], prev)
		if err != nil {
			return err
		}
		fams[f] = c
	}
	if err := r.bt.flush(); err != nil {
		return err
	}
	if err := b.sendRaw(r.pre); err != nil {
		return err
	}
	if err := b.sendRaw(r.pub); err != nil {
		return err
	}
	b.fams = fams
	if repaired {
		b.repairs++ // once per full sync that repaired, whatever the families
	}
	return nil
}

// addChain queues the creation or rewrite of a chain.
// retire handles the kernel's objects (inKernel) that this sync does not
// want: one the previous sync already flushed (flushedBefore) is deleted
// in a transaction of its own; any other is flushed in the publishing
// transaction and recorded in flushedNow, to be deleted by the next sync.
func (r *fullRun) retire(f *family, inKernel, wanted, flushedBefore, flushedNow map[string]bool,
	del func(*tx, *family, string), flush func([]byte, uint32, *family, string) []byte) error {
	for _, n := range sortedKeys(inKernel) {
		if wanted[n] {
			continue
		}
		if flushedBefore[n] {
			t, err := r.bt.tx()
			if err != nil {
				return err
			}
			del(t, f, n)
			continue
		}
		flushedNow[n] = true
		r.scratch = flush(r.scratch[:0], r.b.nextSeq(), f, n)
		r.pub.addTail(r.scratch)
	}
	return nil
}

func (r *fullRun) addChain(f *family, c *chainDef, exists bool) error {
	var err error
	if r.scratch, err = appendChain(r.pre, r.scratch, &r.b.seq, f, c, exists); err != nil {
		return err
	}
	return r.maybeSendPrefill()
}

// maybeSendPrefill sends the chains and prefilled elements gathered once
// they are many.
func (r *fullRun) maybeSendPrefill() error {
	if r.pre.size < prefillBytes {
		return nil
	}
	return r.sendPrefill()
}

// sendPrefill commits the chains and the elements gathered for
// unreachable sets, after the sets created so far.
func (r *fullRun) sendPrefill() error {
	if err := r.bt.flush(); err != nil {
		return err
	}
	if err := r.b.sendRaw(r.pre); err != nil {
		return err
	}
	r.pre.reset()
	return nil
}

// family plans and sends one family's table (all but the publishing
// transaction) and returns what it will have committed.
func (r *fullRun) family(f *family, fs *proxy.FamilyState, k kernelNames, prev *committed) (*committed, error) {
	c := newCommitted()
	if !k.present {
		// Only then: a transaction that changes nothing does not advance
		// the ruleset generation, which Sync expects of each.
		t, err := r.bt.tx()
		if err != nil {
			return nil, err
		}
		t.addTable(f)
	}
	streams := map[string]*elemStream{}
	// Per-endpoint affinity sets are created after all others: the kernel
	// finds a set named in a message by walking the table's sets in
	// creation order, comparing names, and with thousands of affinity sets
	// ahead of them every element message to the maps paid for the walk (a
	// fifth of a 50k cold sync). Per-service chains, which read them, and
	// the skeleton's come after them, leaves first.
	var lateSets []*setDef
	var lateChains []*chainDef
	// useSet registers a wanted set; reachable: a rule that packets can
	// reach may read it before the publishing transaction.
	useSet := func(sd *setDef, reachable bool) error {
		if c.sets[sd.name] {
			return nil
		}
		c.sets[sd.name] = true
		if sd.kind == affinity {
			lateSets = append(lateSets, sd) // no elements: they belong to the clients
			return nil
		}
		out := r.pub
		if k.sets[sd.name] || reachable {
			r.scratch = flushSetMsg(r.scratch[:0], r.b.nextSeq(), f, sd.name)
			r.pub.addHead(r.scratch)
		} else {
			out = r.pre
		}
		if !k.sets[sd.name] {
			t, err := r.bt.tx()
			if err != nil {
				return err
			}
			if err := t.addSet(f, sd); err != nil {
				return err
			}
		}
		streams[sd.name] = &elemStream{f: f, s: sd, out: out, seq: &r.b.seq}
		return nil
	}
	addElems := func(fr *fragment) error {
		for _, e := range fr.elems {
			es := streams[e.set]
			if es == nil {
				return fmt.Errorf("element of set %s, which no fragment defines", e.set)
			}
			if e.set == mapServiceIPs {
				c.serviceIPs++
			}
			es.add(e.el)
			if err := r.maybeSendPrefill(); err != nil {
				return err
			}
		}
		return nil
	}

	sk := skeleton(f, fs)
	for _, sd := range sk.sets {
		if err := useSet(sd, true); err != nil {
			return nil, err
		}
	}
	for _, ch := range sk.chains {
		c.live[ch.name] = true
	}
	lateChains = append(lateChains, sk.chains...)
	if err := addElems(sk); err != nil {
		return nil, err
	}
	fr := &fragment{shared: newSharedChains()}
	for _, sp := range fs.Services {
		serviceInto(fr, f, fs, sp)
		for _, ch := range fr.chains {
			if !ch.shared {
				if !c.live[ch.name] {
					c.live[ch.name] = true
					lateChains = append(lateChains, ch)
				}
				continue
			}
			if c.refs[ch.name]++; c.refs[ch.name] > 1 {
				continue
			}
			// A shared chain and its maps, at first use: the chain is
			// reachable only if it exists already (elements may point at
			// it); it reads nothing but its maps.
			c.live[ch.name] = true
			exists := k.chains[ch.name]
			for _, m := range ch.maps {
				if err := useSet(m, exists); err != nil {
					return nil, err
				}
			}
			if err := r.addChain(f, ch, exists); err != nil {
				return nil, err
			}
		}
		for _, sd := range fr.sets {
			if err := useSet(sd, true); err != nil {
				return nil, err
			}
		}
		if err := addElems(fr); err != nil {
			return nil, err
		}
		for _, ip := range fr.hairpin {
			c.hairpin.set(ip, c.hairpin.get(ip)+1)
		}
	}
	hp := streams[setHairpin]
	c.hairpin.each(func(ip netip.Addr) { hp.add(element{addr: ip}) })
	for _, name := range sortedKeys(streams) {
		streams[name].finish()
	}

	slices.SortFunc(lateSets, func(a, b *setDef) int { return strings.Compare(a.name, b.name) })
	for _, sd := range lateSets {
		if k.sets[sd.name] {
			continue
		}
		t, err := r.bt.tx()
		if err != nil {
			return nil, err
		}
		if err := t.addSet(f, sd); err != nil {
			return nil, err
		}
	}
	sortChains(lateChains)
	for _, ch := range lateChains {
		if err := r.addChain(f, ch, k.chains[ch.name]); err != nil {
			return nil, err
		}
	}

	// Objects the previous sync flushed are deleted now (sets first:
	// deleting a map drops its references to chains); other unwanted ones
	// found in the kernel are flushed in the publishing transaction and
	// deleted later.
	var prevSets, prevChains map[string]bool
	if prev != nil {
		prevSets, prevChains = prev.staleSets, prev.staleChains
	}
	if err := r.retire(f, k.sets, c.sets, prevSets, c.staleSets, (*tx).delSet, flushSetMsg); err != nil {
		return nil, err
	}
	if err := r.retire(f, k.chains, c.live, prevChains, c.staleChains, (*tx).delChain, flushChainMsg); err != nil {
		return nil, err
	}
	return c, nil
}

func (b *Backend) nextSeq() uint32 {
	b.seq++
	return b.seq
}

// incrementalSync sends only the difference between the last committed
// State and s, in one transaction. The previous fragment of a changed or
// removed service port is rebuilt from the last State. If the
// transaction would be too large (a change to every service), it falls
// back to a full sync.
func (b *Backend) incrementalSync(s *proxy.State) error {
	t, err := b.newTx()
	if err != nil {
		return err
	}
	type update struct {
		c          *committed
		hairpin    map[netip.Addr]int // new counts of the addresses that changed
		refs       map[string]int     // new counts of the shared chains that changed
		serviceIPs int                // change of @service-ips' element count
		added      []string           // chains
		addedSet   []string
		stale      []string
		staleSet   []string
	}
	var updates []update
	for _, fs := range s.Families() {
		f := familyFor(fs.Family)
		c := b.fams[f]
		lastFs := b.last.Family(fs.Family)
		d := s.Diff(b.last, fs.Family)
		u := update{c: c, hairpin: map[netip.Addr]int{}, refs: map[string]int{}}

		// 1. What the previous sync flushed is unreferenced now.
		for n := range c.staleSets {
			t.delSet(f, n)
		}
		for n := range c.staleChains {
			t.delChain(f, n)
		}

		// 2. Differences, fragment by fragment, gathered so that they can
		// be sent in a safe order: element deletes, new sets, new chains,
		// flushes, element adds.
		var delElems, addElems []setElem
		var newChains, rewritten []*chainDef
		setsByName := map[string]*setDef{setHairpin: skeletonSet(setHairpin)}
		sharedDefs := map[string]*chainDef{}
		diff := func(old, new *fragment) {
			oldChains, newChainSet := chainsOf(old), chainsOf(new)
			// Shared chains live by reference count (below).
			for name, ch := range oldChains {
				if ch.shared {
					u.refs[name] = countOr(u.refs, c.refs, name) - 1
					sharedDefs[name] = ch
					for _, m := range ch.maps {
						setsByName[m.name] = m
					}
					delete(oldChains, name)
				}
			}
			for name, ch := range newChainSet {
				if ch.shared {
					u.refs[name] = countOr(u.refs, c.refs, name) + 1
					sharedDefs[name] = ch
					for _, m := range ch.maps {
						setsByName[m.name] = m
					}
					delete(newChainSet, name)
				}
			}
			for name, ch := range newChainSet {
				if old, ok := oldChains[name]; ok {
					if ch.base != nil || isFixed(name) {
						if old.text(f) != ch.text(f) {
							rewritten = append(rewritten, ch)
						}
					}
					continue
				}
				if !c.live[name] || c.staleChains[name] {
					newChains = append(newChains, ch)
				}
			}
			for name := range oldChains {
				if _, ok := newChainSet[name]; !ok {
					u.stale = append(u.stale, name)
				}
			}
			oldSets, newSets := setsOf(old), setsOf(new)
			for name, sd := range newSets {
				setsByName[name] = sd
				if _, ok := oldSets[name]; !ok && (!c.sets[name] || c.staleSets[name]) {
					u.addedSet = append(u.addedSet, name)
				}
			}
			for name, sd := range oldSets {
				setsByName[name] = sd
				if _, ok := newSets[name]; !ok {
					u.staleSet = append(u.staleSet, name)
				}
			}
			oldEl, newEl := elemsOf(old, setsByName), elemsOf(new, setsByName)
			for k, e := range oldEl {
				if ne, ok := newEl[k]; !ok || ne.el != e.el {
					delElems = append(delElems, e)
					if e.set == mapServiceIPs {
						u.serviceIPs--
					}
				}
			}
			for k, e := range newEl {
				if oe, ok := oldEl[k]; !ok || oe.el != e.el {
					addElems = append(addElems, e)
					if e.set == mapServiceIPs {
						u.serviceIPs++
					}
				}
			}
			// Hairpin addresses: in the set while some service uses them.
			if old != nil {
				for _, ip := range old.hairpin {
					u.hairpin[ip] = hairpinCount(u.hairpin, c.hairpin, ip) - 1
				}
			}
			if new != nil {
				for _, ip := range new.hairpin {
					u.hairpin[ip] = hairpinCount(u.hairpin, c.hairpin, ip) + 1
				}
			}
		}
		build := func(fs *proxy.FamilyState, sp *proxy.ServicePort) *fragment {
			if sp == nil {
				return nil
			}
			return service(f, fs, sp)
		}
		if d.GlobalChanged {
			// Every fragment may embed the global settings.
			diff(skeleton(f, lastFs), skeleton(f, fs))
			olds, news := lastFs.Services, fs.Services
			for len(olds) > 0 || len(news) > 0 {
				switch {
				case len(news) == 0 || (len(olds) > 0 && olds[0].Key.Compare(news[0].Key) < 0):
					diff(build(lastFs, olds[0]), nil)
					olds = olds[1:]
				case len(olds) == 0 || olds[0].Key.Compare(news[0].Key) > 0:
					diff(nil, build(fs, news[0]))
					news = news[1:]
				default:
					diff(build(lastFs, olds[0]), build(fs, news[0]))
					olds, news = olds[1:], news[1:]
				}
			}
		} else {
			for _, k := range append(append(d.Added, d.Changed...), d.Removed...) {
				diff(build(lastFs, lastFs.Service(k)), build(fs, fs.Service(k)))
			}
		}
		// A shared chain's endpoint maps come and go with it.
		for name, n := range u.refs {
			ch := sharedDefs[name]
			switch was := c.refs[name]; {
			case was == 0 && n > 0:
				for _, m := range ch.maps {
					if !c.sets[m.name] || c.staleSets[m.name] {
						u.addedSet = append(u.addedSet, m.name)
					}
				}
				if !c.live[name] || c.staleChains[name] {
					newChains = append(newChains, ch)
				}
			case was > 0 && n == 0:
				u.stale = append(u.stale, name)
				for _, m := range ch.maps {
					u.staleSet = append(u.staleSet, m.name)
				}
			}
		}
		for ip, n := range u.hairpin {
			switch was := c.hairpin.get(ip); {
			case was == 0 && n > 0:
				addElems = append(addElems, setElem{setHairpin, element{addr: ip}})
			case was > 0 && n == 0:
				delElems = append(delElems, setElem{setHairpin, element{addr: ip}})
			}
		}
		if err := sendElems(t, f, setsByName, delElems, true); err != nil {
			return err
		}
		for _, name := range u.addedSet {
			// A stale set wanted again was deleted above: re-create it.
			if err := t.addSet(f, setsByName[name]); err != nil {
				return err
			}
		}
		sortChains(newChains)
		for _, ch := range newChains {
			t.addChain(f, ch, false)
			u.added = append(u.added, ch.name)
		}
		sortChains(rewritten)
		for _, ch := range rewritten {
			t.addChain(f, ch, true)
		}
		for _, name := range u.stale {
			t.flushChain(f, name)
		}
		for _, name := range u.staleSet {
			t.flushSetNamed(f, name)
		}
		if err := sendElems(t, f, setsByName, addElems, false); err != nil {
			return err
		}
		updates = append(updates, u)
	}
	if t.msgs > maxMessages {
		// The messages queued on the connection must not reach the
		// kernel: drop the connection with them.
		b.closeConn()
		b.lastFull = true
		return b.fullSync(s)
	}
	if err := t.flush(); err != nil {
		return err
	}
	for _, u := range updates {
		c := u.c
		c.staleChains, c.staleSets = map[string]bool{}, map[string]bool{}
		c.serviceIPs += u.serviceIPs
		for _, n := range u.added {
			c.live[n] = true
		}
		for _, n := range u.stale {
			delete(c.live, n)
			c.staleChains[n] = true
		}
		for _, n := range u.addedSet {
			c.sets[n] = true
		}
		for _, n := range u.staleSet {
			delete(c.sets, n)
			c.staleSets[n] = true
		}
		for ip, n := range u.hairpin {
			c.hairpin.set(ip, n)
		}
		for name, n := range u.refs {
			if n == 0 {
				delete(c.refs, name)
			} else {
				c.refs[name] = n
			}
		}
	}
	return nil
}

// hairpinCount is the pending count of ip, or else its committed one.
func hairpinCount(pending map[netip.Addr]int, committed addrCounts, ip netip.Addr) int {
	if n, ok := pending[ip]; ok {
		return n
	}
	return committed.get(ip)
}

// countOr is the pending count of ip, or else its committed one.
func countOr[K comparable](pending, committed map[K]int, k K) int {
	if n, ok := pending[k]; ok {
		return n
	}
	return committed[k]
}

func isFixed(name string) bool {
	switch name {
	case chainServices, chainMasquerading, chainReject, chainFirewallCheck, chainEndpointsCheck, chainNodePortsCheck:
		return true
	}
	return false
}

func chainsOf(fr *fragment) map[string]*chainDef {
	m := map[string]*chainDef{}
	if fr != nil {
		for _, c := range fr.chains {
			m[c.name] = c
		}
	}
	return m
}

func setsOf(fr *fragment) map[string]*setDef {
	m := map[string]*setDef{}
	if fr != nil {
		for _, s := range fr.sets {
			m[s.name] = s
		}
	}
	return m
}

// elemsOf keys a fragment's elements by set and element key. Sets of the
// skeleton (the maps) are registered in byName too.
func elemsOf(fr *fragment, byName map[string]*setDef) map[string]setElem {
	m := map[string]setElem{}
	if fr == nil {
		return m
	}
	for _, e := range fr.elems {
		sd := byName[e.set]
		if sd == nil {
			sd = skeletonSet(e.set)
			byName[e.set] = sd
		}
		m[e.set+"|"+elemKey(sd, e.el)] = e
	}
	return m
}

// skeletonSet returns the definition of one of the fixed sets.
func skeletonSet(name string) *setDef {
	switch name {
	case mapNodePorts, mapNoEndpointNodePorts:
		return &setDef{name: name, kind: portMap}
	case setNodePortIPs:
		return &setDef{name: name, kind: addrSet}
	case setHairpin:
		return &setDef{name: name, kind: hairpinSet}
	}
	return &setDef{name: name, kind: destMap}
}

func sendElems(t *tx, f *family, byName map[string]*setDef, els []setElem, del bool) error {
	bySet := map[string][]element{}
	for _, e := range els {
		bySet[e.set] = append(bySet[e.set], e.el)
	}
	for _, name := range sortedKeys(bySet) {
		if err := t.elements(f, byName[name], bySet[name], del); err != nil {
			return err
		}
	}
	return nil
}
