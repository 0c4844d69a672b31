package controller

import (
	"math"
	"runtime/debug"
	"runtime/metrics"
)

// MemoryHeadroom bounds the Go heap's growth between collections, for a
// daemon whose live heap is large and steady (the informer caches, the
// model, the backend's committed state) and whose garbage comes in small
// bursts (one sync per change).
//
// The Go default (GOGC=100) lets the heap grow to twice the live heap
// before it collects, and returns the pages it no longer needs to the
// operating system only slowly: a node with a 100 MiB live heap sees
// ~300 MiB of RSS after a few minutes of churn. After each sync, Set puts
// a soft memory limit (debug.SetMemoryLimit) at what the runtime holds
// beyond its heap, plus the live heap as of the last collection, plus the
// heap's fragmentation (the free room in spans that hold live objects:
// resident whatever the limit, and counted as used by the runtime, which
// took it out of the headroom when it was not in the base), plus Fraction
// of the live heap (at least Min): the collector then runs when the heap
// has grown by about that much, and the RSS follows the live heap. GOGC
// still applies below the limit.
//
// Lift removes the limit for the duration of a full sync, whose working
// set is a multiple of the live heap (it builds and sends the whole rule
// set): a limit there would only make the collector run back to back.
//
// The limit follows the live heap up as the cluster grows (each Set reads
// it again); between two syncs a large growth (e.g. thousands of new
// objects in the caches) may make the collector work harder until the
// next sync, which is at most a --min-sync-period away. A user's GOMEMLIMIT
// or GOGC takes precedence: the daemon does not use MemoryHeadroom then.
type MemoryHeadroom struct {
	Fraction float64 // of the live heap; e.g. 0.25
	Min      uint64  // bytes
}

var headroomSamples = []string{
	"/gc/heap/live:bytes",
	"/memory/classes/total:bytes",
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/unused:bytes",
	"/memory/classes/heap/free:bytes",
	"/memory/classes/heap/released:bytes",
}

// Limit is the soft memory limit Set would put now, in bytes.
func (h *MemoryHeadroom) Limit() uint64 {
	s := make([]metrics.Sample, len(headroomSamples))
	for i, name := range headroomSamples {
		s[i].Name = name
	}
	metrics.Read(s)
	v := func(i int) uint64 {
		if s[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return s[i].Value.Uint64()
	}
	live, total, unused := v(0), v(1), v(3)
	heap := v(2) + v(3) + v(4) + v(5)
	var overhead uint64 // stacks, runtime metadata, profiling buckets …
	if total > heap {
		overhead = total - heap
	}
	extra := max(uint64(float64(live)*h.Fraction), h.Min)
	return overhead + live + unused + extra
}

// Set puts the soft memory limit at Limit().
func (h *MemoryHeadroom) Set() {
	l := h.Limit()
	if l > math.MaxInt64 {
		l = math.MaxInt64
	}
	debug.SetMemoryLimit(int64(l))
}

// Lift removes the soft memory limit.
func (h *MemoryHeadroom) Lift() { debug.SetMemoryLimit(math.MaxInt64) }
