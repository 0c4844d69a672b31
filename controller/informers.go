package controller

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/svcproxy/svcproxy/proxy"
)

// proxySelector is kube-proxy's: objects of other proxies and headless
// Services are not watched at all.
const proxySelector = "!" + proxy.LabelServiceProxyName + ",!" + proxy.LabelHeadless

// InformerSource watches an API server with client-go shared informers:
// all Services and EndpointSlices (minus other proxies' and headless ones),
// and this node's Node object.
//
// When a watch breaks, client-go's reflector resumes it from the last
// resource version it saw. When the API server can no longer serve that
// version — its watch cache or etcd's history has moved on (a long
// partition, an API server restart, an etcd compaction) — it answers 410
// Gone ("too old resource version"), and the reflector relists: it lists
// (or streams, with WatchList) every object again and the informer turns
// the difference with its cache into adds, updates and deletes. The
// objects in the cache stay until then, so the rules programmed from them
// stay too. Both steps are counted per resource (WatchStats), and an
// expiry is logged.
type InformerSource struct {
	client   kubernetes.Interface
	nodeName string
	resync   time.Duration
	stats    map[string]*watchCounters // by kind

	mu       sync.Mutex
	triggers []time.Time // last-change-trigger-times of slices changed since the last drain

	strings interner // shared by the transforms

	stores    [3]cache.Store   // services, slices, nodes
	changes   [3]atomic.Uint64 // changes the handlers saw, per store
	listMu    sync.Mutex
	lists     [3]cachedList // Inputs' last lists, per store
	services  corelisters.ServiceLister
	slices    discoverylisters.EndpointSliceLister
	nodes     corelisters.NodeLister
	hasSynced []cache.InformerSynced
}

// NewInformerSource returns a Source backed by client. resync is the
// informers' resync period (0: none; kube-proxy uses --config-sync-period).
func NewInformerSource(client kubernetes.Interface, nodeName string, resync time.Duration) *InformerSource {
	s := &InformerSource{client: client, nodeName: nodeName, resync: resync, stats: map[string]*watchCounters{}}
	for kind := range Resources {
		s.stats[kind] = &watchCounters{}
	}
	return s
}

// Resources are the API resources an InformerSource watches, by the kind
// it reports changes with.
var Resources = map[string]string{"service": "services", "endpointslice": "endpointslices", "node": "nodes"}

// WatchStats is what one informer's reflector did since Start.
type WatchStats struct {
	// Lists counts complete lists received: the first one, and every
	// relist after it (a LIST, or a watch with initial events up to its
	// end bookmark when client-go uses WatchList).
	Lists uint64
	// Expired counts watches the API server refused or ended with 410 Gone
	// (resource version too old); each is followed by a relist.
	Expired uint64
}

type watchCounters struct{ lists, expired atomic.Uint64 }

// WatchStats returns the counts of each kind ("service", "endpointslice",
// "node"); all zero before Start.
func (s *InformerSource) WatchStats() map[string]WatchStats {
	out := map[string]WatchStats{}
	for kind, c := range s.stats {
		out[kind] = WatchStats{Lists: c.lists.Load(), Expired: c.expired.Load()}
	}
	return out
}

// listWatch is what client-go's generated informers use (ListWatch with
// WatchList semantics), with list and watch counted and expiries logged.
func (s *InformerSource) listWatch(kind string, tweak func(*metav1.ListOptions),
	list func(context.Context, metav1.ListOptions) (runtime.Object, error),
	watchFn func(context.Context, metav1.ListOptions) (watch.Interface, error)) cache.ListerWatcher {
	c := s.stats[kind]
	expired := func(err error) bool {
		if !apierrors.IsResourceExpired(err) && !apierrors.IsGone(err) {
			return false
		}
		c.expired.Add(1)
		klog.InfoS("Watch expired; relisting", "resource", Resources[kind], "err", err.Error())
		return true
	}
	return cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			tweak(&o)
			obj, err := list(ctx, o)
			if err == nil {
				// A paginated list is complete with its last page.
				if l, lerr := meta.ListAccessor(obj); lerr == nil && l.GetContinue() == "" {
					c.lists.Add(1)
				}
			}
			return obj, err
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			tweak(&o)
			w, err := watchFn(ctx, o)
			if err != nil {
				expired(err)
				return nil, err
			}
			initial := o.SendInitialEvents != nil && *o.SendInitialEvents
			return newObservedWatch(w, func(e watch.Event) {
				switch e.Type {
				case watch.Error:
					expired(apierrors.FromObject(e.Object))
				case watch.Bookmark:
					if initial {
						if m, err := meta.Accessor(e.Object); err == nil && m.GetAnnotations()[metav1.InitialEventsAnnotationKey] == "true" {
							c.lists.Add(1)
						}
					}
				}
			}), nil
		},
	}, s.client)
}

// observedWatch passes a watch's events on after showing each to observe.
type observedWatch struct {
	in     watch.Interface
	out    chan watch.Event
	stop   chan struct{}
	closer sync.Once
}

func newObservedWatch(in watch.Interface, observe func(watch.Event)) *observedWatch {
	w := &observedWatch{in: in, out: make(chan watch.Event), stop: make(chan struct{})}
	go func() {
		defer close(w.out)
		for e := range in.ResultChan() {
			observe(e)
			select {
			case w.out <- e:
			case <-w.stop: // the consumer is gone: do not block on it
				return
			}
		}
	}()
	return w
}

func (w *observedWatch) ResultChan() <-chan watch.Event { return w.out }

func (w *observedWatch) Stop() {
	w.closer.Do(func() { close(w.stop) })
	w.in.Stop()
}

// Start implements Source.
func (s *InformerSource) Start(ctx context.Context, notify func(string)) error {
	proxied := func(o *metav1.ListOptions) { o.LabelSelector = proxySelector }
	thisNode := func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", s.nodeName).String()
	}
	// No namespace index: the listers are used for Get by key and for
	// listing everything, neither of which reads it, and it would cost a
	// set entry per object.
	newInformer := func(lw cache.ListerWatcher, obj runtime.Object) cache.SharedIndexInformer {
		return cache.NewSharedIndexInformerWithOptions(lw, obj, cache.SharedIndexInformerOptions{
			ResyncPeriod: s.resync,
			Indexers:     cache.Indexers{},
		})
	}
	core, disc := s.client.CoreV1(), s.client.DiscoveryV1()
	listServices := streamedList(core.RESTClient(), "services", "ServiceList", serviceMeta, s.trimService,
		func(o *corev1.Service) runtime.Object { return listedService{o} }, listOf(core.Services("").List))
	listSlices := streamedList(disc.RESTClient(), "endpointslices", "EndpointSliceList", sliceMeta, s.trimEndpointSlice,
		func(o *discoveryv1.EndpointSlice) runtime.Object { return listedSlice{o} }, listOf(disc.EndpointSlices("").List))
	svc := newInformer(s.listWatch("service", proxied, listServices, core.Services("").Watch), &corev1.Service{})
	sl := newInformer(s.listWatch("endpointslice", proxied, listSlices, disc.EndpointSlices("").Watch), &discoveryv1.EndpointSlice{})
	node := newInformer(s.listWatch("node", thisNode, listOf(core.Nodes().List), core.Nodes().Watch), &corev1.Node{})
	if err := svc.SetTransform(s.transformService); err != nil {
		return err
	}
	if err := sl.SetTransform(s.transformEndpointSlice); err != nil {
		return err
	}
	for i, x := range []struct {
		inf  cache.SharedIndexInformer
		kind string
	}{{svc, "service"}, {sl, "endpointslice"}, {node, "node"}} {
		kind, changed := x.kind, &s.changes[i]
		if _, err := x.inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: func(obj any) { s.trigger(obj); changed.Add(1); notify(kind) },
			UpdateFunc: func(old, cur any) {
				if o, ok := old.(metav1.Object); ok {
					if c, ok := cur.(metav1.Object); ok && o.GetResourceVersion() == c.GetResourceVersion() {
						return // a periodic resync: nothing changed
					}
				}
				s.trigger(cur)
				changed.Add(1)
				notify(kind)
			},
			DeleteFunc: func(any) { changed.Add(1); notify(kind) },
		}); err != nil {
			return err
		}
		s.hasSynced = append(s.hasSynced, x.inf.HasSynced)
	}
	s.stores = [3]cache.Store{svc.GetStore(), sl.GetStore(), node.GetStore()}
	s.services = corelisters.NewServiceLister(svc.GetIndexer())
	s.slices = discoverylisters.NewEndpointSliceLister(sl.GetIndexer())
	s.nodes = corelisters.NewNodeLister(node.GetIndexer())
	for _, inf := range []cache.SharedIndexInformer{svc, sl, node} {
		go inf.RunWithContext(ctx)
	}
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

// Inputs implements Source. It runs at every sync: each list is made in
// one pass, at its exact length (the listers' List appends to a growing
// slice, which was then copied), and only when its store changed since the
// last call (most changes are to EndpointSlices; at 50k Services a list of
// them is 1.2 MB of garbage). The lists are shared: read-only.
func (s *InformerSource) Inputs() proxy.Inputs {
	s.listMu.Lock()
	defer s.listMu.Unlock()
	return proxy.Inputs{
		Services:       listOnChange[*corev1.Service](s, 0),
		EndpointSlices: listOnChange[*discoveryv1.EndpointSlice](s, 1),
		Nodes:          listOnChange[*corev1.Node](s, 2),
	}
}

type cachedList struct {
	changes uint64 // the store's as the list was made
	list    any    // []T; nil before the first list
}

// listOnChange is store i's objects: the list Inputs made last if the
// handlers have seen no change since, else a new one. A store changes
// before its handler counts the change and kicks a sync, so a list made
// between the two is made again at that sync.
func listOnChange[T any](s *InformerSource, i int) []T {
	c := &s.lists[i]
	n := s.changes[i].Load()
	if c.list != nil && c.changes == n {
		return c.list.([]T)
	}
	l := listAll[T](s.stores[i])
	*c = cachedList{changes: n, list: l}
	return l
}

func listAll[T any](store cache.Store) []T {
	objs := store.List()
	if len(objs) == 0 {
		return nil
	}
	out := make([]T, 0, len(objs))
	for _, o := range objs {
		if t, ok := o.(T); ok {
			out = append(out, t)
		}
	}
	return out
}

// listOf adapts a typed client's List to the untyped one a ListWatch takes.
func listOf[L runtime.Object](list func(context.Context, metav1.ListOptions) (L, error)) func(context.Context, metav1.ListOptions) (runtime.Object, error) {
	return func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return list(ctx, o) }
}
