package bench_test

import (
	"fmt"
	"testing"

	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/nft"
	"github.com/svcproxy/svcproxy/proxy"
	"github.com/svcproxy/svcproxy/scale"
)

var scales = []int{1000, 10000, 50000}

// BenchmarkRender renders the canonical text of N services × 10 endpoints
// with each backend: no kernel, the cost of turning a State into rules as
// `svcproxy render` and the golden files show them.
// Sub-benchmarks: Render/<nftables|iptables>/services=<N>.
func BenchmarkRender(b *testing.B) {
	backends := []struct {
		name   string
		render func(*proxy.State) string
	}{
		{"nftables", nft.Render},
		{"iptables", iptables.Render},
	}
	for _, be := range backends {
		for _, n := range scales {
			b.Run(fmt.Sprintf("%s/services=%d", be.name, n), func(b *testing.B) {
				st := proxy.Build(scale.Cluster(n, 10), scale.Config())
				var size int
				b.ReportAllocs()
				for b.Loop() {
					size = len(be.render(st))
				}
				b.ReportMetric(float64(size), "text-bytes")
			})
		}
	}
}
