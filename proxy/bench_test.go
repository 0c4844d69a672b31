package proxy_test

import (
	"fmt"
	"testing"

	"github.com/svcproxy/svcproxy/proxy"
)

// BenchmarkBuild measures a full model build; make bench runs it at 1k,
// 10k and 50k services with 10 endpoints each.
func BenchmarkBuild(b *testing.B) {
	benchFullBuilds(b, proxy.Build)
}

// BenchmarkBuilderFirst is a Builder's first build (the daemon's cold
// start): Build plus the indexes that later builds reuse.
func BenchmarkBuilderFirst(b *testing.B) {
	benchFullBuilds(b, func(in proxy.Inputs, cfg proxy.Config) *proxy.State {
		var m proxy.Builder
		return m.Build(in, cfg)
	})
}

// benchFullBuilds runs build from scratch at each scale.
func benchFullBuilds(b *testing.B, build func(proxy.Inputs, proxy.Config) *proxy.State) {
	for _, n := range []int{1000, 10000, 50000} {
		b.Run(fmt.Sprintf("services=%d/endpoints=10", n), func(b *testing.B) {
			in := bigInputs(n, 10)
			cfg := proxy.Config{NodeName: "node-0"}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				build(in, cfg)
			}
		})
	}
}

// BenchmarkBuilderOneChange rebuilds with a Builder after one
// EndpointSlice changed (a new object, as informers deliver it): what the
// daemon does per change.
func BenchmarkBuilderOneChange(b *testing.B) {
	for _, n := range []int{1000, 10000, 50000} {
		b.Run(fmt.Sprintf("services=%d/endpoints=10", n), func(b *testing.B) {
			in := bigInputs(n, 10)
			cfg := proxy.Config{NodeName: "node-0"}
			var m proxy.Builder
			m.Build(in, cfg)
			orig := in.EndpointSlices[n/2]
			fewer := orig.DeepCopy()
			fewer.Endpoints = fewer.Endpoints[1:]
			i := 0
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				in.EndpointSlices[n/2] = orig
				if i%2 == 0 {
					in.EndpointSlices[n/2] = fewer
				}
				i++
				m.Build(in, cfg)
			}
		})
	}
}

// BenchmarkDiff measures State.Diff after one endpoint change at 10k.
func BenchmarkDiff(b *testing.B) {
	in := bigInputs(10000, 10)
	cfg := proxy.Config{NodeName: "node-0"}
	old := proxy.Build(in, cfg)
	in.EndpointSlices[0].Endpoints = in.EndpointSlices[0].Endpoints[1:]
	cur := proxy.Build(in, cfg)
	b.ReportAllocs()
	for b.Loop() {
		if d := cur.Diff(old, proxy.IPv4); len(d.Changed) != 1 {
			b.Fatalf("diff = %+v", d)
		}
	}
}
