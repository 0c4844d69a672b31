package controller

import (
	"context"
	"math"
	"runtime"
	"runtime/debug"
	"testing"

	"github.com/svcproxy/svcproxy/proxy"
)

// keepLimit restores the process's soft memory limit after a test.
func keepLimit(t *testing.T) {
	orig := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(orig) })
}

func TestMemoryHeadroomFollowsTheLiveHeap(t *testing.T) {
	keepLimit(t)
	h := &MemoryHeadroom{Fraction: 0.5, Min: 1 << 20}
	runtime.GC()
	small := h.Limit()
	ballast := make([]byte, 64<<20)
	for i := range ballast {
		ballast[i] = byte(i)
	}
	runtime.GC()
	big := h.Limit()
	runtime.KeepAlive(ballast)
	// 64 MiB more live heap: the limit grows by it and by half of it.
	if grew := int64(big) - int64(small); grew < 90<<20 || grew > 110<<20 {
		t.Errorf("limit grew by %d MiB with 64 MiB more live heap, want ~96", grew>>20)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if big < ms.HeapAlloc+32<<20 {
		t.Errorf("limit %d MiB leaves less than half of the live heap (%d MiB) as headroom", big>>20, ms.HeapAlloc>>20)
	}
	h.Set()
	if got := debug.SetMemoryLimit(-1); got <= 0 || got == math.MaxInt64 {
		t.Errorf("limit after Set = %d", got)
	}
	h.Lift()
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Errorf("limit after Lift = %d, want none", got)
	}

	min := &MemoryHeadroom{Fraction: 0, Min: 200 << 20}
	if d := int64(min.Limit()) - int64(h.Limit()); d < 100<<20 {
		t.Errorf("Min 200 MiB raised the limit by only %d MiB over half of the live heap", d>>20)
	}
}

// Fragmentation, the free room in spans that also hold live objects, is
// resident whatever the limit: it is part of the limit's base, not taken
// out of the headroom (the runtime counts it as used).
func TestMemoryHeadroomCountsFragmentation(t *testing.T) {
	keepLimit(t)
	h := &MemoryHeadroom{} // no headroom: the limit is what the process holds
	runtime.GC()
	before := h.Limit()
	// 64 MiB of 64-byte objects, then every other one dropped: 32 MiB
	// live and 32 MiB of holes (and 8 MiB of pointers).
	objs := make([]*[64]byte, 1<<20)
	for i := range objs {
		objs[i] = new([64]byte)
	}
	for i := 0; i < len(objs); i += 2 {
		objs[i] = nil
	}
	runtime.GC()
	grew := int64(h.Limit()) - int64(before)
	runtime.KeepAlive(objs)
	if grew < 64<<20 {
		t.Errorf("limit grew by %d MiB with 40 MiB more live heap and 32 MiB of holes, want ~72", grew>>20)
	}
}

// limitBackend records the soft memory limit in force during each sync.
type limitBackend struct {
	recordingBackend
	limits []int64
}

func (l *limitBackend) Sync(ctx context.Context, s *proxy.State) error {
	l.limits = append(l.limits, debug.SetMemoryLimit(-1))
	return l.recordingBackend.Sync(ctx, s)
}

// A full sync runs without a limit; every sync leaves one behind.
func TestSyncsBoundTheHeapButFullSyncsDoNot(t *testing.T) {
	keepLimit(t)
	debug.SetMemoryLimit(math.MaxInt64)
	src, be := newFakeSource(), &limitBackend{}
	c := &Controller{Source: src, Backend: be, SyncPeriod: 1 << 62,
		Memory: &MemoryHeadroom{Fraction: 0.5, Min: 32 << 20}, freeOS: func() {}}
	for i, full := range []bool{true, false, false, true, false} {
		src.setServices(i + 1)
		debug.SetMemoryLimit(math.MaxInt64 - 1) // neither none nor what Set puts
		if err := c.sync(context.Background(), full); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "no release running", func() bool { return !c.releasing.Load() })
		if during := be.limits[len(be.limits)-1]; full && during != math.MaxInt64 {
			t.Errorf("sync %d (full): limit %d during the sync, want none", i, during)
		}
		if after := debug.SetMemoryLimit(-1); after >= math.MaxInt64-1 {
			t.Errorf("sync %d (full: %v): no limit set after the sync", i, full)
		}
	}
}
