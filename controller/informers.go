package controller

import (
	"context"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/svcproxy/svcproxy/proxy"
)

// proxySelector is kube-proxy's: objects of other proxies and headless
// Services are not watched at all.
const proxySelector = "!" + proxy.LabelServiceProxyName + ",!" + proxy.LabelHeadless

// InformerSource watches an API server with client-go shared informers:
// all Services and EndpointSlices (minus other proxies' and headless ones),
// and this node's Node object.
type InformerSource struct {
	client   kubernetes.Interface
	nodeName string
	resync   time.Duration

	mu       sync.Mutex
	triggers []time.Time // last-change-trigger-times of slices changed since the last drain

	services  corelisters.ServiceLister
	slices    discoverylisters.EndpointSliceLister
	nodes     corelisters.NodeLister
	hasSynced []cache.InformerSynced
}

// NewInformerSource returns a Source backed by client. resync is the
// informers' resync period (0: none; kube-proxy uses --config-sync-period).
func NewInformerSource(client kubernetes.Interface, nodeName string, resync time.Duration) *InformerSource {
	return &InformerSource{client: client, nodeName: nodeName, resync: resync}
}

// Start implements Source.
func (s *InformerSource) Start(ctx context.Context, notify func(string)) error {
	f := informers.NewSharedInformerFactoryWithOptions(s.client, s.resync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = proxySelector }))
	nf := informers.NewSharedInformerFactoryWithOptions(s.client, s.resync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", s.nodeName).String()
		}))
	svc := f.Core().V1().Services()
	sl := f.Discovery().V1().EndpointSlices()
	node := nf.Core().V1().Nodes()
	for _, x := range []struct {
		inf  cache.SharedIndexInformer
		kind string
	}{{svc.Informer(), "service"}, {sl.Informer(), "endpointslice"}, {node.Informer(), "node"}} {
		kind := x.kind
		if _, err := x.inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: func(obj any) { s.trigger(obj); notify(kind) },
			UpdateFunc: func(old, cur any) {
				if o, ok := old.(metav1.Object); ok {
					if c, ok := cur.(metav1.Object); ok && o.GetResourceVersion() == c.GetResourceVersion() {
						return // a periodic resync: nothing changed
					}
				}
				s.trigger(cur)
				notify(kind)
			},
			DeleteFunc: func(any) { notify(kind) },
		}); err != nil {
			return err
		}
		s.hasSynced = append(s.hasSynced, x.inf.HasSynced)
	}
	s.services, s.slices, s.nodes = svc.Lister(), sl.Lister(), node.Lister()
	f.Start(ctx.Done())
	nf.Start(ctx.Done())
	return nil
}

// trigger remembers an EndpointSlice's last-change-trigger-time: the
// moment the change began, for kubeproxy_network_programming_duration_seconds.
func (s *InformerSource) trigger(obj any) {
	sl, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return
	}
	v, ok := sl.Annotations[corev1.EndpointsLastChangeTriggerTime]
	if !ok {
		return
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return
	}
	s.mu.Lock()
	s.triggers = append(s.triggers, t)
	s.mu.Unlock()
}

// DrainTriggerTimes returns and forgets the trigger times seen so far.
func (s *InformerSource) DrainTriggerTimes() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.triggers
	s.triggers = nil
	return t
}

// ServiceOf returns the Service a problem is about: the Service itself, or
// the one an EndpointSlice belongs to; nil if it is gone or unknown.
func (s *InformerSource) ServiceOf(p proxy.Problem) *corev1.Service {
	name := p.Name
	switch p.Kind {
	case "Service":
	case "EndpointSlice":
		sl, err := s.slices.EndpointSlices(p.Namespace).Get(p.Name)
		if err != nil {
			return nil
		}
		name = sl.Labels[discoveryv1.LabelServiceName]
	default:
		return nil
	}
	svc, err := s.services.Services(p.Namespace).Get(name)
	if err != nil {
		return nil
	}
	return svc
}

// WaitForSync implements Source.
func (s *InformerSource) WaitForSync(ctx context.Context) bool {
	return cache.WaitForCacheSync(ctx.Done(), s.hasSynced...)
}

// Inputs implements Source.
func (s *InformerSource) Inputs() proxy.Inputs {
	var in proxy.Inputs
	svcs, _ := s.services.List(labels.Everything())
	slices, _ := s.slices.List(labels.Everything())
	nodes, _ := s.nodes.List(labels.Everything())
	in.Services = append([]*corev1.Service(nil), svcs...)
	in.EndpointSlices = append([]*discoveryv1.EndpointSlice(nil), slices...)
	in.Nodes = append([]*corev1.Node(nil), nodes...)
	return in
}
