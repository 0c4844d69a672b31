// Package controller turns changes of Services, EndpointSlices and the Node
// into backend syncs, as kube-proxy does: bursts of changes are coalesced
// into one sync, syncs are at least MinSyncPeriod apart, a full sync runs
// every SyncPeriod (repairing anything changed behind our back), and a
// failed sync is retried with backoff while the kernel keeps the last
// rules that were programmed.
//
// The objects come from a Source: client-go informers against an API
// server (NewInformerSource) or a directory of manifests (NewManifestSource).
package controller

import (
	"context"
	"errors"
	"runtime/debug"
	"sync/atomic"
	"time"

	"k8s.io/klog/v2"

	"github.com/svcproxy/svcproxy/proxy"
)

// Source delivers the objects the model reads.
type Source interface {
	// Start begins watching and calls notify(kind) on every change, kind
	// being "service", "endpointslice" or "node". It does not block.
	Start(ctx context.Context, notify func(kind string)) error
	// WaitForSync blocks until the source holds a complete first view, or
	// ctx ends (false). Until then nothing is programmed: programming a
	// partial view would delete rules that are still wanted.
	WaitForSync(ctx context.Context) bool
	// Inputs returns the current objects. The objects, and the lists, are
	// shared, read-only.
	Inputs() proxy.Inputs
}

// TriggerTimer is implemented by sources that know when the changes they
// report began (EndpointSlices' last-change-trigger-time).
type TriggerTimer interface{ DrainTriggerTimes() []time.Time }

// FullSyncer is implemented by backends that can be asked to rewrite
// everything at their next sync.
type FullSyncer interface{ RequestFullSync() }

// FullSyncReporter is implemented by backends that may find a requested
// full sync unnecessary: it tells whether the last Sync was a full one, so
// that the full and partial sync metrics count what was done.
type FullSyncReporter interface{ LastSyncFull() bool }

// Hooks are optional observers of the sync loop.
type Hooks struct {
	// Queued is called when a change is waiting to be programmed.
	Queued func()
	// Synced is called after every successful sync with the State that is
	// now in the kernel and the objects it was built from (read-only).
	Synced func(*proxy.State, proxy.Inputs)
	// Failed is called after every failed sync.
	Failed func(error)
	// NewProblems is called after a successful sync with the problems
	// that the previous sync did not have (each is reported once while it
	// lasts).
	NewProblems func([]proxy.Problem)
}

// Controller runs the sync loop.
type Controller struct {
	Source        Source
	Backend       proxy.Backend
	Config        proxy.Config
	MinSyncPeriod time.Duration // kube-proxy --min-sync-period (may be 0)
	SyncPeriod    time.Duration // kube-proxy --sync-period: periodic full sync
	Hooks         Hooks
	Metrics       *Metrics // may be nil
	// Memory, when set, keeps the Go heap's headroom bounded after each
	// sync (see MemoryHeadroom); it changes the process's soft memory
	// limit, so only a daemon should set it.
	Memory *MemoryHeadroom

	kick     chan string
	problems map[proxy.Problem]bool
	// builder rebuilds only the Services whose objects changed.
	builder  proxy.Builder
	triggers []time.Time // changes not yet programmed, by start time

	releasing atomic.Bool // releaseMemory is running
	freeOS    func()      // debug.FreeOSMemory; tests replace it
}

// Run syncs until ctx ends. It returns ctx's error, or the source's error
// if it cannot start.
func (c *Controller) Run(ctx context.Context) error {
	if c.SyncPeriod <= 0 {
		return errors.New("controller: SyncPeriod must be positive")
	}
	c.kick = make(chan string, 1024)
	if err := c.Source.Start(ctx, c.notify); err != nil {
		return err
	}
	klog.InfoS("Waiting for the first complete view of Services, EndpointSlices and the Node")
	if !c.Source.WaitForSync(ctx) {
		return ctx.Err()
	}
	klog.InfoS("Caches synced; programming rules")

	var (
		dirty     = true // the first sync
		full      = true
		lastStart time.Time
		failures  int
		retryAt   time.Time
		wake      = time.NewTimer(0)
		periodic  = time.NewTicker(c.SyncPeriod)
	)
	defer periodic.Stop()
	defer wake.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case kind := <-c.kick:
			dirty = true
			c.queued(kind)
			c.drain()
		case <-periodic.C:
			dirty, full = true, true // not a queued change: health is unaffected
		case <-wake.C:
		}
		if !dirty {
			continue
		}
		now := time.Now()
		next := lastStart.Add(c.MinSyncPeriod)
		if retryAt.After(next) {
			next = retryAt
		}
		if now.Before(next) {
			wake.Reset(next.Sub(now))
			continue
		}
		lastStart = now
		if err := c.sync(ctx, full); err != nil {
			failures++
			backoff := min(time.Second<<min(failures-1, 10), c.SyncPeriod)
			retryAt = time.Now().Add(backoff)
			klog.ErrorS(err, "Sync failed; the previous rules stay in place", "retryIn", backoff, "consecutiveFailures", failures)
			wake.Reset(backoff)
			full = true // a failed backend re-syncs fully anyway; say so
			continue
		}
		failures, retryAt, dirty, full = 0, time.Time{}, false, false
	}
}

// notify is the Source's change callback; it never blocks.
func (c *Controller) notify(kind string) {
	select {
	case c.kick <- kind:
	default: // a sync is already due; the change is in it
	}
}

// drain takes the changes that piled up, so one sync covers a burst.
func (c *Controller) drain() {
	for {
		select {
		case kind := <-c.kick:
			c.queued(kind)
		default:
			return
		}
	}
}

func (c *Controller) queued(kind string) {
	if c.Metrics != nil {
		c.Metrics.changeQueued(kind)
	}
	if c.Hooks.Queued != nil {
		c.Hooks.Queued()
	}
}

func (c *Controller) sync(ctx context.Context, full bool) error {
	start := time.Now()
	if tt, ok := c.Source.(TriggerTimer); ok {
		c.triggers = append(c.triggers, tt.DrainTriggerTimes()...)
	}
	if c.Memory != nil {
		if full {
			c.Memory.Lift()
		}
		defer c.Memory.Set()
	}
	in := c.Source.Inputs()
	st := c.builder.Build(in, c.Config)
	built := time.Now()
	if fs, ok := c.Backend.(FullSyncer); ok && full {
		fs.RequestFullSync()
	}
	err := c.Backend.Sync(ctx, st)
	if r, ok := c.Backend.(FullSyncReporter); ok && err == nil {
		full = r.LastSyncFull()
	}
	if c.Metrics != nil {
		c.Metrics.synced(full, time.Since(start), err)
	}
	if err != nil {
		if c.Hooks.Failed != nil {
			c.Hooks.Failed(err)
		}
		return err
	}
	klog.V(2).InfoS("Synced", "full", full, "duration", time.Since(start), "model", built.Sub(start),
		"ipv4Services", len(st.IPv4.Services), "ipv6Services", len(st.IPv6.Services), "problems", len(st.Problems))
	if c.Hooks.Synced != nil {
		c.Hooks.Synced(st, in)
	}
	if c.Metrics != nil {
		for _, t := range c.triggers {
			c.Metrics.programmed(time.Since(t))
		}
	}
	c.triggers = nil
	c.reportProblems(st.Problems)
	if full { // what the backend did (FullSyncReporter): not a skipped one
		c.releaseMemory()
	}
	return nil
}

// releaseMemory returns the memory a full sync (one the backend did not
// skip) used for a moment — the whole rule set built and sent at once — to
// the operating system, in the background, instead of leaving it to the
// runtime's slow scavenger: the node gets it back at once. What stays is
// what the daemon retains.
func (c *Controller) releaseMemory() {
	if !c.releasing.CompareAndSwap(false, true) {
		return // the previous release is still running
	}
	free := c.freeOS
	if free == nil {
		free = debug.FreeOSMemory
	}
	go func() {
		defer c.releasing.Store(false)
		free()
		if c.Memory != nil {
			c.Memory.Set() // from the live heap that collection measured
		}
	}()
}

func (c *Controller) reportProblems(ps []proxy.Problem) {
	now := make(map[proxy.Problem]bool, len(ps))
	var fresh []proxy.Problem
	for _, p := range ps {
		now[p] = true
		if !c.problems[p] {
			fresh = append(fresh, p)
		}
	}
	c.problems = now
	if len(fresh) > 0 && c.Hooks.NewProblems != nil {
		c.Hooks.NewProblems(fresh)
	}
}
