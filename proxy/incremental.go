package proxy

import (
	"cmp"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// incremental is what a Builder keeps to apply a few changed objects to its
// last State, in time that does not grow with the unchanged Services (but
// for one pointer lookup per object and copying the sorted port lists).
// Every index describes the inputs of the last build.
type incremental struct {
	last *State
	gen  uint64 // stamps the objects each build sees

	svcs        map[*corev1.Service]uint64
	slices      map[*discoveryv1.EndpointSlice]uint64
	svcByName   map[string]*corev1.Service // by "namespace/name"
	sliceByName map[string]*discoveryv1.EndpointSlice
	// groups holds each Service's slices ("namespace/service"), sorted by
	// name, as groupSlices gives them. (A slice's group is not kept: its
	// labels say, and it never changes.)
	groups map[string][]*discoveryv1.EndpointSlice
	// unlabelled holds the slices without a service-name label (each a
	// problem), by "namespace/name".
	unlabelled map[string]*discoveryv1.EndpointSlice
	// troubled holds the Services whose build recorded problems.
	troubled map[string]*builtService
	// nodeProblems are the Node's problems in the last build; the last
	// State's Problems are reused while no source of problems changed.
	nodeProblems []Problem

	// raw is each family's ports before conflict resolution, in Key order;
	// claims counts the claims on each destination, and contested the
	// destinations claimed more than once: while it is 0, resolving
	// conflicts changes nothing.
	raw           [2][]*ServicePort
	externalNames []ExternalName
	claims        map[destination]int
	contested     int

	problemsChanged bool // by this build, so far
}

// delta tells Diff which keys may differ between the State numbered from
// and the State that carries it; all other ports are the same objects in
// both. It names that State rather than pointing to it: a pointer chained
// every State a Builder ever made, each holding its port lists (0.4 MB at
// 50k Services), for as long as the daemon ran.
type delta struct {
	from uint64   // State.id
	keys [2][]Key // per family, sorted, unique
}

// stateIDs numbers the States that Builders make, uniquely in the process.
var stateIDs atomic.Uint64

func famIndex(f Family) int {
	if f == IPv6 {
		return 1
	}
	return 0
}

func svcName(ns, name string) string { return ns + "/" + name }

// destinations lists every destination sp claims, as resolveConflicts
// claims them.
func (sp *ServicePort) destinations(yield func(destination)) {
	yield(dest(sp.ClusterIP, sp.Key.Protocol, sp.Port))
	if sp.NodePort != 0 {
		yield(dest(netip.Addr{}, sp.Key.Protocol, sp.NodePort))
	}
	for _, ip := range sp.ExternalIPs {
		yield(dest(ip, sp.Key.Protocol, sp.Port))
	}
	for _, ip := range sp.LoadBalancerIPs {
		yield(dest(ip, sp.Key.Protocol, sp.Port))
	}
}

func (inc *incremental) claim(sp *ServicePort, by int) {
	sp.destinations(func(d destination) {
		n := inc.claims[d]
		switch {
		case by > 0 && n == 1:
			inc.contested++
		case by < 0 && n == 2:
			inc.contested--
		}
		if n += by; n == 0 {
			delete(inc.claims, d)
		} else {
			inc.claims[d] = n
		}
	})
}

// reindex records the inputs and results of a full build.
func (m *Builder) reindex(in Inputs, st *State, raw [2][]*ServicePort) {
	inc := &incremental{
		last: st, gen: 1,
		svcs: map[*corev1.Service]uint64{}, slices: map[*discoveryv1.EndpointSlice]uint64{},
		svcByName: map[string]*corev1.Service{}, sliceByName: map[string]*discoveryv1.EndpointSlice{},
		groups:     map[string][]*discoveryv1.EndpointSlice{},
		unlabelled: map[string]*discoveryv1.EndpointSlice{}, troubled: map[string]*builtService{},
		raw: raw, externalNames: slices.Clone(st.ExternalNames), claims: map[destination]int{},
	}
	m.inc = nil
	nb := &builder{cfg: m.cfg}
	nb.node(in.Nodes)
	inc.nodeProblems = nb.problems.list
	for _, s := range in.Services {
		if s == nil {
			continue
		}
		k := svcName(s.Namespace, s.Name)
		if o := inc.svcByName[k]; o != nil && o != s {
			return // two objects under one name: Build decides, every time
		}
		inc.svcs[s], inc.svcByName[k] = 1, s
		if got := m.built[s]; got != nil && got.problems != nil {
			inc.troubled[k] = got
		}
	}
	for _, s := range in.EndpointSlices {
		if s == nil {
			continue
		}
		k := svcName(s.Namespace, s.Name)
		if o := inc.sliceByName[k]; o != nil && o != s {
			return
		}
		if inc.sliceByName[k] == s {
			continue
		}
		inc.slices[s], inc.sliceByName[k] = 1, s
		inc.addSlice(k, s)
	}
	for _, fam := range raw {
		for _, sp := range fam {
			inc.claim(sp, 1)
		}
	}
	m.inc = inc
}

func (inc *incremental) addSlice(name string, s *discoveryv1.EndpointSlice) string {
	g := sliceGroup(nil, s)
	if g == "" {
		if _, ok := s.Labels[LabelServiceProxyName]; !ok {
			if _, ok := s.Labels[LabelHeadless]; !ok {
				inc.unlabelled[name] = s
				inc.problemsChanged = true
			}
		}
		return ""
	}
	sl := inc.groups[g]
	i, _ := slices.BinarySearchFunc(sl, s.Name, func(e *discoveryv1.EndpointSlice, n string) int { return strings.Compare(e.Name, n) })
	inc.groups[g] = slices.Insert(sl, i, s)
	return g
}

func (inc *incremental) removeSlice(name string, s *discoveryv1.EndpointSlice) string {
	g := sliceGroup(nil, s)
	if inc.unlabelled[name] == s {
		delete(inc.unlabelled, name)
		inc.problemsChanged = true
	}
	if g != "" {
		inc.groups[g] = slices.DeleteFunc(inc.groups[g], func(e *discoveryv1.EndpointSlice) bool { return e == s })
		if len(inc.groups[g]) == 0 {
			delete(inc.groups, g)
		}
	}
	return g
}

// maxIncremental bounds the Services one incremental build rebuilds; past
// it (a resync, a namespace deleted) a full build is as cheap.
const maxIncremental = 512

// scan compares objs with the objects of the last build: it returns the
// new objects and those gone, or ok false when two present objects share
// a name (Build must choose between them).
func scan[T namedObject](objs []T, seen map[T]uint64, byName map[string]T, gen uint64) (added, removed []T, ok bool) {
	kept := 0
	addedByName := map[string]T{}
	for _, o := range objs {
		if o == nil {
			continue
		}
		switch g, present := seen[o]; {
		case !present:
			k := svcName(o.GetNamespace(), o.GetName())
			if a, dup := addedByName[k]; dup {
				if a != o {
					return nil, nil, false
				}
				continue
			}
			addedByName[k] = o
			added = append(added, o)
		case g != gen:
			seen[o] = gen
			kept++
		}
	}
	for _, o := range added {
		if old, had := byName[svcName(o.GetNamespace(), o.GetName())]; had && seen[old] == gen {
			return nil, nil, false
		}
	}
	if kept < len(seen) {
		for o, g := range seen {
			if g != gen {
				removed = append(removed, o)
			}
		}
	}
	return added, removed, true
}

// incrementalBuild returns Build(in, cfg) computed from the last build and
// the objects that changed since, or nil when it cannot (no last build,
// another Config or node, two objects under one name, too many changes).
func (m *Builder) incrementalBuild(in Inputs, cfg Config) *State {
	inc := m.inc
	if inc == nil {
		return nil
	}
	m.inc = nil // until this build completes: a failed one leaves the indexes half-updated
	b := &builder{cfg: cfg}
	b.node(in.Nodes)
	if !reflect.DeepEqual(m.cfg, b.cfg) || !reflect.DeepEqual(m.labels, b.labels) || !slices.Equal(m.nodeIPs, b.nodeIPs) {
		return nil
	}
	inc.gen++
	inc.problemsChanged = inc.contested > 0 || !slices.Equal(inc.nodeProblems, b.problems.list)
	inc.nodeProblems = slices.Clone(b.problems.list)
	addedSvcs, removedSvcs, ok := scan(in.Services, inc.svcs, inc.svcByName, inc.gen)
	if !ok {
		return nil
	}
	addedSlices, removedSlices, ok := scan(in.EndpointSlices, inc.slices, inc.sliceByName, inc.gen)
	if !ok || len(addedSvcs)+len(removedSvcs)+len(addedSlices)+len(removedSlices) > maxIncremental {
		return nil
	}

	// The Services to rebuild, with the object each had before.
	affected := map[string]*corev1.Service{}
	touch := func(k string) {
		if _, ok := affected[k]; !ok {
			affected[k] = inc.svcByName[k]
		}
	}
	for _, s := range removedSvcs {
		k := svcName(s.Namespace, s.Name)
		touch(k)
		if inc.svcByName[k] == s {
			delete(inc.svcByName, k)
		}
		delete(inc.svcs, s)
		delete(m.built, s)
	}
	for _, s := range addedSvcs {
		k := svcName(s.Namespace, s.Name)
		touch(k)
		inc.svcs[s], inc.svcByName[k] = inc.gen, s
	}
	for _, s := range removedSlices {
		k := svcName(s.Namespace, s.Name)
		if g := inc.removeSlice(k, s); g != "" {
			touch(g)
		}
		if inc.sliceByName[k] == s {
			delete(inc.sliceByName, k)
		}
		delete(inc.slices, s)
	}
	for _, s := range addedSlices {
		k := svcName(s.Namespace, s.Name)
		inc.slices[s], inc.sliceByName[k] = inc.gen, s
		if g := inc.addSlice(k, s); g != "" {
			touch(g)
		}
	}

	// Rebuild them, replacing their ports in the raw lists.
	wasContested := inc.contested > 0
	var changed [2][]Key
	for _, k := range slices.Sorted(maps.Keys(affected)) {
		old, svc := affected[k], inc.svcByName[k]
		if old != nil {
			for i := range inc.raw {
				for _, sp := range inc.removePorts(i, old.Namespace, old.Name) {
					inc.claim(sp, -1)
					changed[i] = append(changed[i], sp.Key)
				}
			}
			inc.externalNames = slices.DeleteFunc(inc.externalNames, func(e ExternalName) bool {
				return e.Namespace == old.Namespace && e.Name == old.Name
			})
		}
		if _, ok := inc.troubled[k]; ok {
			delete(inc.troubled, k)
			inc.problemsChanged = true
		}
		if svc == nil {
			continue
		}
		sl := inc.groups[k]
		got := m.built[svc]
		if got == nil || !slices.Equal(got.slices, sl) {
			sub := &builder{cfg: b.cfg, labels: b.labels, nodeIPs: b.nodeIPs}
			ports, ext := sub.service(svc, sl)
			got = newBuiltService(sl, ports, ext, sub.problems)
			m.built[svc] = got
		}
		if got.problems != nil {
			inc.troubled[k] = got
			inc.problemsChanged = true
		}
		for _, sp := range got.ports {
			i := famIndex(familyOf(sp.ClusterIP))
			inc.insertPort(i, sp)
			inc.claim(sp, 1)
			changed[i] = append(changed[i], sp.Key)
		}
		if got.ext != nil {
			e := *got.ext
			j, _ := slices.BinarySearchFunc(inc.externalNames, e, func(a, b ExternalName) int {
				return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
			})
			inc.externalNames = slices.Insert(inc.externalNames, j, e)
		}
	}

	// The State, with problems added in Build's order: the node's (above),
	// the slices', each Service's, then conflicts'.
	st := &State{}
	if len(inc.externalNames) > 0 {
		st.ExternalNames = slices.Clone(inc.externalNames)
	}
	rework := inc.problemsChanged || inc.contested > 0
	if rework {
		for _, name := range slices.Sorted(maps.Keys(inc.unlabelled)) {
			sliceGroup(&b.problems, inc.unlabelled[name])
		}
		for _, name := range slices.Sorted(maps.Keys(inc.troubled)) {
			b.problems.merge(inc.troubled[name].problems)
		}
	}
	for i, last := range inc.last.Families() {
		fs := *last
		fs.Services = append(make([]*ServicePort, 0, len(inc.raw[i])), inc.raw[i]...)
		if inc.contested > 0 {
			resolveConflicts(&fs, &b.problems)
		}
		if i == 0 {
			st.IPv4 = &fs
		} else {
			st.IPv6 = &fs
		}
	}
	if rework {
		st.Problems = b.problems.result()
		slices.SortFunc(st.Problems, compareProblems)
		st.Problems = slices.Compact(st.Problems)
	} else {
		st.Problems = inc.last.Problems // nothing that has problems changed
	}
	if !wasContested && inc.contested == 0 {
		// Without conflicts, the ports of the affected Services are the
		// only ones that can differ from the last State.
		d := &delta{from: inc.last.id}
		for i := range changed {
			slices.SortFunc(changed[i], Key.Compare)
			d.keys[i] = slices.Compact(changed[i])
		}
		st.delta = d
	}
	inc.last = st
	m.inc = inc
	return st
}

// portRange is where the ports of Service namespace/name are in raw list i.
func (inc *incremental) portRange(i int, ns, name string) (int, int) {
	l := inc.raw[i]
	lo, _ := slices.BinarySearchFunc(l, Key{Namespace: ns, Name: name}, func(sp *ServicePort, k Key) int { return sp.Key.Compare(k) })
	hi := lo
	for hi < len(l) && l[hi].Key.Namespace == ns && l[hi].Key.Name == name {
		hi++
	}
	return lo, hi
}

func (inc *incremental) removePorts(i int, ns, name string) []*ServicePort {
	lo, hi := inc.portRange(i, ns, name)
	if lo == hi {
		return nil
	}
	gone := slices.Clone(inc.raw[i][lo:hi])
	inc.raw[i] = slices.Delete(inc.raw[i], lo, hi)
	return gone
}

func (inc *incremental) insertPort(i int, sp *ServicePort) {
	j, _ := slices.BinarySearchFunc(inc.raw[i], sp.Key, func(e *ServicePort, k Key) int { return e.Key.Compare(k) })
	inc.raw[i] = slices.Insert(inc.raw[i], j, sp)
}
