package nft

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/utils/ptr"

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
			var hm heapMeter
			for b.Loop() {
				b.StopTimer()
				ns := sandbox.New(b, "bench")
				be := New(WithNetNS(ns.FD()))
				hm.start()
				b.StartTimer()
				if err := be.Sync(context.Background(), st); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				hm.stop()
				runtime.KeepAlive(be)
				b.StartTimer()
				msgs = be.lastMessages
			}
			b.ReportMetric(float64(msgs), "msgs/sync")
			b.ReportMetric(peakRSSMiB(), "peakRSS-MiB")
			hm.report(b)
		})
	}
}

// BenchmarkRestartSync is the first sync of a new Backend (a restarted
// svcproxy) on a node that already holds the same N services × 10
// endpoints: a full sync that adopts the table, rewriting every chain in
// place and replacing every map's elements in its publishing transaction.
func BenchmarkRestartSync(b *testing.B) {
	sandbox.Require(b, "nft")
	for _, n := range benchScales {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			st := proxy.Build(scale.Cluster(n, 10), scale.Config())
			ns := sandbox.New(b, "bench")
			first := New(WithNetNS(ns.FD()))
			if err := first.Sync(context.Background(), st); err != nil {
				b.Fatal(err)
			}
			first.Close()
			var msgs int
			var hm heapMeter
			for b.Loop() {
				b.StopTimer()
				be := New(WithNetNS(ns.FD()))
				hm.start()
				b.StartTimer()
				if err := be.Sync(context.Background(), st); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				hm.stop()
				be.Close()
				b.StartTimer()
				msgs = be.lastMessages
			}
			b.ReportMetric(float64(msgs), "msgs/sync")
			hm.report(b)
		})
	}
}

// BenchmarkOneChangeSync changes one service per sync, back and forth, on
// a node already holding N services × 10 endpoints: "remove" drops one
// endpoint (10 → 9: the count changes within its bucket, see countBucket),
// "cross" drops two (10 → 8: into another bucket, so the destination is
// re-pointed to another chain), "replace" moves one endpoint to another
// address (the count stays, as in a rolling update). Messages are the most
// of one sync (the two directions of "cross" differ: one creates a chain,
// the other re-points back to an existing one); validating messages are
// those that make the kernel re-validate the table (new rules, jumping
// elements).
func BenchmarkOneChangeSync(b *testing.B) {
	sandbox.Require(b, "nft")
	changes := []struct {
		name   string
		change func(n int) *discoveryv1.EndpointSlice
	}{
		{"remove", func(n int) *discoveryv1.EndpointSlice { return scale.Slice(n/2, 10, 1) }},
		{"cross", func(n int) *discoveryv1.EndpointSlice { return scale.Slice(n/2, 10, 2) }},
		{"replace", func(n int) *discoveryv1.EndpointSlice {
			sl := scale.Slice(n/2, 10, 0)
			sl.Endpoints[0].Addresses = []string{"10.250.0.1"}
			return sl
		}},
	}
	for _, ch := range changes {
		for _, n := range benchScales {
			b.Run(fmt.Sprintf("%s/services=%d", ch.name, n), func(b *testing.B) {
				// States come from a proxy.Builder, as in the daemon: each
				// tells Diff which ports changed since the one before.
				in := scale.Cluster(n, 10)
				var m proxy.Builder
				ns := sandbox.New(b, "bench")
				be := New(WithNetNS(ns.FD()))
				if err := be.Sync(context.Background(), m.Build(in, scale.Config())); err != nil {
					b.Fatal(err)
				}
				orig, changed := in.EndpointSlices[n/2], ch.change(n)
				i := 0
				var msgs, validating int
				var took []time.Duration
				for b.Loop() {
					in.EndpointSlices[n/2] = changed
					if i%2 == 1 {
						in.EndpointSlices[n/2] = orig
					}
					i++
					b.StopTimer()
					st := m.Build(in, scale.Config())
					b.StartTimer()
					start := time.Now()
					if err := be.Sync(context.Background(), st); err != nil {
						b.Fatal(err)
					}
					took = append(took, time.Since(start))
					msgs, validating = max(msgs, be.lastMessages), max(validating, be.lastValidating)
				}
				b.ReportMetric(float64(msgs), "msgs/sync")
				b.ReportMetric(float64(validating), "validating-msgs/sync")
				slices.Sort(took)
				b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
				b.ReportMetric(float64(took[(len(took)*99)/100].Microseconds())/1000, "p99-ms")
			})
		}
	}
}

// heapMeter measures the Go heap around one Sync, net of what was live
// before it (the State, the inputs): the peak during the sync (live heap
// as each collection found it, and the heap in use, dead objects not yet
// collected included, sampled every millisecond), and what stays live
// after it (the Backend's retained state).
type heapMeter struct {
	base, retained, peakLive, peakInUse uint64
	done                                chan struct{}
	wg                                  sync.WaitGroup
	// The process's CPU time during the sync, summed over runs: user
	// (Go, GC included) and system (mostly the kernel processing our
	// transactions, inside sendmsg).
	ru0       unix.Rusage
	user, sys time.Duration
	runs      int
}

func heapNow(samples []metrics.Sample) (live, inUse uint64) {
	metrics.Read(samples)
	return samples[0].Value.Uint64(), samples[1].Value.Uint64()
}

func (h *heapMeter) start() {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	h.base, h.peakLive, h.peakInUse = ms.HeapAlloc, ms.HeapAlloc, ms.HeapAlloc
	h.done = make(chan struct{})
	_ = unix.Getrusage(unix.RUSAGE_SELF, &h.ru0)
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		samples := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/memory/classes/heap/objects:bytes"}}
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			live, inUse := heapNow(samples)
			h.peakLive, h.peakInUse = max(h.peakLive, live), max(h.peakInUse, inUse)
			select {
			case <-h.done:
				return
			case <-tick.C:
			}
		}
	}()
}

// stop ends the sampling; the caller keeps the Backend alive past it.
func (h *heapMeter) stop() {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	h.user += time.Duration(ru.Utime.Nano() - h.ru0.Utime.Nano())
	h.sys += time.Duration(ru.Stime.Nano() - h.ru0.Stime.Nano())
	h.runs++
	close(h.done)
	h.wg.Wait()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	h.retained = ms.HeapAlloc - min(ms.HeapAlloc, h.base)
}

func (h *heapMeter) report(b *testing.B) {
	mib := func(v uint64) float64 { return float64(v) / (1 << 20) }
	b.ReportMetric(mib(h.base), "base-MiB")
	b.ReportMetric(mib(h.retained), "retained-MiB")
	b.ReportMetric(mib(h.peakLive-min(h.peakLive, h.base)), "peakLive-MiB")
	b.ReportMetric(mib(h.peakInUse-min(h.peakInUse, h.base)), "peakHeap-MiB")
	b.ReportMetric(h.user.Seconds()/float64(h.runs), "user-s/sync")
	b.ReportMetric(h.sys.Seconds()/float64(h.runs), "sys-s/sync")
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

// BenchmarkNewConnection is the cost of a new connection's DNAT by the
// endpoint count of its Service: a UDP socket, one datagram to a
// ClusterIP and close, from inside the node's namespace (the datagram
// leaves through a veth), each with a new conntrack entry, so that each
// goes through the nat chains. A count's pick rule comes after the rules
// of the smaller counts of its bucket, whose lookups miss: endpoints=33
// is the first rule of its bucket, 64 the 32nd. "none" sends to an
// address no Service has.
func BenchmarkNewConnection(b *testing.B) {
	sandbox.Require(b, "nft", "conntrack")
	ns := sandbox.New(b, "conn")
	ns.MustRun(b, "ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1")
	ns.MustRun(b, "ip", "addr", "add", "10.0.0.100/8", "dev", "v0")
	ns.MustRun(b, "ip", "link", "set", "v0", "up")
	ns.MustRun(b, "ip", "link", "set", "v1", "up")
	counts := []int{1, 4, 33, 64}
	in := scale.Cluster(len(counts), 1)
	for i, n := range counts {
		in.Services[i].Spec.Type = corev1.ServiceTypeClusterIP
		in.Services[i].Spec.SessionAffinity = ""
		in.Services[i].Spec.Ports[0].Protocol = corev1.ProtocolUDP
		in.EndpointSlices[i] = scale.Slice(i, n, 0)
		in.EndpointSlices[i].Ports[0].Protocol = ptr.To(corev1.ProtocolUDP)
	}
	st := proxy.Build(in, scale.Config())
	if err := New(WithNetNS(ns.FD())).Sync(context.Background(), st); err != nil {
		b.Fatal(err)
	}
	for i, n := range append(counts, 0) {
		name, dst := fmt.Sprintf("endpoints=%d", n), net.IP(st.IPv4.Services[min(i, len(counts)-1)].ClusterIP.AsSlice())
		if n == 0 {
			name, dst = "none", net.ParseIP("10.96.255.255")
		}
		b.Run(name, func(b *testing.B) {
			ns.MustRun(b, "conntrack", "-F")
			err := ns.Do(func() error {
				b.ResetTimer()
				for k := range b.N {
					// A new source port each time; the ports are
					// reused only after the conntrack table is flushed.
					if k%40000 == 39999 {
						b.StopTimer()
						if _, err := ns.Run("conntrack", "-F"); err != nil {
							return err
						}
						b.StartTimer()
					}
					c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(10, 0, 0, 100), Port: 20000 + k%40000}, &net.UDPAddr{IP: dst, Port: 80})
					if err != nil {
						return err
					}
					_, err = c.Write([]byte("x"))
					c.Close()
					if err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		})
	}
}
