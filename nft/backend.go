package nft

import (
	"cmp"
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
// what it last committed in memory and sends only what changed; it never
// lists the kernel's table on a regular sync. The first sync, a sync after
// a failure, and a sync after RequestFullSync rewrite everything instead
// (in place, atomically per chain), which adopts a table left by a
// previous run and repairs tampering.
//
// A Backend is safe for concurrent use; syncs are serialised.
type Backend struct {
	netnsFD int
	conn    *nftables.Conn // lasting; nil until first use and after an error
	genConn *netlink.Conn  // for generation(); nil until first use and after an error

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
	// lastMessages counts the netlink messages of the last Sync.
	lastMessages int
	// repairs counts full syncs that found the kernel changed behind our
	// back (see tampered).
	repairs uint64
	last    *proxy.State
	fams    map[*family]*committed
}

// committed is what the kernel holds for one family, as far as we know.
type committed struct {
	skeleton *fragment
	services map[proxy.Key]*fragment
	live     map[string]bool // chains
	sets     map[string]bool
	// Flushed chains and unreferenced sets, deleted at the next sync.
	staleChains map[string]bool
	staleSets   map[string]bool
	// hairpin counts the services using each endpoint address; the
	// address is in @hairpin-ips while its count is positive.
	hairpin map[netip.Addr]int
	// refs counts the service ports using each shared chain; the chain
	// lives while its count is positive.
	refs map[string]int
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
	b.lastMessages = 0
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
	if b.genConn != nil {
		b.genConn.Close()
		b.genConn = nil
	}
	return nil
}

// Repairs is how many full syncs found svcproxy's tables changed by
// someone else (and rewrote them).
func (b *Backend) Repairs() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.repairs
}

// tampered reports whether the kernel differs from what we committed, as
// far as cheap checks tell: the table, every chain and set we created, the
// rule count of the services chain (an inserted or flushed rule shows
// there), and the element count of the service-ips map.
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
	if err != nil || len(rules) != len(chainsOf(c.skeleton)[chainServices].rules) {
		return true
	}
	want := 0
	for _, fr := range c.services {
		for _, e := range fr.elems {
			if e.set == mapServiceIPs {
				want++
			}
		}
	}
	els, err := t.conn.GetSetElements(&nftables.Set{Table: tb, Name: mapServiceIPs})
	return err != nil || len(els) != want
}

// setCreationOrder puts the per-endpoint affinity sets last. The kernel
// finds a set named in a message by walking the table's sets in creation
// order, comparing names: with thousands of affinity sets ahead of them,
// every element message to the maps paid for the walk (a fifth of a 50k
// cold sync).
func setCreationOrder(sets map[string]*setDef) []string {
	names := sortedKeys(sets)
	slices.SortStableFunc(names, func(a, b string) int {
		return cmp.Compare(boolRank(sets[a].kind == affinity), boolRank(sets[b].kind == affinity))
	})
	return names
}

func boolRank(b bool) int {
	if b {
		return 1
	}
	return 0
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

// fullSync writes the whole desired state. Chains are created or
// rewritten (flush and refill in one transaction each) in as many
// transactions as needed; the map elements that make services reachable
// are replaced last, in one transaction, so that no half-written service
// is ever reachable. Chains and sets found in the kernel but no longer
// wanted are flushed now and deleted at the next sync.
func (b *Backend) fullSync(s *proxy.State) error {
	fams := map[*family]*committed{}
	type plan struct {
		f       *family
		tbl     *table
		exists  map[string]bool
		sets    map[string]bool
		present bool
	}
	var plans []plan
	type del struct {
		f    *family
		name string
		set  bool
	}
	var deletes []del
	repaired := false
	for _, fs := range s.Families() {
		f := familyFor(fs.Family)
		chains, sets, present, err := b.listNames(f)
		if err != nil {
			return err
		}
		if b.fams != nil && b.fams[f] != nil && b.tampered(f, b.fams[f], chains, sets, present) {
			repaired = true
			klog.InfoS("nftables rules were changed by someone else; repairing", "family", f.keyword)
		}
		c := &committed{services: map[proxy.Key]*fragment{}, live: map[string]bool{}, sets: map[string]bool{},
			staleChains: map[string]bool{}, staleSets: map[string]bool{}, hairpin: map[netip.Addr]int{}, refs: map[string]int{}}
		tbl := newTable(f)
		c.skeleton = skeleton(f, fs)
		tbl.add(c.skeleton)
		for _, sp := range fs.Services {
			fr := service(f, fs, sp)
			c.services[sp.Key] = fr
			tbl.add(fr)
			for _, ip := range fr.hairpin {
				c.hairpin[ip]++
			}
			for _, ch := range fr.chains {
				if ch.shared {
					c.refs[ch.name]++
				}
			}
		}
		for n := range tbl.chains {
			c.live[n] = true
		}
		for n := range tbl.sets {
			c.sets[n] = true
		}
		// Objects the previous sync flushed are deleted now; other
		// unwanted ones found in the kernel are flushed now, deleted later.
		var prev *committed
		if b.fams != nil {
			prev = b.fams[f]
		}
		for n := range chains {
			if c.live[n] {
				continue
			}
			if prev != nil && prev.staleChains[n] {
				deletes = append(deletes, del{f: f, name: n})
				continue
			}
			c.staleChains[n] = true
		}
		for n := range sets {
			if c.sets[n] {
				continue
			}
			if prev != nil && prev.staleSets[n] {
				deletes = append(deletes, del{f: f, name: n, set: true})
				continue
			}
			c.staleSets[n] = true
		}
		fams[f] = c
		plans = append(plans, plan{f: f, tbl: tbl, exists: chains, sets: sets, present: present})
	}

	bt := &batcher{b: b}
	if len(deletes) > 0 {
		t, err := bt.tx()
		if err != nil {
			return err
		}
		for _, d := range deletes {
			if d.set {
				t.delSet(d.f, d.name)
			} else {
				t.delChain(d.f, d.name)
			}
		}
	}
	for _, p := range plans {
		t, err := bt.tx()
		if err != nil {
			return err
		}
		t.addTable(p.f)
		for _, name := range setCreationOrder(p.tbl.sets) {
			if p.sets[name] {
				continue
			}
			if t, err = bt.tx(); err != nil {
				return err
			}
			if err := t.addSet(p.f, p.tbl.sets[name]); err != nil {
				return err
			}
		}
		chains := make([]*chainDef, 0, len(p.tbl.chains))
		for _, c := range p.tbl.chains {
			chains = append(chains, c)
		}
		sortChains(chains)
		for _, c := range chains {
			if t, err = bt.tx(); err != nil {
				return err
			}
			t.addChain(p.f, c, p.exists[c.name])
		}
	}
	// The publishing transaction: all elements, and the stale chains
	// flushed. It is never split.
	if bt.cur != nil {
		if err := bt.cur.flush(); err != nil {
			return err
		}
	}
	t, err := b.newTx()
	if err != nil {
		return err
	}
	for _, p := range plans {
		for _, name := range sortedKeys(p.tbl.sets) {
			s := p.tbl.sets[name]
			if s.kind == affinity {
				continue // entries belong to the clients
			}
			t.flushSet(p.f, s)
			if err := t.elements(p.f, s, p.tbl.elems[name], false); err != nil {
				return err
			}
		}
		for name := range fams[p.f].staleChains {
			t.flushChain(p.f, name)
		}
		for name := range fams[p.f].staleSets {
			t.flushSetNamed(p.f, name)
		}
	}
	if err := t.flush(); err != nil {
		return err
	}
	b.fams = fams
	if repaired {
		b.repairs++ // once per full sync that repaired, whatever the families
	}
	return nil
}

// incrementalSync sends only the difference between the last committed
// State and s, in one transaction. If that transaction would be too large
// (a change to every service), it falls back to a full sync.
func (b *Backend) incrementalSync(s *proxy.State) error {
	t, err := b.newTx()
	if err != nil {
		return err
	}
	type update struct {
		c        *committed
		services map[proxy.Key]*fragment
		hairpin  map[netip.Addr]int // new counts of the addresses that changed
		refs     map[string]int     // new counts of the shared chains that changed
		skeleton *fragment
		added    []string // chains
		addedSet []string
		stale    []string
		staleSet []string
	}
	var updates []update
	for _, fs := range s.Families() {
		f := familyFor(fs.Family)
		c := b.fams[f]
		d := s.Diff(b.last, fs.Family)
		u := update{c: c, services: map[proxy.Key]*fragment{}, hairpin: map[netip.Addr]int{}, refs: map[string]int{}}

		// 1. What the previous sync flushed is unreferenced now.
		for n := range c.staleSets {
			t.delSet(f, n)
		}
		for n := range c.staleChains {
			t.delChain(f, n)
		}

		// 2. The fragments to compare.
		type pair struct{ old, new *fragment }
		var pairs []pair
		if d.GlobalChanged {
			u.skeleton = skeleton(f, fs)
			pairs = append(pairs, pair{c.skeleton, u.skeleton})
			seen := map[proxy.Key]bool{}
			for _, sp := range fs.Services {
				seen[sp.Key] = true
				u.services[sp.Key] = service(f, fs, sp)
				pairs = append(pairs, pair{c.services[sp.Key], u.services[sp.Key]})
			}
			for k, old := range c.services {
				if !seen[k] {
					u.services[k] = nil
					pairs = append(pairs, pair{old, nil})
				}
			}
		} else {
			for _, k := range append(append(d.Added, d.Changed...), d.Removed...) {
				var nf *fragment
				if sp := fs.Service(k); sp != nil {
					nf = service(f, fs, sp)
				}
				u.services[k] = nf
				pairs = append(pairs, pair{c.services[k], nf})
			}
		}

		// 3. Differences, gathered so that they can be sent in a safe
		// order: element deletes, new sets, new chains, flushes, element
		// adds.
		var delElems, addElems []setElem
		var newChains, rewritten []*chainDef
		setsByName := map[string]*setDef{}
		sharedDefs := map[string]*chainDef{}
		for _, p := range pairs {
			oldChains, newChainSet := chainsOf(p.old), chainsOf(p.new)
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
			oldSets, newSets := setsOf(p.old), setsOf(p.new)
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
			oldEl, newEl := elemsOf(p.old, setsByName), elemsOf(p.new, setsByName)
			for k, e := range oldEl {
				if ne, ok := newEl[k]; !ok || ne.el != e.el {
					delElems = append(delElems, e)
				}
			}
			for k, e := range newEl {
				if oe, ok := oldEl[k]; !ok || oe.el != e.el {
					addElems = append(addElems, e)
				}
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
		// Hairpin addresses: in the set while some service uses them.
		setsByName[setHairpin] = skeletonSet(setHairpin)
		for _, p := range pairs {
			if p.old != nil {
				for _, ip := range p.old.hairpin {
					u.hairpin[ip] = countOr(u.hairpin, c.hairpin, ip) - 1
				}
			}
			if p.new != nil {
				for _, ip := range p.new.hairpin {
					u.hairpin[ip] = countOr(u.hairpin, c.hairpin, ip) + 1
				}
			}
		}
		for ip, n := range u.hairpin {
			switch was := c.hairpin[ip]; {
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
		return b.fullSync(s)
	}
	if err := t.flush(); err != nil {
		return err
	}
	for _, u := range updates {
		c := u.c
		c.staleChains, c.staleSets = map[string]bool{}, map[string]bool{}
		if u.skeleton != nil {
			c.skeleton = u.skeleton
		}
		for k, fr := range u.services {
			if fr == nil {
				delete(c.services, k)
			} else {
				c.services[k] = fr
			}
		}
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
			if n == 0 {
				delete(c.hairpin, ip)
			} else {
				c.hairpin[ip] = n
			}
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
