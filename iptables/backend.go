package iptables

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	goipt "github.com/coreos/go-iptables/iptables"
	"k8s.io/klog/v2"

	"github.com/svcproxy/svcproxy/proxy"
)

// Backend programs a proxy.State as iptables rules, with iptables-restore
// --noflush payloads: per sync, one restore per table (filter, then nat)
// per family, each atomic. With the nft variant, many new chains (a cold
// sync) are first written by staging restores that nothing refers to yet
// (see stageNew); the table's restore then switches to them at once. Only
// chains named SVCP-* and one jump per built-in chain (nat PREROUTING,
// OUTPUT, POSTROUTING; filter INPUT, FORWARD, OUTPUT) are ever written;
// other owners' chains and rules in the same tables are left as they are.
//
// It keeps what it committed in memory and, after the first sync, writes
// only the chains of the services that changed, plus those of the fixed
// chains whose rules changed (a dispatch chain is then rewritten whole; a
// change of endpoints leaves the dispatch chains as they are); chains no
// longer wanted are flushed and deleted in the same restore. A table in
// which nothing changed is not restored at all. A regular sync never reads
// iptables-save. A full sync (the first, the one after a failure, the one
// after RequestFullSync) reads iptables-save once per family to adopt the
// chains already there (a restarted svcproxy takes its chains over in
// place, without traffic interruption), rewrites every chain whose rules
// differ from the wanted ones, deletes the stale ones and any extra or
// outdated jump to them from built-in chains, and inserts the built-in
// jumps iptables-save did not show, all in the same restores: it repairs
// whatever others changed.
//
// A full sync also compares what iptables-save shows of svcproxy's chains
// and jumps with what the previous successful sync committed (no extra
// reads: it is the listing the full sync reads anyway). A difference — one
// of our chains missing, added, flushed or with a rule changed, inserted or
// deleted, or a built-in jump missing, repeated or changed — means someone
// else changed the rules: the sync is counted in Repairs once it succeeds.
// Rules of other owners, and their jumps to their own chains, are not
// compared.
//
// The variant (legacy or nft) is chosen at the first Sync (see WithMode).
// A Backend is safe for concurrent use; syncs are serialised.
type Backend struct {
	netns string
	mode  Mode

	mu       sync.Mutex
	resolved Mode // the variant in use; ModeAuto until chosen
	ipt      map[proxy.Family]*goipt.IPTables
	fullNext bool
	last     *proxy.State
	mem      map[proxy.Family]*committed
	// trusted: the last Sync succeeded, so mem is what the kernel held
	// after it (after a failure some tables may hold the new rules).
	trusted bool
	// tampered holds what a full sync found changed by someone else, until
	// a sync succeeds and counts it in repairs.
	tampered []string
	repairs  uint64
	payloads []string // the restore payloads of the last Sync, for tests
	// toolCPU is the CPU time (user + system) of the iptables tools run by
	// the last Sync, for benchmarks: it varies less than wall time on a
	// busy machine.
	toolCPU time.Duration
	// stageChains is the most new chains per staging restore (nft; see
	// stageNew). Tests lower it.
	stageChains int
}

// committed is what the kernel holds for one family: the chains and
// dispatch rules of each service port, and the fixed chains.
type committed struct {
	frags map[proxy.Key]*fragment
	skel  []*chain
}

var _ proxy.Backend = (*Backend)(nil)

// Option configures a Backend.
type Option func(*Backend)

// WithNetNS makes the backend program the named network namespace
// (/run/netns/NAME) instead of the caller's: iptables-restore and
// iptables-save run through `ip netns exec NAME`.
func WithNetNS(name string) Option { return func(b *Backend) { b.netns = name } }

// WithMode forces the iptables variant. With ModeAuto (the default) the
// backend uses the variant that already holds svcproxy's chains, else the
// one kubelet marks with KUBE-IPTABLES-HINT or KUBE-KUBELET-CANARY, else
// the one with more rules, else nft.
func WithMode(m Mode) Option { return func(b *Backend) { b.mode = m } }

// New returns a Backend. Nothing runs until Sync or Cleanup.
func New(opts ...Option) *Backend {
	b := &Backend{fullNext: true, stageChains: defaultStageChains}
	for _, o := range opts {
		o(b)
	}
	return b
}

// Mode returns the variant in use: ModeAuto until the first Sync has
// chosen one.
func (b *Backend) Mode() Mode {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.resolved
}

// RequestFullSync makes the next Sync a full one (see Backend), which
// repairs changes others made to svcproxy's chains and jumps.
func (b *Backend) RequestFullSync() {
	b.mu.Lock()
	b.fullNext = true
	b.mu.Unlock()
}

// Repairs is how many successful full syncs found svcproxy's chains or
// jumps changed by someone else since the previous sync (and rewrote them).
func (b *Backend) Repairs() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.repairs
}

// setup chooses the variant, once.
func (b *Backend) setup(ctx context.Context) error {
	if b.ipt != nil {
		return nil
	}
	m := b.mode
	var ipt map[proxy.Family]*goipt.IPTables
	var err error
	if m == ModeAuto {
		m, ipt, err = b.detect(ctx)
	} else {
		ipt, err = probe(m)
	}
	if err != nil {
		return err
	}
	b.resolved, b.ipt = m, ipt
	return nil
}

// Sync implements proxy.Backend. Errors surface from choosing the variant
// (no usable iptables tools), from iptables-save (full syncs), from
// iptables-restore (the failed table is unchanged; tables restored before
// it in the same Sync keep their new rules). After an error the next Sync
// is a full one.
func (b *Backend) Sync(ctx context.Context, s *proxy.State) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := b.setup(ctx); err != nil {
		return err
	}
	full := b.fullNext || b.last == nil || b.mem == nil
	b.payloads, b.toolCPU = nil, 0
	mem, err := b.sync(ctx, s, full)
	if err != nil {
		b.fullNext, b.trusted = true, false
		return err
	}
	if len(b.tampered) > 0 {
		b.repairs++
		klog.InfoS("iptables rules were changed by someone else; repaired", "mode", b.resolved, "changes", b.tampered)
		b.tampered = nil
	}
	b.mem, b.last, b.fullNext, b.trusted = mem, s, false, true
	return nil
}

// tablePlan is one table's part of a sync.
type tablePlan struct {
	write   [][]*chain // in groups that refer to one another: a service's chains in the table, or one fixed chain
	stage   [][]*chain // new chains written by restores of their own, before the table's (nft; see stage)
	stale   map[string]bool
	deletes []string // "-D CHAIN spec" lines: jumps found in built-in chains that are not (or no longer) ours to keep
	inserts []string // "-I CHAIN spec" lines: our jumps missing from built-in chains
}

func (b *Backend) sync(ctx context.Context, s *proxy.State, full bool) (map[proxy.Family]*committed, error) {
	newMem := map[proxy.Family]*committed{}
	for _, fs := range s.Families() {
		var old *committed
		if b.mem != nil {
			old = b.mem[fs.Family]
		}
		c, plans, err := b.plan(ctx, s, fs, old, full)
		if err != nil {
			return nil, err
		}
		newMem[fs.Family] = c
		for _, t := range tables {
			p := plans[t]
			if p == nil {
				continue
			}
			payloads := make([]string, 0, len(p.stage)+1)
			for _, chs := range p.stage {
				payloads = append(payloads, (&tablePlan{write: [][]*chain{chs}}).payload(t))
			}
			payloads = append(payloads, p.payload(t))
			for _, payload := range payloads {
				b.payloads = append(b.payloads, payload)
				if err := b.restore(ctx, b.resolved, fs.Family, payload); err != nil {
					return nil, fmt.Errorf("%s table %s: %w", fs.Family, t, err)
				}
			}
		}
	}
	return newMem, nil
}

// plan computes what one family's restores must write and what the kernel
// will hold afterwards. No plans: nothing changed.
func (b *Backend) plan(ctx context.Context, s *proxy.State, fs *proxy.FamilyState, old *committed, full bool) (*committed, map[string]*tablePlan, error) {
	f := familyFor(fs.Family)

	// The services whose chains are rewritten or removed: all of them on a
	// full sync or when a setting they all embed changed, else those that
	// changed.
	c := &committed{frags: map[proxy.Key]*fragment{}}
	var keys []proxy.Key
	d := s.Diff(b.last, fs.Family)
	if !full && d.Empty() {
		return old, nil, nil
	}
	if full || d.GlobalChanged {
		for _, sp := range fs.Services {
			c.frags[sp.Key] = service(f, fs, sp)
			keys = append(keys, sp.Key)
		}
		if old != nil {
			for k := range old.frags {
				if c.frags[k] == nil {
					keys = append(keys, k)
				}
			}
		}
	} else {
		for k, fr := range old.frags {
			c.frags[k] = fr
		}
		keys = append(append(append(keys, d.Added...), d.Changed...), d.Removed...)
		for _, k := range keys {
			if sp := fs.Service(k); sp != nil {
				c.frags[k] = service(f, fs, sp)
			} else {
				delete(c.frags, k)
			}
		}
	}
	slices.SortFunc(keys, proxy.Key.Compare)

	// Chains to write: the fixed ones (the dispatch chains gather every
	// service's rules) that are new or changed, all of them on a full sync,
	// and those of the services considered. A service whose endpoints
	// changed keeps its dispatch rules: the dispatch chains, as long as the
	// number of services, are then not rewritten.
	ordered := make([]*fragment, len(fs.Services))
	for i, sp := range fs.Services {
		ordered[i] = c.frags[sp.Key]
	}
	plans := map[string]*tablePlan{}
	wanted := map[string]bool{}
	for _, t := range tables {
		plans[t] = &tablePlan{stale: map[string]bool{}}
	}
	write := func(chs []*chain) {
		group := map[string][]*chain{}
		for _, ch := range chs {
			group[ch.table] = append(group[ch.table], ch)
			wanted[ch.table+" "+ch.name] = true
		}
		for _, t := range tables {
			if len(group[t]) > 0 {
				plans[t].write = append(plans[t].write, group[t])
			}
		}
	}
	c.skel = skeleton(f, fs, ordered)
	before := map[string][]string{} // "table chain" → rules, of the fixed chains committed
	if old != nil && !full {
		for _, ch := range old.skel {
			before[ch.table+" "+ch.name] = ch.rules
		}
	}
	for _, ch := range c.skel {
		if rules, ok := before[ch.table+" "+ch.name]; !ok || !slices.Equal(rules, ch.rules) {
			write([]*chain{ch})
		}
	}
	for _, k := range keys {
		if fr := c.frags[k]; fr != nil {
			write(fr.chains)
		}
	}

	// Stale chains: on a full sync, ours that iptables-save lists and that
	// are not written (the sync writes every wanted chain); otherwise the
	// chains the services considered had and have no more.
	var exists func(table, name string) bool // whether the kernel holds the chain before the sync
	if full {
		out, err := b.save(ctx, b.resolved, fs.Family)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: reading the rules to adopt: %w", fs.Family, err)
		}
		l := parseSave(out)
		exists = func(t, n string) bool { return l[t] != nil && l[t].chains[n] }
		if b.trusted && old != nil {
			if what := old.differs(l); what != "" {
				b.tampered = append(b.tampered, fs.Family.String()+" "+what)
			}
		}
		// Chains the kernel already holds exactly as wanted are not
		// rewritten: after a restart, a full sync writes only what changed
		// meanwhile (rewriting the 111k chains of 10k services in place
		// takes iptables-nft-restore minutes; see stageNew).
		for _, t := range tables {
			tl := l[t]
			if tl == nil {
				continue
			}
			var write [][]*chain
			for _, g := range plans[t].write {
				var changed []*chain
				for _, ch := range g {
					if !tl.chains[ch.name] || !slices.Equal(tl.rules[ch.name], ch.rules) {
						changed = append(changed, ch)
					}
				}
				if len(changed) > 0 {
					write = append(write, changed)
				}
			}
			plans[t].write = write
		}
		present := map[jump]bool{}
		for _, t := range tables {
			if tl := l[t]; tl != nil {
				for n := range tl.chains {
					if !wanted[t+" "+n] {
						plans[t].stale[n] = true
					}
				}
				plans[t].deletes = foreignJumps(t, tl, present)
			}
		}
		// The missing jumps are inserted by the same restore, after the
		// chains they go to are written: inserting them with iptables -I
		// afterwards would read and rewrite the whole (large) table once per
		// jump with iptables-legacy.
		for _, j := range jumps {
			if !present[j] {
				plans[j.table].inserts = append(plans[j.table].inserts, "-I "+j.chain+" "+j.spec)
			}
		}
	} else {
		had := map[string]bool{} // "table chain", of the fixed chains and the chains of the services considered
		for _, ch := range old.skel {
			had[ch.table+" "+ch.name] = true
		}
		for _, k := range keys {
			for _, ch := range old.fragment(k).chainList() {
				had[ch.table+" "+ch.name] = true
				if !wanted[ch.table+" "+ch.name] {
					plans[ch.table].stale[ch.name] = true
				}
			}
		}
		// A service's chain names derive from its key: the other services'
		// chains cannot be among those written.
		exists = func(t, n string) bool { return had[t+" "+n] }
	}
	// A table with nothing to write or delete is not restored at all (a
	// legacy restore reads the whole table even then).
	for _, t := range tables {
		if p := plans[t]; len(p.write) == 0 && len(p.stale) == 0 && len(p.deletes) == 0 && len(p.inserts) == 0 {
			delete(plans, t)
		}
	}
	if b.resolved == ModeNFT {
		for t, p := range plans {
			p.stageNew(func(n string) bool { return !exists(t, n) }, b.stageChains)
		}
	}
	return c, plans, nil
}

// defaultStageChains is the most new chains an iptables-nft-restore
// staging payload declares (see stageNew). At 10k services (22k chains,
// ~2.2 a service) the tools' CPU time of a cold sync was 7.0–7.5 s with
// 400, 7.7–7.9 s with 800, 8.0 s with 1500, 8.5 s with 3000 and 10 s
// with 6000; 100 and 200 were no faster than 400 (more processes).
const defaultStageChains = 400

// stageNew moves the new chains to write, when there are many, into
// staging restores of about limit chains each, run before the
// table's main restore. iptables-nft-restore (1.8.9) keeps every chain name
// a payload mentions in a sorted list that it walks from the front, and
// finds chains in hash tables of 512 buckets: its time is quadratic in the
// chains of one payload (a cold sync of 10k services, 111k chains, took
// 170 s as one restore, 8 s in staging restores). Nothing refers to a new
// chain until the main restore writes the dispatch rules and jumps that
// lead to it, so packets still see one switch; after a failure the next,
// full, sync adopts or deletes the staged chains. The chains of one
// service go to the same restore (they refer to one another), after
// SVCP-MARK-MASQ when that is new too (they jump to it).
func (p *tablePlan) stageNew(isNew func(name string) bool, limit int) {
	staged := func(g []*chain) bool { // a new service's chains
		if !isServiceChain(g[0].name) {
			return false
		}
		for _, ch := range g {
			if !isNew(ch.name) {
				return false
			}
		}
		return true
	}
	n := 0
	for _, g := range p.write {
		if staged(g) {
			n += len(g)
		}
	}
	if n < limit {
		return
	}
	var rest, stage [][]*chain
	var chunk, markMasq []*chain
	for _, g := range p.write {
		switch {
		case g[0].name == chainMarkMasq && isNew(chainMarkMasq):
			markMasq = g
		case staged(g):
			chunk = append(chunk, g...)
			if len(chunk) >= limit {
				stage, chunk = append(stage, chunk), nil
			}
		default:
			rest = append(rest, g)
		}
	}
	if len(chunk) > 0 {
		stage = append(stage, chunk)
	}
	if markMasq != nil {
		stage[0] = append(markMasq, stage[0]...)
	}
	p.write, p.stage = rest, stage
}

// isServiceChain reports whether name is one of a service's chains.
func isServiceChain(name string) bool {
	for _, prefix := range []string{prefixSVC, prefixSVL, prefixEXT, prefixFW, prefixSEP, prefixHPN} {
		if strings.HasPrefix(name, prefix) {
			return true
		}
	}
	return false
}

// differs compares l, what iptables-save shows of svcproxy's part of one
// family, with what c says the kernel holds, and describes the first
// difference ("" when there is none): a chain of ours missing or added, a
// chain whose rules differ (flushed, or a rule inserted, deleted or
// changed), or a built-in chain whose jumps to our chains are not exactly
// ours. Foreign rules and chains are not in l and not compared.
func (c *committed) differs(l listing) string {
	want := map[string]map[string][]string{} // table → chain → rules
	add := func(ch *chain) {
		if want[ch.table] == nil {
			want[ch.table] = map[string][]string{}
		}
		want[ch.table][ch.name] = ch.rules
	}
	for _, ch := range c.skel {
		add(ch)
	}
	for _, fr := range c.frags {
		for _, ch := range fr.chains {
			add(ch)
		}
	}
	builtin := map[string][]string{} // "table chain" → our jumps
	for _, j := range jumps {
		builtin[j.table+" "+j.chain] = append(builtin[j.table+" "+j.chain], j.spec)
	}
	for _, t := range tables {
		tl := l[t]
		if tl == nil {
			tl = &tableListing{}
		}
		w := want[t]
		for _, name := range sortedKeys(w) {
			if !tl.chains[name] {
				return fmt.Sprintf("table %s: chain %s missing", t, name)
			}
			if !slices.Equal(tl.rules[name], w[name]) {
				return fmt.Sprintf("table %s: chain %s changed (%d rules, want %d)", t, name, len(tl.rules[name]), len(w[name]))
			}
		}
		if len(tl.chains) != len(w) { // all of w are there: the rest are extra
			for _, name := range sortedKeys(tl.chains) {
				if _, ok := w[name]; !ok {
					return fmt.Sprintf("table %s: chain %s added", t, name)
				}
			}
		}
		for _, name := range sortedKeys(tl.rules) {
			if builtinChains[name] && !slices.Equal(tl.rules[name], builtin[t+" "+name]) {
				return fmt.Sprintf("table %s: jumps from %s changed (%d, want %d)", t, name, len(tl.rules[name]), len(builtin[t+" "+name]))
			}
		}
		for _, j := range jumps {
			if j.table == t && len(tl.rules[j.chain]) == 0 {
				return fmt.Sprintf("table %s: jump from %s missing", t, j.chain)
			}
		}
	}
	return ""
}

func (c *committed) fragment(k proxy.Key) *fragment {
	if c == nil {
		return nil
	}
	return c.frags[k]
}

func (fr *fragment) chainList() []*chain {
	if fr == nil {
		return nil
	}
	return fr.chains
}

// foreignJumps returns "-D" lines for the rules of built-in chains that go
// to our chains but are not one of our jumps, or repeat one, and records
// the jumps found in present.
func foreignJumps(table string, tl *tableListing, present map[jump]bool) []string {
	var out []string
	for _, name := range sortedKeys(tl.rules) {
		if !builtinChains[name] {
			continue
		}
		for _, r := range tl.rules[name] {
			j := jump{table: table, chain: name, spec: r}
			if slices.Contains(jumps, j) && !present[j] {
				present[j] = true // keep the first one
				continue
			}
			out = append(out, "-D "+name+" "+r)
		}
	}
	return out
}

// payload is the iptables-restore --noflush input for one table: a ":"
// line creates a chain or flushes it, so the chains written and the stale
// ones are declared first; stale jumps are deleted, the rules appended, the
// missing jumps from built-in chains inserted (at position 1, -I's
// default), and the stale chains, now unreferenced, deleted.
//
// Declarations come in descending name order: both variants keep the names
// in a sorted linked list that they search from the start (libiptc from
// its last chain index entry), so each new name declared is found to
// belong at the front. In ascending order every declaration walks the
// whole list (quadratic: at 10k services, 111k chains, a second of the
// legacy restore, more with nft). The rules follow in the same chain
// order, which the legacy restore processes some 10 % faster than in
// service order (memory locality, it seems; measured, not derived).
func (p *tablePlan) payload(table string) string {
	var b strings.Builder
	b.WriteString("*" + table + "\n")
	stale := sortedKeys(p.stale)
	var chains []*chain
	for _, g := range p.write {
		chains = append(chains, g...)
	}
	slices.SortFunc(chains, func(x, y *chain) int { return strings.Compare(y.name, x.name) })
	declared := make([]string, 0, len(stale)+len(chains))
	for _, ch := range chains {
		declared = append(declared, ch.name)
	}
	declared = append(declared, stale...)
	slices.Sort(declared)
	slices.Reverse(declared)
	// Sized up front: a cold payload at 10k services is ~40 MB, which
	// growing by doubling copies twice over.
	size := len(table) + len("*\nCOMMIT\n")
	for _, n := range declared {
		size += len(": - [0:0]\n") + len(n)
	}
	for _, ch := range chains {
		for _, r := range ch.rules {
			size += len("-A  \n") + len(ch.name) + len(r)
		}
	}
	for _, l := range slices.Concat(p.deletes, p.inserts) {
		size += len(l) + 1
	}
	for _, n := range stale {
		size += len("-X \n") + len(n)
	}
	b.Grow(size)
	// Piecewise writes: concatenating each line first would allocate it.
	for _, n := range declared {
		b.WriteString(":")
		b.WriteString(n)
		b.WriteString(" - [0:0]\n")
	}
	for _, d := range p.deletes {
		b.WriteString(d)
		b.WriteString("\n")
	}
	for _, ch := range chains {
		for _, r := range ch.rules {
			b.WriteString("-A ")
			b.WriteString(ch.name)
			b.WriteString(" ")
			b.WriteString(r)
			b.WriteString("\n")
		}
	}
	for _, in := range p.inserts {
		b.WriteString(in)
		b.WriteString("\n")
	}
	for _, n := range stale {
		b.WriteString("-X ")
		b.WriteString(n)
		b.WriteString("\n")
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// Cleanup implements proxy.Backend: it deletes the jumps to svcproxy's
// chains from built-in chains and every SVCP-* chain, one restore per
// table, and nothing else; tables are left in place, even when empty. It
// cleans every usable variant (only the forced one with WithMode), so
// that rules a run in the other mode left are removed too. It reads
// iptables-save, and fails when it cannot, or when a restore fails (for
// instance, a foreign rule still jumps to one of svcproxy's chains). The
// next Sync starts over.
func (b *Backend) Cleanup(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	modes := []Mode{b.mode}
	if b.mode == ModeAuto {
		modes = nil
		for _, m := range []Mode{ModeNFT, ModeLegacy} {
			if _, err := probe(m); err == nil {
				modes = append(modes, m)
			}
		}
		if len(modes) == 0 {
			return fmt.Errorf("cleanup: no usable iptables variant")
		}
	}
	for _, m := range modes {
		for _, f := range []proxy.Family{proxy.IPv4, proxy.IPv6} {
			out, err := b.save(ctx, m, f)
			if err != nil {
				return fmt.Errorf("cleanup: %w", err)
			}
			l := parseSave(out)
			for _, t := range sortedKeys(l) {
				p := &tablePlan{stale: l[t].chains}
				for _, name := range sortedKeys(l[t].rules) {
					if builtinChains[name] {
						for _, r := range l[t].rules[name] {
							p.deletes = append(p.deletes, "-D "+name+" "+r)
						}
					}
				}
				if err := b.restore(ctx, m, f, p.payload(t)); err != nil {
					return fmt.Errorf("cleanup: %s %s table %s: %w", m, f, t, err)
				}
			}
		}
	}
	b.mem, b.last, b.fullNext, b.trusted, b.tampered = nil, nil, true, false, nil
	return nil
}
