package proxy

import (
	"net/netip"
	"reflect"
	"slices"
	"sync"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// Builder is Build with a memory of its last call: a Service whose object
// and EndpointSlices are the very same objects (pointers) as last time,
// under the same Config and node facts, gets the service ports built last
// time instead of being built again. Informer caches replace an object on
// every change and never modify one in place, which is what makes pointer
// identity a safe test; callers that mutate objects between calls must use
// Build. The result always equals Build(in, cfg).
//
// A daemon with 10k Services rebuilds one of them per change instead of
// all of them (docs/performance.md). A Builder is safe for concurrent use.
type Builder struct {
	mu      sync.Mutex
	cfg     Config
	labels  map[string]string
	nodeIPs []netip.Addr
	built   map[*corev1.Service]*builtService
	inc     *incremental
}

// builtService is what building one Service produced. A Builder keeps one
// per Service.
type builtService struct {
	slices   []*discoveryv1.EndpointSlice
	ports    []*ServicePort
	ext      *ExternalName
	problems *problems // nil for none, as for most Services
}

func newBuiltService(sl []*discoveryv1.EndpointSlice, ports []*ServicePort, ext *ExternalName, ps problems) *builtService {
	got := &builtService{slices: slices.Clone(sl), ports: ports, ext: ext}
	if len(ps.list) > 0 {
		got.problems = &ps
	}
	return got
}

// Build returns Build(in, cfg), reusing what it can from the last call.
func (m *Builder) Build(in Inputs, cfg Config) *State {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.incrementalBuild(in, cfg)
	if st == nil {
		var raw [2][]*ServicePort
		st, raw = build(in, cfg, m)
		m.reindex(in, st, raw)
	}
	st.id = stateIDs.Add(1)
	return st
}

// start is called once the builder knows the node: it forgets everything
// when what every Service depends on has changed.
func (m *Builder) start(b *builder) map[*corev1.Service]*builtService {
	if m.built == nil || !reflect.DeepEqual(m.cfg, b.cfg) || !reflect.DeepEqual(m.labels, b.labels) || !slices.Equal(m.nodeIPs, b.nodeIPs) {
		m.built = nil
	}
	prev := m.built
	m.cfg, m.labels, m.nodeIPs = b.cfg, b.labels, slices.Clone(b.nodeIPs)
	m.built = map[*corev1.Service]*builtService{}
	return prev
}

// service builds svc, or reuses its last build.
func (m *Builder) service(b *builder, prev map[*corev1.Service]*builtService, svc *corev1.Service, sl []*discoveryv1.EndpointSlice) ([]*ServicePort, *ExternalName) {
	if got := prev[svc]; got != nil && slices.Equal(got.slices, sl) {
		m.built[svc] = got
		if got.problems != nil {
			b.problems.merge(got.problems)
		}
		return got.ports, got.ext
	}
	// Build with a problem list of its own, kept for the next reuse.
	outer := b.problems
	b.problems = problems{}
	ports, ext := b.service(svc, sl)
	got := newBuiltService(sl, ports, ext, b.problems)
	b.problems = outer
	if got.problems != nil {
		b.problems.merge(got.problems)
	}
	m.built[svc] = got
	return ports, ext
}
