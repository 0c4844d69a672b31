package nft

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/svcproxy/svcproxy/proxy"
	"github.com/svcproxy/svcproxy/sandbox"
	"github.com/svcproxy/svcproxy/scale"
)

var benchScales = []int{1000, 10000, 50000}

// BenchmarkColdSync programs N services × 10 endpoints into an empty
// network namespace: the first sync after a node boots.
func BenchmarkColdSync(b *testing.B) {
	sandbox.Require(b, "nft")
	for _, n := range benchScales {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			st := proxy.Build(scale.Cluster(n, 10), scale.Config())
			var msgs int
			for b.Loop() {
				b.StopTimer()
				ns := sandbox.New(b, "bench")
				be := New(WithNetNS(ns.FD()))
				b.StartTimer()
				if err := be.Sync(context.Background(), st); err != nil {
					b.Fatal(err)
				}
				msgs = be.lastMessages
			}
			b.ReportMetric(float64(msgs), "msgs/sync")
			b.ReportMetric(peakRSSMiB(), "peakRSS-MiB")
		})
	}
}

// BenchmarkOneChangeSync removes or restores one endpoint of one service
// per sync, on a node already holding N services × 10 endpoints.
func BenchmarkOneChangeSync(b *testing.B) {
	sandbox.Require(b, "nft")
	for _, n := range benchScales {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			in := scale.Cluster(n, 10)
			full := proxy.Build(in, scale.Config())
			in.EndpointSlices[n/2] = scale.Slice(n/2, 10, 1)
			less := proxy.Build(in, scale.Config())
			ns := sandbox.New(b, "bench")
			be := New(WithNetNS(ns.FD()))
			if err := be.Sync(context.Background(), full); err != nil {
				b.Fatal(err)
			}
			i := 0
			var msgs int
			for b.Loop() {
				st := less
				if i%2 == 1 {
					st = full
				}
				i++
				if err := be.Sync(context.Background(), st); err != nil {
					b.Fatal(err)
				}
				msgs = be.lastMessages
			}
			b.ReportMetric(float64(msgs), "msgs/sync")
		})
	}
}

// peakRSSMiB is the process's peak resident set size (VmHWM).
func peakRSSMiB() float64 {
	runtime.GC()
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.Atoi(f[1])
			return float64(kb) / 1024
		}
	}
	return 0
}
