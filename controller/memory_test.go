package controller

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/svcproxy/svcproxy/nft"
	"github.com/svcproxy/svcproxy/proxy"
	"github.com/svcproxy/svcproxy/sandbox"
	"github.com/svcproxy/svcproxy/scale"
)

// BenchmarkInformerMemory measures what the informer caches retain: the
// heap after a full list of N Services, or N EndpointSlices of E
// endpoints, has been decoded from protobuf (as the API server sends it),
// transformed and stored, minus the heap before. The objects are package
// scale's, with what the API server adds (uid, resource version,
// creationTimestamp, managedFields, defaulted fields), as svcproxy-bench
// creates them. Deterministic, unlike the daemon's RSS. peak-MiB is the
// largest heap while listing (garbage included; it depends on when the
// collector runs):
//
//	go test ./controller -run '^$' -bench InformerMemory -benchtime 1x
//
// HEAP_PROFILE=FILE writes a heap profile at the measurement (with
// -memprofilerate 64 for detail), for go tool pprof -inuse_space.
func BenchmarkInformerMemory(b *testing.B) {
	for _, n := range []int{10000, 50000} {
		svcs, sls := servedCluster(n, 10)
		svcList, sliceList := encode(b, svcs), encode(b, sls)
		for _, c := range []struct {
			name, unit         string
			svcList, sliceList []byte
		}{
			{fmt.Sprintf("services=%d", n), "B/service", svcList, nil},
			{fmt.Sprintf("slices=%d/endpoints=10", n), "B/slice", nil, sliceList},
		} {
			b.Run(c.name, func(b *testing.B) {
				for range b.N {
					kept, peak := retained(b, c.svcList, c.sliceList)
					b.ReportMetric(kept/float64(n), c.unit)
					b.ReportMetric(kept/(1<<20), "MiB")
					b.ReportMetric(peak/(1<<20), "peak-MiB")
				}
			})
		}
	}
}

// servedCluster is package scale's n Services and their slices of eps
// endpoints as the API server serves them: with the metadata it adds
// (served) and the fields it defaults.
func servedCluster(n, eps int) (*corev1.ServiceList, *discoveryv1.EndpointSliceList) {
	in := scale.Cluster(n, eps)
	svcs := &corev1.ServiceList{ListMeta: metav1.ListMeta{ResourceVersion: "100000000"}}
	sls := &discoveryv1.EndpointSliceList{ListMeta: metav1.ListMeta{ResourceVersion: "100000000"}}
	for i, s := range in.Services {
		served(&s.ObjectMeta, i)
		s.Spec.ClusterIPs = []string{s.Spec.ClusterIP}
		s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol}
		s.Spec.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicySingleStack)
		s.Spec.InternalTrafficPolicy = ptr.To(corev1.ServiceInternalTrafficPolicyCluster)
		if s.Spec.SessionAffinity == "" {
			s.Spec.SessionAffinity = corev1.ServiceAffinityNone
		}
		if s.Spec.Type != corev1.ServiceTypeClusterIP && s.Spec.ExternalTrafficPolicy == "" {
			s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyCluster
		}
		for j := range s.Spec.Ports {
			s.Spec.Ports[j].TargetPort.IntVal = s.Spec.Ports[j].Port
		}
		svcs.Items = append(svcs.Items, *s)
	}
	for i, sl := range in.EndpointSlices {
		served(&sl.ObjectMeta, n+i)
		sl.Generation = 1
		sls.Items = append(sls.Items, *sl)
	}
	return svcs, sls
}

// served sets the metadata the API server adds, as it adds it (the
// managedFields of a client-go create).
func served(m *metav1.ObjectMeta, i int) {
	m.UID = types.UID(fmt.Sprintf("%08x-0871-4512-8624-db924454c028", i))
	m.ResourceVersion = fmt.Sprint(1000 + i)
	m.CreationTimestamp = metav1.NewTime(time.Unix(1700000000, 0))
	m.ManagedFields = []metav1.ManagedFieldsEntry{{
		Manager: "svcproxy-bench", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "v1",
		Time: &m.CreationTimestamp, FieldsType: "FieldsV1",
		FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:spec":{"f:internalTrafficPolicy":{},"f:ports":{".":{},"k:{\"port\":80,\"protocol\":\"TCP\"}":{".":{},"f:name":{},"f:port":{},"f:protocol":{},"f:targetPort":{}}},"f:sessionAffinity":{},"f:type":{}}}`)},
	}}
}

var protobufCodec = protobuf.NewSerializer(scheme.Scheme, scheme.Scheme)

// encode is obj as the API server sends it to client-go.
func encode(b testing.TB, obj kruntime.Object) []byte {
	b.Helper()
	gvks, _, err := scheme.Scheme.ObjectKinds(obj)
	if err != nil {
		b.Fatal(err)
	}
	obj.GetObjectKind().SetGroupVersionKind(gvks[0])
	var buf bytes.Buffer
	if err := protobufCodec.Encode(obj, &buf); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}

// retained is the heap an InformerSource keeps after listing services and
// slices (protobuf lists; nil: none) from fakeAPIServer, and the largest
// heap (objects, garbage included) while listing, both net of the heap
// before. The daemon's client, decoding and reflector are the real ones.
func retained(b *testing.B, services, slices []byte) (kept, peak float64) {
	b.Helper()
	srv, c := fakeAPIServer(b, services, slices)
	defer srv.Close()

	before := heapAfterGC()
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	var top uint64
	done := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			metrics.Read(sample)
			top = max(top, sample[0].Value.Uint64())
			select {
			case <-done:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	s, stop := syncedSource(b, c)
	close(done)
	<-sampled
	defer stop()
	in := s.Inputs()
	if len(in.Services)+len(in.EndpointSlices) == 0 {
		b.Fatalf("listed %d services, %d slices", len(in.Services), len(in.EndpointSlices))
	}
	in = proxy.Inputs{}
	// The handlers' notifications are transient; let them drain.
	time.Sleep(500 * time.Millisecond)
	after := heapAfterGC()
	if f := os.Getenv("HEAP_PROFILE"); f != "" {
		w, _ := os.Create(f)
		pprof.WriteHeapProfile(w)
		w.Close()
	}
	runtime.KeepAlive(s)
	return float64(after) - float64(before), float64(top) - float64(before)
}

func heapAfterGC() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// fakeAPIServer serves services and slices (protobuf lists; nil: none) as
// the test API server does: lists in protobuf, no WatchList, watches that
// stay open without events.
func fakeAPIServer(b testing.TB, services, slices []byte) (*httptest.Server, kubernetes.Interface) {
	b.Helper()
	rv := metav1.ListMeta{ResourceVersion: "1"}
	if services == nil {
		services = encode(b, &corev1.ServiceList{ListMeta: rv})
	}
	if slices == nil {
		slices = encode(b, &discoveryv1.EndpointSliceList{ListMeta: rv})
	}
	lists := map[string][]byte{
		"/api/v1/services":                         services,
		"/apis/discovery.k8s.io/v1/endpointslices": slices,
		"/api/v1/nodes":                            encode(b, &corev1.NodeList{ListMeta: rv}),
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		switch {
		case q.Get("sendInitialEvents") == "true":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"BadRequest","code":400}`)
		case q.Get("watch") == "true" || q.Get("watch") == "1":
			w.Header().Set("Content-Type", "application/vnd.kubernetes.protobuf;stream=watch")
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		default:
			data, ok := lists[r.URL.Path]
			if !ok {
				http.NotFound(w, r)
				return
			}
			w.Header().Set("Content-Type", "application/vnd.kubernetes.protobuf")
			w.Write(data)
		}
	}))
	c, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL})
	if err != nil {
		b.Fatal(err)
	}
	return srv, c

}

// BenchmarkInputs is what a sync's InformerSource.Inputs allocates, at 10k
// Services and slices, when both stores changed since the last sync (a
// sync after EndpointSlice changes only lists the slices).
func BenchmarkInputs(b *testing.B) {
	in := scale.Cluster(10000, 1)
	svcs := corev1.ServiceList{ListMeta: metav1.ListMeta{ResourceVersion: "1"}}
	sls := discoveryv1.EndpointSliceList{ListMeta: metav1.ListMeta{ResourceVersion: "1"}}
	for i := range in.Services {
		svcs.Items = append(svcs.Items, *in.Services[i])
		sls.Items = append(sls.Items, *in.EndpointSlices[i])
	}
	srv, c := fakeAPIServer(b, encode(b, &svcs), encode(b, &sls))
	defer srv.Close()
	s, stop := syncedSource(b, c)
	defer stop()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		s.changes[0].Add(1)
		s.changes[1].Add(1)
		if in := s.Inputs(); len(in.Services) != 10000 || len(in.EndpointSlices) != 10000 {
			b.Fatalf("%d services, %d slices", len(in.Services), len(in.EndpointSlices))
		}
	}
}

// syncedSource starts the daemon's informers on c and waits until they
// hold the first complete view; stop ends them.
func syncedSource(b testing.TB, c kubernetes.Interface) (s *InformerSource, stop func()) {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s = NewInformerSource(c, "node-0", 0)
	if err := s.Start(ctx, func(string) {}); err != nil {
		cancel()
		b.Fatal(err)
	}
	if !s.WaitForSync(ctx) {
		cancel()
		b.Fatal("informers did not sync")
	}
	return s, cancel
}

// BenchmarkColdStart is the daemon's start at N Services × 10 endpoints in
// one process, as the daemon runs it: an InformerSource listing package
// scale's cluster (served as protobuf lists, as in BenchmarkInformerMemory),
// then the Controller's first sync (its Builder and the nftables backend,
// into a network namespace), then the release that follows it. Reported,
// net of the process before: the largest memory the Go runtime held
// (peak-MiB; the daemon's VmHWM but for its binary), and after the start
// and the release that follows it the live heap (live-MiB), the free room
// in the spans that hold it (frag-MiB: resident too, Go does not compact),
// and what the runtime holds (held-MiB); and the first sync's duration
// (sync-s: from the caches' first complete view to the sync's end). Root
// only (a network namespace).
//
//	go test ./controller -run '^$' -bench ColdStart -benchtime 1x
func BenchmarkColdStart(b *testing.B) {
	sandbox.Require(b, "nft")
	for _, n := range []int{10000, 50000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			svcs, sls := servedCluster(n, 10)
			srv, c := fakeAPIServer(b, encode(b, svcs), encode(b, sls))
			defer srv.Close()
			svcs, sls = nil, nil
			for range b.N {
				coldStart(b, c)
			}
		})
	}
}

func coldStart(b *testing.B, c kubernetes.Interface) {
	ns := sandbox.New(b, "cold")
	read := func() (live, unused, held uint64) {
		s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/memory/classes/heap/unused:bytes"},
			{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
		metrics.Read(s)
		return s[0].Value.Uint64(), s[1].Value.Uint64(), s[2].Value.Uint64() - s[3].Value.Uint64()
	}
	debug.FreeOSMemory()
	live0, unused0, held0 := read()
	synced := make(chan struct{}, 1)
	src := &timedSource{InformerSource: NewInformerSource(c, "node-0", 0)}
	ctl := &Controller{Source: src, Backend: nft.New(nft.WithNetNS(ns.FD())),
		Config: scale.Config(), SyncPeriod: time.Hour, Memory: &MemoryHeadroom{Fraction: 0.25, Min: 32 << 20},
		Hooks: Hooks{Synced: func(*proxy.State, proxy.Inputs) { synced <- struct{}{} }}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go ctl.Run(ctx)
	peak := held0
	for waiting := true; waiting; {
		select {
		case <-synced:
			waiting = false
		case <-time.After(time.Millisecond):
		}
		_, _, held := read()
		peak = max(peak, held)
	}
	first := time.Since(src.synced)
	debug.FreeOSMemory() // as the daemon's release after the sync does
	live, unused, held := read()
	mib := func(a, b uint64) float64 { return (float64(a) - float64(b)) / (1 << 20) }
	b.ReportMetric(first.Seconds(), "sync-s")
	b.ReportMetric(mib(peak, held0), "peak-MiB")
	b.ReportMetric(mib(live, live0), "live-MiB")
	b.ReportMetric(mib(unused, unused0), "frag-MiB")
	b.ReportMetric(mib(held, held0), "held-MiB")
	runtime.KeepAlive(ctl)
	debug.SetMemoryLimit(math.MaxInt64)
}

// timedSource notes when its caches hold a first complete view.
type timedSource struct {
	*InformerSource
	synced time.Time
}

func (t *timedSource) WaitForSync(ctx context.Context) bool {
	ok := t.InformerSource.WaitForSync(ctx)
	t.synced = time.Now()
	return ok
}
