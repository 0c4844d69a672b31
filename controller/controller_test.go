package controller

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/svcproxy/svcproxy/proxy"
)

// fakeSource is a Source whose objects and sync state the test sets.
type fakeSource struct {
	mu     sync.Mutex
	in     proxy.Inputs
	notify func(string)
	synced chan struct{}
}

func newFakeSource() *fakeSource { return &fakeSource{synced: make(chan struct{})} }

func (f *fakeSource) Start(_ context.Context, notify func(string)) error {
	f.mu.Lock()
	f.notify = notify
	f.mu.Unlock()
	return nil
}
func (f *fakeSource) WaitForSync(ctx context.Context) bool {
	select {
	case <-f.synced:
		return true
	case <-ctx.Done():
		return false
	}
}
func (f *fakeSource) Inputs() proxy.Inputs { f.mu.Lock(); defer f.mu.Unlock(); return f.in }

func (f *fakeSource) setServices(n int) {
	f.mu.Lock()
	f.in.Services = nil
	for i := range n {
		f.in.Services = append(f.in.Services, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: string(rune('a' + i))},
			Spec:       corev1.ServiceSpec{ClusterIP: "10.96.0." + string(rune('1'+i)), Ports: []corev1.ServicePort{{Port: 80}}},
		})
	}
	notify := f.notify
	f.mu.Unlock()
	if notify != nil {
		notify("service")
	}
}

// recordingBackend records syncs and can be told to fail.
type recordingBackend struct {
	mu       sync.Mutex
	syncs    []time.Time
	services []int
	fulls    int
	fail     int // fail this many syncs
}

func (r *recordingBackend) Sync(_ context.Context, s *proxy.State) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail > 0 {
		r.fail--
		return errors.New("kernel says no")
	}
	r.syncs = append(r.syncs, time.Now())
	r.services = append(r.services, len(s.IPv4.Services))
	return nil
}
func (r *recordingBackend) Cleanup(context.Context) error { return nil }
func (r *recordingBackend) Render(*proxy.State) string    { return "" }
func (r *recordingBackend) RequestFullSync()              { r.mu.Lock(); r.fulls++; r.mu.Unlock() }
func (r *recordingBackend) snapshot() ([]time.Time, []int, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]time.Time(nil), r.syncs...), append([]int(nil), r.services...), r.fulls
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func run(t *testing.T, c *Controller) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v", err)
		}
	})
}

func TestNothingIsProgrammedBeforeTheFirstCompleteView(t *testing.T) {
	src, be := newFakeSource(), &recordingBackend{}
	run(t, &Controller{Source: src, Backend: be, SyncPeriod: time.Hour})
	src.setServices(1)
	time.Sleep(100 * time.Millisecond)
	if s, _, _ := be.snapshot(); len(s) != 0 {
		t.Fatalf("synced %d times before the caches were synced", len(s))
	}
	close(src.synced)
	waitFor(t, "first sync", func() bool { s, _, _ := be.snapshot(); return len(s) == 1 })
	if _, svcs, fulls := be.snapshot(); svcs[0] != 1 || fulls != 1 {
		t.Errorf("first sync: %d services, %d full syncs requested; want 1, 1", svcs[0], fulls)
	}
}

func TestBurstsAreCoalescedAndSpacedByMinSyncPeriod(t *testing.T) {
	src, be := newFakeSource(), &recordingBackend{}
	close(src.synced)
	const minPeriod = 200 * time.Millisecond
	run(t, &Controller{Source: src, Backend: be, SyncPeriod: time.Hour, MinSyncPeriod: minPeriod})
	waitFor(t, "first sync", func() bool { s, _, _ := be.snapshot(); return len(s) == 1 })
	for i := range 50 {
		src.setServices(i%5 + 1)
	}
	src.setServices(7)
	waitFor(t, "the burst's sync", func() bool { _, svcs, _ := be.snapshot(); return len(svcs) > 1 && svcs[len(svcs)-1] == 7 })
	time.Sleep(2 * minPeriod)
	syncs, _, _ := be.snapshot()
	if len(syncs) > 3 {
		t.Errorf("a burst of 51 changes made %d syncs", len(syncs))
	}
	for i := 1; i < len(syncs); i++ {
		if gap := syncs[i].Sub(syncs[i-1]); gap < minPeriod-10*time.Millisecond {
			t.Errorf("syncs %d and %d only %v apart", i-1, i, gap)
		}
	}
}

func TestFailedSyncsAreRetried(t *testing.T) {
	src, be := newFakeSource(), &recordingBackend{fail: 2}
	close(src.synced)
	var failures int
	var mu sync.Mutex
	run(t, &Controller{Source: src, Backend: be, SyncPeriod: time.Hour,
		Hooks: Hooks{Failed: func(error) { mu.Lock(); failures++; mu.Unlock() }}})
	waitFor(t, "a sync after two failures", func() bool { s, _, _ := be.snapshot(); return len(s) == 1 })
	mu.Lock()
	defer mu.Unlock()
	if failures != 2 {
		t.Errorf("%d failures reported, want 2", failures)
	}
	if _, _, fulls := be.snapshot(); fulls < 2 {
		t.Errorf("retries after a failure should be full syncs; %d requested", fulls)
	}
}

func TestPeriodicFullSync(t *testing.T) {
	src, be := newFakeSource(), &recordingBackend{}
	close(src.synced)
	run(t, &Controller{Source: src, Backend: be, SyncPeriod: 100 * time.Millisecond})
	waitFor(t, "three full syncs", func() bool { _, _, f := be.snapshot(); return f >= 3 })
}

// The memory of a full sync goes back to the OS after it; partial syncs
// (small) leave it to the runtime.
func TestFullSyncsReleaseMemory(t *testing.T) {
	src, be := newFakeSource(), &recordingBackend{}
	var mu sync.Mutex
	releases := 0
	released := func() int { mu.Lock(); defer mu.Unlock(); return releases }
	c := &Controller{Source: src, Backend: be, SyncPeriod: time.Hour,
		freeOS: func() { mu.Lock(); releases++; mu.Unlock() }}
	ctx := context.Background()
	sync := func(full bool) {
		t.Helper()
		if err := c.sync(ctx, full); err != nil {
			t.Fatal(err)
		}
	}
	idle := func() bool { return !c.releasing.Load() }
	sync(true)
	waitFor(t, "the full sync's release", func() bool { return released() == 1 && idle() })
	for i := range 5 {
		src.setServices(i + 1)
		sync(false)
		waitFor(t, "no release running", idle) // one started by the sync has finished
	}
	if got := released(); got != 1 {
		t.Errorf("%d releases after one full and five partial syncs, want 1", got)
	}
	sync(true)
	waitFor(t, "the second full sync's release", func() bool { return released() >= 2 && idle() })
	if got := released(); got != 2 {
		t.Errorf("%d releases after two full and five partial syncs, want 2", got)
	}
}

// A full sync the backend skipped was an incremental one: nothing to
// release.
func TestSkippedFullSyncsReleaseNothing(t *testing.T) {
	src, be := newFakeSource(), &partialBackend{}
	var releases atomic.Int64
	c := &Controller{Source: src, Backend: be, SyncPeriod: time.Hour, freeOS: func() { releases.Add(1) }}
	for range 3 {
		if err := c.sync(context.Background(), true); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "no release running", func() bool { return !c.releasing.Load() })
	}
	if n := releases.Load(); n != 0 {
		t.Errorf("%d releases after three skipped full syncs", n)
	}
}

func TestProblemsAreReportedOnceWhileTheyLast(t *testing.T) {
	src, be := newFakeSource(), &recordingBackend{}
	close(src.synced)
	var mu sync.Mutex
	var reported []string
	run(t, &Controller{Source: src, Backend: be, SyncPeriod: 50 * time.Millisecond,
		Hooks: Hooks{NewProblems: func(ps []proxy.Problem) {
			mu.Lock()
			defer mu.Unlock()
			for _, p := range ps {
				reported = append(reported, p.String())
			}
		}}})
	bad := func(port int32) {
		src.mu.Lock()
		src.in.Services = []*corev1.Service{{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "bad"},
			Spec:       corev1.ServiceSpec{ClusterIP: "10.96.0.1", Ports: []corev1.ServicePort{{Name: "p", Port: port}}},
		}}
		notify := src.notify
		src.mu.Unlock()
		notify("service")
	}
	waitFor(t, "the source to start", func() bool { src.mu.Lock(); defer src.mu.Unlock(); return src.notify != nil })
	bad(70000)
	time.Sleep(300 * time.Millisecond) // several periodic syncs
	bad(80)
	time.Sleep(150 * time.Millisecond)
	bad(70000)
	waitFor(t, "the problem reported again", func() bool { mu.Lock(); defer mu.Unlock(); return len(reported) == 2 })
	time.Sleep(150 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	want := "Service ns/bad: spec.ports[0].port: 70000 is out of range 1-65535: port skipped"
	if len(reported) != 2 || reported[0] != want || reported[1] != want {
		t.Errorf("reported %q", reported)
	}
}

// triggerSource adds trigger times to fakeSource.
type triggerSource struct {
	*fakeSource
	times []time.Time
}

func (s *triggerSource) DrainTriggerTimes() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.times
	s.times = nil
	return t
}

func TestNetworkProgrammingLatencyIsObserved(t *testing.T) {
	src := &triggerSource{fakeSource: newFakeSource(), times: []time.Time{time.Now().Add(-3 * time.Second)}}
	close(src.synced)
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg, "sync_proxy_rules_nftables_sync_failures_total")
	be := &recordingBackend{}
	run(t, &Controller{Source: src, Backend: be, SyncPeriod: time.Hour, Metrics: m})
	waitFor(t, "a sync", func() bool { s, _, _ := be.snapshot(); return len(s) >= 1 })
	out, err := testutil.CollectAndFormat(m.networkProgramming, expfmt.TypeTextPlain, "kubeproxy_network_programming_duration_seconds")
	if err != nil {
		t.Fatal(err)
	}
	// One observation of ~3 s: in the 3 s bucket's cumulative count, not the 2 s one.
	for _, want := range []string{`le="2"} 0`, `le="4"} 1`, "kubeproxy_network_programming_duration_seconds_count 1"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("missing %q in\n%s", want, out)
		}
	}
}

// partialBackend is a recordingBackend that reports every periodic full
// sync as done incrementally (as the nftables backend does when nothing
// changed).
type partialBackend struct{ recordingBackend }

func (s *partialBackend) LastSyncFull() bool { return false }

// The full and partial sync metrics count what the backend did, not what
// was requested.
func TestMetricsCountSkippedFullSyncsAsPartial(t *testing.T) {
	src, be := newFakeSource(), &partialBackend{}
	close(src.synced)
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg, "sync_proxy_rules_nftables_sync_failures_total")
	run(t, &Controller{Source: src, Backend: be, SyncPeriod: 20 * time.Millisecond, Metrics: m})
	waitFor(t, "periodic syncs", func() bool { _, _, fulls := be.snapshot(); return fulls >= 3 })
	count := func(name string) uint64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == name {
				return mf.GetMetric()[0].GetHistogram().GetSampleCount()
			}
		}
		return 0
	}
	if full, partial := count("kubeproxy_sync_full_proxy_rules_duration_seconds"), count("kubeproxy_sync_partial_proxy_rules_duration_seconds"); full != 0 || partial < 3 {
		t.Errorf("full syncs %d, partial %d; want 0 and at least 3", full, partial)
	}
}
