package controller

import (
	"slices"
	"strings"
	"sync"
	"weak"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/svcproxy/svcproxy/proxy"
)

// The informer caches hold every Service and EndpointSlice of the cluster
// for as long as the daemon runs. Their transforms, applied as objects
// enter the caches, keep what svcproxy reads — the model (package proxy),
// the trigger-time metric, and Events (name, namespace, UID, resource
// version) — and drop the rest: managedFields, annotations, other labels,
// selectors, pods' references, and the like, which in real clusters are
// most of an object. They also share the values that repeat across
// objects (node names, endpoint conditions, port names and protocols) and
// trim the endpoint lists' spare capacity left by decoding.
//
// The objects stay read-only as always: shared values must never be
// written through. TestTransformsKeepTheModel builds with and without
// them.

// listedService and listedSlice wrap the objects an initial list (or a
// relist) transformed as it decoded them (streamedList): the informer's
// transform, which sees every object before it is stored, only unwraps
// them. As metav1.Objects they give the informer their keys.
type (
	listedService struct{ *corev1.Service }
	listedSlice   struct{ *discoveryv1.EndpointSlice }
)

// transformService is the Service informer's transform.
func (s *InformerSource) transformService(obj any) (any, error) {
	return transform(obj, s.trimService, func(l listedService) *corev1.Service { return l.Service })
}

// transformEndpointSlice is the EndpointSlice informer's transform.
func (s *InformerSource) transformEndpointSlice(obj any) (any, error) {
	return transform(obj, s.trimEndpointSlice, func(l listedSlice) *discoveryv1.EndpointSlice { return l.EndpointSlice })
}

// transform trims obj if it is a *T, unwraps it if a list trimmed it
// already (L), and leaves anything else as it is.
func transform[T, L any](obj any, trim func(*T), unwrap func(L) *T) (any, error) {
	switch o := obj.(type) {
	case L:
		return unwrap(o), nil
	case *T:
		trim(o)
		return o, nil
	}
	return obj, nil
}

// trimService keeps, and shares, what svcproxy reads of a Service.
func (s *InformerSource) trimService(svc *corev1.Service) {
	serviceMeta.trim(&svc.ObjectMeta)
	svc.Namespace = s.strings.value(svc.Namespace)
	sp := &svc.Spec
	// Enumerations: one copy of each value instead of one per Service.
	sp.Type = corev1.ServiceType(s.strings.value(string(sp.Type)))
	sp.SessionAffinity = corev1.ServiceAffinity(s.strings.value(string(sp.SessionAffinity)))
	sp.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicy(s.strings.value(string(sp.ExternalTrafficPolicy)))
	if p := sp.InternalTrafficPolicy; p != nil {
		if q := internalPolicies[*p]; q != nil {
			sp.InternalTrafficPolicy = q
		}
	}
	sp.Selector = nil
	sp.IPFamilies, sp.IPFamilyPolicy = nil, nil
	sp.LoadBalancerIP, sp.LoadBalancerClass = "", nil
	sp.AllocateLoadBalancerNodePorts, sp.TrafficDistribution = nil, nil
	sp.PublishNotReadyAddresses = false
	if len(sp.ClusterIPs) > 0 && sp.ClusterIPs[0] == sp.ClusterIP {
		sp.ClusterIPs[0] = sp.ClusterIP // one copy of the string
	}
	for i := range sp.Ports {
		p := &sp.Ports[i]
		p.TargetPort, p.AppProtocol = intOrStringZero, nil
		p.Name, p.Protocol = s.strings.value(p.Name), corev1.Protocol(s.strings.value(string(p.Protocol)))
	}
	st := &svc.Status
	st.Conditions = nil
	for i := range st.LoadBalancer.Ingress {
		ing := &st.LoadBalancer.Ingress[i]
		ing.Hostname, ing.Ports = "", nil
		if m := ing.IPMode; m != nil {
			if q := ipModes[*m]; q != nil {
				ing.IPMode = q
			}
		}
	}
}

// trimEndpointSlice keeps, and shares, what svcproxy reads of a slice.
func (s *InformerSource) trimEndpointSlice(sl *discoveryv1.EndpointSlice) {
	sliceMeta.trim(&sl.ObjectMeta)
	sl.Namespace = s.strings.value(sl.Namespace)
	for i := range sl.Ports {
		p := &sl.Ports[i]
		p.AppProtocol = nil
		p.Name = s.strings.ptr(p.Name)
		if p.Protocol != nil {
			if q := protocols[*p.Protocol]; q != nil {
				p.Protocol = q
			}
		}
	}
	// A fresh array of the exact length: decoding leaves up to twice the
	// capacity.
	sl.Endpoints = slices.Clip(slices.Clone(sl.Endpoints))
	packAddresses(sl.Endpoints)
	for i := range sl.Endpoints {
		ep := &sl.Endpoints[i]
		ep.Hostname, ep.TargetRef, ep.DeprecatedTopology, ep.Zone = nil, nil, nil, nil
		ep.NodeName = s.strings.ptr(ep.NodeName)
		c := &ep.Conditions
		c.Ready, c.Serving, c.Terminating = sharedBool(c.Ready), sharedBool(c.Serving), sharedBool(c.Terminating)
		if h := ep.Hints; h != nil {
			for j := range h.ForZones {
				h.ForZones[j].Name = s.strings.value(h.ForZones[j].Name)
			}
			for j := range h.ForNodes {
				h.ForNodes[j].Name = s.strings.value(h.ForNodes[j].Name)
			}
		}
	}
}

// packAddresses keeps each endpoint's first address, the only one read
// (consumers must use the first, the API says; the others are
// fungible), in two allocations for the whole slice — one string holding
// every address, one array for the Addresses slices — instead of two per
// endpoint: decoding allocates each address and each one-string array on
// its own, rounded up to the allocator's size classes.
func packAddresses(eps []discoveryv1.Endpoint) {
	size, n := 0, 0
	for i := range eps {
		if a := eps[i].Addresses; len(a) > 0 {
			size += len(a[0])
			n++
		}
	}
	if n == 0 {
		return
	}
	var b strings.Builder
	b.Grow(size)
	for i := range eps {
		if a := eps[i].Addresses; len(a) > 0 {
			b.WriteString(a[0])
		}
	}
	all, arr := b.String(), make([]string, n)
	for i := range eps {
		ep := &eps[i]
		if len(ep.Addresses) == 0 {
			continue
		}
		l := len(ep.Addresses[0])
		arr[0], all = all[:l], all[l:]
		ep.Addresses, arr = arr[:1:1], arr[1:]
	}
}

// metaKeep is what the caches keep of an object's metadata: what
// identifies it (for the caches, the model's ordering and Events), its UID
// if uid, and the labels and annotations under the keys given.
type metaKeep struct {
	uid                 bool
	labels, annotations []string
}

var (
	serviceMeta = metaKeep{uid: true, labels: []string{proxy.LabelServiceProxyName, proxy.LabelHeadless}}
	// Events name the Service, never a slice: a slice's UID is not read.
	sliceMeta = metaKeep{labels: []string{discoveryv1.LabelServiceName, proxy.LabelServiceProxyName, proxy.LabelHeadless},
		annotations: []string{corev1.EndpointsLastChangeTriggerTime}}
)

func (k metaKeep) trim(m *metav1.ObjectMeta) {
	uid := m.UID
	if !k.uid {
		uid = ""
	}
	*m = metav1.ObjectMeta{
		Name:              m.Name,
		Namespace:         m.Namespace,
		UID:               uid,
		ResourceVersion:   m.ResourceVersion,
		CreationTimestamp: m.CreationTimestamp,
		Labels:            only(m.Labels, k.labels),
		Annotations:       only(m.Annotations, k.annotations),
	}
}

// only returns the entries of m under keys, or nil if there are none. A
// map of up to 8 entries (one group: the least a Go map takes) is trimmed
// in place: a copy was as large, and the decoded map became garbage among
// the objects the caches keep. keys must be constants: the map keeps them.
func only(m map[string]string, keys []string) map[string]string {
	kept := 0
	for _, k := range keys {
		if _, ok := m[k]; ok {
			kept++
		}
	}
	switch {
	case kept == 0:
		return nil
	case len(m) <= 8:
		for k, v := range m {
			if i := slices.Index(keys, k); i >= 0 {
				m[keys[i]] = v // stores our key: the decoded copy is dropped
			} else {
				delete(m, k)
			}
		}
		return m
	}
	var out map[string]string
	for _, k := range keys {
		if v, ok := m[k]; ok {
			if out == nil {
				out = make(map[string]string, len(keys))
			}
			out[k] = v
		}
	}
	return out
}

var intOrStringZero = corev1.ServicePort{}.TargetPort

var (
	sharedTrue, sharedFalse = true, false
	protocols               = map[corev1.Protocol]*corev1.Protocol{}
	internalPolicies        = map[corev1.ServiceInternalTrafficPolicy]*corev1.ServiceInternalTrafficPolicy{}
	ipModes                 = map[corev1.LoadBalancerIPMode]*corev1.LoadBalancerIPMode{}
)

func init() {
	for _, p := range []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP} {
		protocols[p] = &p
	}
	for _, p := range []corev1.ServiceInternalTrafficPolicy{corev1.ServiceInternalTrafficPolicyCluster, corev1.ServiceInternalTrafficPolicyLocal} {
		internalPolicies[p] = &p
	}
	for _, m := range []corev1.LoadBalancerIPMode{corev1.LoadBalancerIPModeVIP, corev1.LoadBalancerIPModeProxy} {
		ipModes[m] = &m
	}
}

func sharedBool(b *bool) *bool {
	switch {
	case b == nil:
		return nil
	case *b:
		return &sharedTrue
	}
	return &sharedFalse
}

// interner shares one copy of equal strings among the objects in the
// caches. Pointers (ptr) are held weakly: a value no object uses any more
// is collected, and its entry swept later. Plain values (value) are held
// for good, so at most maxValues of them: beyond, values are not shared.
type interner struct {
	mu     sync.Mutex
	ptrs   map[string]weak.Pointer[string]
	sweep  int // sweep dead pointers when the map reaches this size
	values map[string]string
}

const maxValues = 4096

// ptr returns the shared pointer to *p's value (nil for nil).
func (in *interner) ptr(p *string) *string {
	if p == nil {
		return nil
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if q := in.ptrs[*p].Value(); q != nil {
		return q
	}
	if len(in.ptrs) >= in.sweep {
		for k, w := range in.ptrs {
			if w.Value() == nil {
				delete(in.ptrs, k)
			}
		}
		in.sweep = max(1024, 2*len(in.ptrs))
	}
	if in.ptrs == nil {
		in.ptrs = map[string]weak.Pointer[string]{}
	}
	in.ptrs[*p] = weak.Make(p)
	return p
}

// value returns the shared copy of s.
func (in *interner) value(s string) string {
	in.mu.Lock()
	defer in.mu.Unlock()
	if v, ok := in.values[s]; ok {
		return v
	}
	if len(in.values) < maxValues {
		if in.values == nil {
			in.values = map[string]string{}
		}
		in.values[s] = s
	}
	return s
}
