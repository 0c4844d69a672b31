package iptables

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/svcproxy/svcproxy/proxy"
	"github.com/svcproxy/svcproxy/sandbox"
	"github.com/svcproxy/svcproxy/scale"
)

var benchScales = []int{1000, 10000, 50000}

func payloadBytes(b *Backend) int {
	n := 0
	for _, p := range b.payloads {
		n += len(p)
	}
	return n
}

// eachScale runs body as sub-benchmark <mode>/services=<n> for every
// variant and scale.
func eachScale(b *testing.B, body func(b *testing.B, m Mode, n int)) {
	for _, m := range modes {
		sandbox.Require(b, command(m, proxy.IPv4, "-restore"))
		for _, n := range benchScales {
			b.Run(fmt.Sprintf("%s/services=%d", m, n), func(b *testing.B) { body(b, m, n) })
		}
	}
}

// syncMetrics sums what each sync of a benchmark sent and cost.
type syncMetrics struct {
	bytes int
	cpu   time.Duration
}

func (s *syncMetrics) add(be *Backend) { s.bytes, s.cpu = payloadBytes(be), s.cpu+be.toolCPU }

func (s *syncMetrics) report(b *testing.B) {
	b.ReportMetric(float64(s.bytes), "payload-bytes/sync")
	b.ReportMetric(s.cpu.Seconds()/float64(b.N), "tool-cpu-s/sync")
}

// BenchmarkColdSync programs N services × 10 endpoints into an empty
// network namespace, per variant. tool-cpu-s is the CPU time of the
// iptables tools it ran (user + system; wall time on a busy machine
// varies more).
func BenchmarkColdSync(b *testing.B) {
	eachScale(b, func(b *testing.B, m Mode, n int) {
		st := proxy.Build(scale.Cluster(n, 10), scale.Config())
		var sm syncMetrics
		for b.Loop() {
			b.StopTimer()
			ns := sandbox.New(b, "bench")
			be := New(WithNetNS(ns.Name), WithMode(m))
			b.StartTimer()
			if err := be.Sync(context.Background(), st); err != nil {
				b.Fatal(err)
			}
			sm.add(be)
		}
		sm.report(b)
	})
}

// BenchmarkOneChangeSync removes or restores one endpoint of one service
// per sync on a node holding N services × 10 endpoints, per variant.
func BenchmarkOneChangeSync(b *testing.B) {
	eachScale(b, func(b *testing.B, m Mode, n int) {
		in := scale.Cluster(n, 10)
		full := proxy.Build(in, scale.Config())
		in.EndpointSlices[n/2] = scale.Slice(n/2, 10, 1)
		less := proxy.Build(in, scale.Config())
		ns := sandbox.New(b, "bench")
		be := New(WithNetNS(ns.Name), WithMode(m))
		if err := be.Sync(context.Background(), full); err != nil {
			b.Fatal(err)
		}
		i := 0
		var sm syncMetrics
		for b.Loop() {
			st := less
			if i%2 == 1 {
				st = full
			}
			i++
			if err := be.Sync(context.Background(), st); err != nil {
				b.Fatal(err)
			}
			sm.add(be)
		}
		sm.report(b)
	})
}

// BenchmarkRestartSync is the first sync of a new Backend (a restarted
// svcproxy) on a node that already holds the same N services × 10
// endpoints: a full sync that reads iptables-save and adopts the chains.
func BenchmarkRestartSync(b *testing.B) {
	eachScale(b, func(b *testing.B, m Mode, n int) {
		st := proxy.Build(scale.Cluster(n, 10), scale.Config())
		ns := sandbox.New(b, "bench")
		if err := New(WithNetNS(ns.Name), WithMode(m)).Sync(context.Background(), st); err != nil {
			b.Fatal(err)
		}
		var sm syncMetrics
		for b.Loop() {
			be := New(WithNetNS(ns.Name), WithMode(m))
			if err := be.Sync(context.Background(), st); err != nil {
				b.Fatal(err)
			}
			sm.add(be)
		}
		sm.report(b)
	})
}
