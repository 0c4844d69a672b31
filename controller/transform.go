package controller

import (
	"slices"
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

// transformService is the Service informer's transform.
func (s *InformerSource) transformService(obj any) (any, error) {
	svc, ok := obj.(*corev1.Service)
	if !ok {
		return obj, nil
	}
	trimMeta(&svc.ObjectMeta, []string{proxy.LabelServiceProxyName, proxy.LabelHeadless}, nil)
	sp := &svc.Spec
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
	}
	return svc, nil
}

// transformEndpointSlice is the EndpointSlice informer's transform.
func (s *InformerSource) transformEndpointSlice(obj any) (any, error) {
	sl, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return obj, nil
	}
	trimMeta(&sl.ObjectMeta, []string{discoveryv1.LabelServiceName, proxy.LabelServiceProxyName, proxy.LabelHeadless},
		[]string{corev1.EndpointsLastChangeTriggerTime})
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
	return sl, nil
}

// trimMeta keeps what identifies the object (for the caches, the model's
// ordering and Events) and the listed labels and annotations.
func trimMeta(m *metav1.ObjectMeta, labels, annotations []string) {
	*m = metav1.ObjectMeta{
		Name:              m.Name,
		Namespace:         m.Namespace,
		UID:               m.UID,
		ResourceVersion:   m.ResourceVersion,
		CreationTimestamp: m.CreationTimestamp,
		Labels:            only(m.Labels, labels),
		Annotations:       only(m.Annotations, annotations),
	}
}

// only returns the entries of m under keys, or nil if there are none.
func only(m map[string]string, keys []string) map[string]string {
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
)

func init() {
	for _, p := range []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP} {
		protocols[p] = &p
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
