// Command svcproxy-bench measures event-to-kernel latency through a real
// kube-apiserver: how long a change written with client-go takes to reach
// the kernel of a node running the real `svcproxy run` daemon, at 10k
// Services (or --services N).
//
// It builds a sandbox of network namespaces (package dptest: a node, its
// gateway, and pods answering HTTP with their name), runs etcd and
// kube-apiserver in the node's namespace (package apiserver), creates N
// Services × 10 endpoints through client-go, then for each --modes entry
// starts the daemon in the node and measures, with real packets sent from
// the node to the ClusterIP of a probe Service:
//
//   - cold: daemon start → the probe Service answers (first full sync in the
//     kernel), and the daemon's memory (VmRSS, VmHWM) then;
//   - endpoint change: the probe's only endpoint moves between two pods with
//     a client-go update; the clock starts just before the write and stops
//     when a new connection is answered by the new pod;
//   - new service: a Service and its EndpointSlice are created; the clock
//     stops when the new ClusterIP answers;
//
// and reports percentiles, the daemon's memory at the end, and the
// daemon's own sync-duration and network-programming histograms (scraped
// from its /metrics) as secondary figures. With --iterations 0 it measures
// memory only: after the cold sync it waits one --sync-period (a periodic
// full sync) instead of sampling changes. --svcproxy may name several
// binaries (e.g. before and after a change): each mode is measured with
// each, on the same cluster. --heap-profiles saves the daemon's heap
// profiles (it runs with --profiling). Everything it creates is removed
// at the end, on failure and on Ctrl-C. It needs root (`make bench-latency`;
// docs/bench.md).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/svcproxy/svcproxy/apiserver"
	"github.com/svcproxy/svcproxy/daemontest"
	"github.com/svcproxy/svcproxy/dptest"
	"github.com/svcproxy/svcproxy/sandbox"
	"github.com/svcproxy/svcproxy/scale"
)

// options are the command line.
type options struct {
	svcproxy     []string
	heapProfiles string
	services     int
	endpoints    int
	modes        []string
	iterations   int
	workers      int
	syncPeriod   time.Duration
	pollInterval time.Duration
	gap          time.Duration
	coldTimeout  time.Duration
	timeout      time.Duration
	tmpdir       string
	apiArgs      []string
	setup        string
}

// modeArgs are the daemon flags of each --modes entry.
var modeArgs = map[string][]string{
	"nftables":        {"--proxy-mode", "nftables"},
	"iptables-legacy": {"--proxy-mode", "iptables", "--iptables-mode", "legacy"},
	"iptables-nft":    {"--proxy-mode", "iptables", "--iptables-mode", "nft"},
}

func main() {
	var o options
	var modes, bins, apiArgs string
	flag.StringVar(&bins, "svcproxy", "bin/svcproxy", "the svcproxy binary to run as the daemon (empty: build ./cmd/svcproxy); several, comma-separated, are measured one after the other on the same cluster")
	flag.StringVar(&o.heapProfiles, "heap-profiles", "", "run the daemon with --profiling and save its heap profile after the cold sync and at the end in this directory")
	flag.IntVar(&o.services, "services", 10000, "Services to create, each with --endpoints endpoints (e.g. 1000, 5000, 10000)")
	flag.IntVar(&o.endpoints, "endpoints", 10, "endpoints per Service")
	flag.StringVar(&modes, "modes", "nftables", "comma-separated daemon modes to measure, one after the other: nftables, iptables-legacy, iptables-nft")
	flag.IntVar(&o.iterations, "iterations", 30, "measurements of each kind (endpoint change, new service) per mode; 0 measures memory only (the end is one --sync-period after the cold sync)")
	flag.IntVar(&o.workers, "workers", 32, "parallel client-go writers while creating the Services")
	flag.DurationVar(&o.syncPeriod, "sync-period", 30*time.Second, "the daemon's --sync-period (periodic full sync); 30s is kube-proxy's default")
	flag.DurationVar(&o.pollInterval, "poll-interval", time.Millisecond, "least time between two probe connections (the resolution of the latency figures)")
	flag.DurationVar(&o.gap, "gap", 300*time.Millisecond, "pause after each measurement")
	flag.DurationVar(&o.coldTimeout, "cold-timeout", 20*time.Minute, "give up when the first sync is not in the kernel after this long")
	flag.DurationVar(&o.timeout, "timeout", 3*time.Minute, "give up when one change is not in the kernel after this long")
	flag.StringVar(&o.tmpdir, "tmpdir", defaultTmp(), "directory for etcd's data and the API server's files (a tmpfs spares etcd's fsyncs)")
	flag.StringVar(&o.setup, "setup", "direct", "how the synthetic Services are stored: direct (dry-run create through the API server, then written to its etcd with their IPAddress objects: minutes at 50k) or api (plain creates: the API server's ClusterIP allocator makes 50k take over an hour)")
	flag.StringVar(&apiArgs, "apiserver-args", "", "extra kube-apiserver flags, space-separated (e.g. --profiling to take its pprof profiles)")
	flag.Parse()
	o.apiArgs = strings.Fields(apiArgs)
	for _, m := range strings.Split(modes, ",") {
		if m = strings.TrimSpace(m); m == "" {
			continue
		}
		if modeArgs[m] == nil {
			fmt.Fprintf(os.Stderr, "svcproxy-bench: unknown mode %q (want nftables, iptables-legacy or iptables-nft)\n", m)
			os.Exit(2)
		}
		o.modes = append(o.modes, m)
	}
	for _, b := range strings.Split(bins, ",") {
		o.svcproxy = append(o.svcproxy, strings.TrimSpace(b))
	}
	if len(o.modes) == 0 || (o.setup != "direct" && o.setup != "api") || o.services < 1 || o.endpoints < 1 || o.iterations < 0 || o.workers < 1 {
		flag.Usage()
		os.Exit(2)
	}
	// A 50k-service cluster is a lot of objects; the default GC target
	// would make this process large for no benefit.
	debug.SetGCPercent(50)

	r := &runner{tmp: o.tmpdir}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sig
		fmt.Fprintf(os.Stderr, "\nsvcproxy-bench: %v: cleaning up\n", s)
		r.fail()
		r.cleanup()
		checkLeaks()
		os.Exit(130)
	}()
	code := 0
	func() {
		defer func() {
			if p := recover(); p != nil {
				a, ok := p.(abort)
				if !ok {
					r.fail()
					r.cleanup()
					panic(p)
				}
				fmt.Fprintf(os.Stderr, "\nsvcproxy-bench failed: %s\n", a.msg)
				code = 1
			}
		}()
		run(r, o)
	}()
	r.cleanup()
	if r.Failed() {
		code = 1
	}
	if !checkLeaks() {
		code = 1
	}
	os.Exit(code)
}

// mine are the network namespaces this run created, checked after the
// cleanup.
var mine []string

// checkLeaks reports namespaces of this run that the cleanup left behind.
func checkLeaks() bool {
	left, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return true
	}
	ok := true
	for _, n := range mine {
		if strings.Contains(string(left), n) {
			fmt.Fprintf(os.Stderr, "svcproxy-bench: network namespace %s left behind\n", n)
			ok = false
		}
	}
	return ok
}

// defaultTmp is /dev/shm when it is a writable directory (tmpfs on most
// Linux systems), else the system's temporary directory.
func defaultTmp() string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() && syscall.Access("/dev/shm", 2) == nil {
		return "/dev/shm"
	}
	return ""
}

// runner implements apiserver.TB (and so sandbox.TB, daemontest.TB) for a
// program: Fatal aborts the run, cleanups run last-registered first at the
// end whatever happens.
type runner struct {
	mu       sync.Mutex // held while cleanups run
	cleanups []func()
	failed   atomic.Bool
	tmp      string // parent of TempDir's directories ("": os.TempDir())
}

var _ apiserver.TB = (*runner)(nil)

type abort struct{ msg string }

func (r *runner) Helper() {}
func (r *runner) Fatal(args ...any) {
	r.fail()
	panic(abort{fmt.Sprint(args...)})
}
func (r *runner) Fatalf(format string, args ...any) {
	r.fail()
	panic(abort{fmt.Sprintf(format, args...)})
}
func (r *runner) Errorf(format string, args ...any) {
	r.fail()
	fmt.Fprintf(os.Stderr, "error: "+format+"\n", args...)
}
func (r *runner) Logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}
func (r *runner) Skip(args ...any) { r.Fatal(args...) }
func (r *runner) Failed() bool     { return r.failed.Load() }
func (r *runner) fail()            { r.failed.Store(true) }
func (r *runner) Cleanup(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cleanups = append(r.cleanups, f)
}
func (r *runner) TempDir() string {
	dir, err := os.MkdirTemp(r.tmp, "svcproxy-bench-")
	if err != nil {
		r.Fatal(err)
	}
	r.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// cleanup runs the cleanups once; a concurrent call (Ctrl-C during the
// cleanup) waits for it to finish.
func (r *runner) cleanup() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for len(r.cleanups) > 0 {
		f := r.cleanups[len(r.cleanups)-1]
		r.cleanups = r.cleanups[:len(r.cleanups)-1]
		func() {
			defer func() {
				if p := recover(); p != nil {
					fmt.Fprintf(os.Stderr, "cleanup: %v\n", p)
				}
			}()
			f()
		}()
	}
}

// Probe pods: A and B take turns as the endpoint of the "move" Service;
// C serves the new Services.
const (
	podA, podB, podC = "b1", "b2", "b3"
	probeNS          = "probe" // sorts after "bench": its rules come last
	nodeName         = "node-0"
)

// bench is the state shared by the modes.
type bench struct {
	r    *runner
	o    options
	env  *dptest.Env
	c    kubernetes.Interface
	pods map[string]netip.Addr
	bin  string

	move     *discoveryv1.EndpointSlice // the probe slice, as last written
	moveAddr netip.AddrPort             // its Service's ClusterIP:80
	moveTo   string                     // the pod it points to

	samples []netip.AddrPort // ClusterIP:80 of the first, middle and last synthetic Service
}

func run(r *runner, o options) {
	fmt.Printf("svcproxy-bench: %d Services × %d endpoints, modes %s, %d measurements of each kind\n",
		o.services, o.endpoints, strings.Join(o.modes, ", "), o.iterations)
	fmt.Printf("machine: %d CPUs, load average %s at start\n", runtime.NumCPU(), loadavg())
	b := &bench{r: r, o: o}
	var bins []string
	for _, bin := range o.svcproxy {
		if bin == "" {
			bins = append(bins, daemontest.Build(r))
			continue
		}
		abs, err := filepath.Abs(bin)
		if err != nil {
			r.Fatal(err)
		}
		if _, err := os.Stat(abs); err != nil {
			r.Fatalf("%v (run `make build`, or pass --svcproxy '' to build it)", err)
		}
		bins = append(bins, abs)
	}
	if o.heapProfiles != "" {
		if err := os.MkdirAll(o.heapProfiles, 0o755); err != nil {
			r.Fatal(err)
		}
	}

	t0 := time.Now()
	b.env = dptest.NewEnv(r)
	b.pods = map[string]netip.Addr{}
	for _, p := range b.env.Pods {
		b.pods[p.Name] = p.IP
	}
	mine = append(mine, b.env.Node.Name, b.env.Client.Name)
	for _, p := range b.env.Pods {
		mine = append(mine, p.NS.Name)
	}
	// The node's default gateway (the client namespace) resets TCP
	// connections to Service addresses, so that a probe connection sent
	// before the rules are in fails at once instead of being dropped (and
	// timing out): a TCP reset, unlike an ICMP error, is not rate-limited.
	// The synthetic cluster's endpoints (10.128.0.0/9, no pods behind them;
	// real pods are routed by the node itself) are refused with an ICMP
	// error instead: a connection to a Service whose rules are in fails
	// with EHOSTUNREACH, to one whose rules are not with ECONNREFUSED.
	cl := b.env.Client
	cl.MustRun(r, "nft", "add", "table", "ip", "svcproxy-bench")
	cl.MustRun(r, "nft", "add", "chain", "ip", "svcproxy-bench", "prerouting", "{ type filter hook prerouting priority 0; }")
	cl.MustRun(r, "nft", "add", "rule", "ip", "svcproxy-bench", "prerouting", "ip", "daddr", apiserver.ServiceClusterIPRange,
		"meta", "l4proto", "tcp", "reject", "with", "tcp", "reset")
	cl.MustRun(r, "nft", "add", "rule", "ip", "svcproxy-bench", "prerouting", "ip", "daddr", "10.128.0.0/9",
		"reject", "with", "icmp", "type", "host-unreachable")
	cl.MustRun(r, "sh", "-c", "echo 0 > /proc/sys/net/ipv4/icmp_ratelimit")
	tSandbox := time.Since(t0)

	t0 = time.Now()
	srv := apiserver.StartInNetNS(r, b.env.Node, apiserver.WithArgs(o.apiArgs...))
	// Protobuf, as Kubernetes' own components talk: JSON costs the API
	// server, the bottleneck of the setup, about twice the CPU.
	cfg := srv.RESTConfig()
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		r.Fatal(err)
	}
	b.c = c
	tAPI := time.Since(t0)
	fmt.Printf("setup: sandbox %.1f s, etcd + kube-apiserver %.1f s (files in %s)\n", tSandbox.Seconds(), tAPI.Seconds(), filepath.Dir(srv.LogDir()))

	t0 = time.Now()
	objs, degraded := b.populate(srv)
	d := time.Since(t0)
	how := "through client-go"
	if o.setup == "direct" {
		how = "(Services dry-run through client-go and written to etcd)"
	}
	fmt.Printf("setup: %d objects (Services, EndpointSlices, LoadBalancer statuses) %s in %.1f s (%.0f/s, %d writers), load average %s\n",
		objs, how, d.Seconds(), float64(objs)/d.Seconds(), o.workers, loadavg())
	if degraded > 0 {
		fmt.Printf("setup: %d NodePort/LoadBalancer Services made ClusterIP: the NodePort range is full\n", degraded)
	}
	b.createMove()
	for _, i := range []int{0, o.services / 2, o.services - 1} {
		svc, err := b.c.CoreV1().Services("bench").Get(context.Background(), fmt.Sprintf("svc-%d", i), metav1.GetOptions{})
		if err != nil {
			r.Fatal(err)
		}
		ip, err := netip.ParseAddr(svc.Spec.ClusterIP)
		if err != nil {
			r.Fatalf("svc-%d: %v", i, err)
		}
		b.samples = append(b.samples, netip.AddrPortFrom(ip, 80))
	}

	var results []result
	for _, bin := range bins {
		b.bin = bin
		for _, m := range o.modes {
			results = append(results, b.measure(srv, m))
		}
	}
	fmt.Printf("\nmachine: load average %s at the end\n", loadavg())
	fmt.Println("\nSummary (latencies in ms: p50 / p90 / p99 / max; memory in MiB):")
	fmt.Println()
	fmt.Println("| mode | services × endpoints | cold: first sync in kernel | RSS after cold (peak) | endpoint change → kernel | new service → kernel | RSS at end (peak) |")
	fmt.Println("|---|---|---|---|---|---|---|")
	for _, res := range results {
		mode := res.mode
		if len(bins) > 1 {
			mode += " (" + res.bin + ")"
		}
		fmt.Printf("| %s | %d × %d | %.2f s | %.0f (%.0f) | %s | %s | %.0f (%.0f) |\n", mode, o.services, o.endpoints,
			res.cold.Seconds(), mib(res.memCold.RSS), mib(res.memCold.Peak), res.move.row(), res.create.row(),
			mib(res.memEnd.RSS), mib(res.memEnd.Peak))
	}
}

func loadavg() string {
	data, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// populate creates the namespaces, this node, and the synthetic cluster of
// package scale (the one the backends' benchmarks program), in parallel.
// LoadBalancers get no NodePorts (allocateLoadBalancerNodePorts: false)
// but keep their healthCheckNodePort, and when the NodePort range is full
// the remaining NodePort and LoadBalancer Services become ClusterIP. With
// --setup api the API server allocates ClusterIPs and NodePorts; with
// --setup direct (etcd.go) they are chosen here and the Services written to
// etcd after a dry run. It returns the number of objects written and of
// Services made ClusterIP.
func (b *bench) populate(srv *apiserver.Server) (objects, degraded int) {
	ctx := context.Background()
	for _, ns := range []string{"bench", probeNS} {
		if _, err := b.c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			b.r.Fatal(err)
		}
	}
	n, err := b.c.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName}}, metav1.CreateOptions{})
	if err != nil {
		b.r.Fatal(err)
	}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: dptest.NodeIP.String()}}
	if _, err := b.c.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		b.r.Fatal(err)
	}

	direct := b.o.setup == "direct"
	var etcd *etcdClient
	var ips []string
	if direct {
		if etcd, err = newEtcdClient(srv, b.env.Node, b.o.workers); err != nil {
			b.r.Fatal(err)
		}
		if ips, err = clusterIPs(b.o.services); err != nil {
			b.r.Fatal(err)
		}
	}
	in := scale.Cluster(b.o.services, b.o.endpoints)
	const firstPort = 30000             // the default NodePort range: 30000-32767
	ports := 32767 - firstPort + 1 - 16 // a few spare
	nextPort := int32(firstPort + 16)   // direct: assigned in order
	items := make([]item, len(in.Services))
	for i, s := range in.Services {
		s.Spec.ClusterIP = ""
		if direct {
			s.Spec.ClusterIP = ips[i]
		}
		var ingress []corev1.LoadBalancerIngress
		switch s.Spec.Type {
		case corev1.ServiceTypeNodePort:
			s.Spec.Ports[0].NodePort = 0
		case corev1.ServiceTypeLoadBalancer:
			s.Spec.AllocateLoadBalancerNodePorts = ptr.To(false)
			ingress = s.Status.LoadBalancer.Ingress
			s.Status = corev1.ServiceStatus{}
		}
		if s.Spec.Type != corev1.ServiceTypeClusterIP {
			if ports == 0 {
				s.Spec.Type, s.Spec.ExternalTrafficPolicy, s.Spec.AllocateLoadBalancerNodePorts = corev1.ServiceTypeClusterIP, "", nil
				ingress = nil
				degraded++
			} else {
				ports--
				if direct {
					// The port the allocator would have taken: the
					// NodePort, or a LoadBalancer's healthCheckNodePort
					// (externalTrafficPolicy Local).
					if s.Spec.Type == corev1.ServiceTypeNodePort {
						s.Spec.Ports[0].NodePort = nextPort
					} else {
						s.Spec.HealthCheckNodePort = nextPort
					}
					nextPort++
				}
			}
		}
		items[i] = item{svc: s, ingress: ingress, slice: in.EndpointSlices[i]}
	}

	var next, done, written atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	// Progress every 10% (a 10k setup takes minutes).
	start, step := time.Now(), max(1, len(items)/10)
	lastAt, lastN := start, int64(0)
	report := func(n int) { // n more items done
		d := int(done.Add(int64(n)))
		if d/step == (d-n)/step || d == len(items) {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		now, w := time.Now(), written.Load()
		fmt.Printf("setup: %d/%d Services, %.0f objects/s\n", d, len(items), float64(w-lastN)/now.Sub(lastAt).Seconds())
		lastAt, lastN = now, w
	}
	// Workers take chunks of consecutive items (direct: one etcd
	// transaction per chunk).
	chunk := 1
	if direct {
		chunk = 32
	}
	for range b.o.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				lo := int(next.Add(int64(chunk))) - chunk
				if lo >= len(items) {
					return
				}
				mu.Lock()
				stop := firstErr != nil
				mu.Unlock()
				if stop {
					return
				}
				part := items[lo:min(lo+chunk, len(items))]
				var err error
				if direct {
					err = b.createDirect(ctx, etcd, part, &written)
				} else {
					err = b.createItem(ctx, part[0], &written)
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
				report(len(part))
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		b.r.Fatalf("creating the cluster: %v", firstErr)
	}
	return int(written.Load()), degraded
}

// item is one synthetic Service, its LoadBalancer status and its slice.
type item struct {
	svc     *corev1.Service
	ingress []corev1.LoadBalancerIngress
	slice   *discoveryv1.EndpointSlice
}

// createItem creates one Service (and its LoadBalancer status) and its
// EndpointSlice, retrying transient errors. It runs in a worker goroutine,
// so it returns errors instead of failing.
func (b *bench) createItem(ctx context.Context, it item, written *atomic.Int64) error {
	s := it.svc
	svcs := b.c.CoreV1().Services(s.Namespace)
	var got *corev1.Service
	err := retry(func() error {
		var err error
		got, err = svcs.Create(ctx, s, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) { // an earlier attempt got through
			got, err = svcs.Get(ctx, s.Name, metav1.GetOptions{})
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("service %s: %w", s.Name, err)
	}
	written.Add(1)
	if len(it.ingress) > 0 {
		err := retry(func() error {
			got.Status.LoadBalancer.Ingress = it.ingress
			_, err := svcs.UpdateStatus(ctx, got, metav1.UpdateOptions{})
			if apierrors.IsConflict(err) {
				got, _ = svcs.Get(ctx, s.Name, metav1.GetOptions{})
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("service %s status: %w", s.Name, err)
		}
		written.Add(1)
	}
	return b.createSlice(ctx, it, written)
}

func (b *bench) createSlice(ctx context.Context, it item, written *atomic.Int64) error {
	sl := it.slice
	err := retry(func() error {
		_, err := b.c.DiscoveryV1().EndpointSlices(sl.Namespace).Create(ctx, sl, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("slice %s: %w", sl.Name, err)
	}
	written.Add(1)
	return nil
}

// createDirect stores the Services of items as the API server would (see
// etcd.go): a dry-run create each, then one etcd transaction for all of
// them and their IPAddresses; then their LoadBalancer statuses and slices
// through the API.
func (b *bench) createDirect(ctx context.Context, etcd *etcdClient, items []item, written *atomic.Int64) error {
	var kvs []etcdKV
	for _, it := range items {
		s := it.svc
		var got *corev1.Service
		err := retry(func() error {
			var err error
			got, err = b.c.CoreV1().Services(s.Namespace).Create(ctx, s, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			return err
		})
		if err != nil {
			return fmt.Errorf("service %s (dry run): %w", s.Name, err)
		}
		if got.Spec.ClusterIP != s.Spec.ClusterIP {
			return fmt.Errorf("service %s: dry run gave ClusterIP %q, not %s", s.Name, got.Spec.ClusterIP, s.Spec.ClusterIP)
		}
		recs, err := serviceRecords(got)
		if err != nil {
			return fmt.Errorf("service %s: %w", s.Name, err)
		}
		kvs = append(kvs, recs...)
	}
	if err := retry(func() error { return etcd.create(ctx, kvs) }); err != nil {
		return err
	}
	written.Add(int64(len(items)))
	for _, it := range items {
		if len(it.ingress) > 0 {
			// A merge patch of the status subresource: the same write
			// (and managedFields entry) as the UpdateStatus of --setup
			// api, without reading the object first.
			patch, err := json.Marshal(map[string]any{"status": map[string]any{"loadBalancer": map[string]any{"ingress": it.ingress}}})
			if err != nil {
				return err
			}
			err = retry(func() error {
				_, err := b.c.CoreV1().Services(it.svc.Namespace).Patch(ctx, it.svc.Name, types.MergePatchType, patch, metav1.PatchOptions{}, "status")
				return err
			})
			if err != nil {
				return fmt.Errorf("service %s status: %w", it.svc.Name, err)
			}
			written.Add(1)
		}
		if err := b.createSlice(ctx, it, written); err != nil {
			return err
		}
	}
	return nil
}

// retry runs f up to 5 times, pausing between attempts.
func retry(f func() error) error {
	var err error
	for attempt := range 5 {
		if err = f(); err == nil {
			return nil
		}
		time.Sleep(time.Duration(attempt+1) * 200 * time.Millisecond)
	}
	return err
}

// probeService is a ClusterIP Service in the probe namespace; the API
// server allocates its address.
func (b *bench) probeService(name string) netip.AddrPort {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: probeNS, Name: name},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP,
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}},
	}
	got, err := b.c.CoreV1().Services(probeNS).Create(context.Background(), s, metav1.CreateOptions{})
	if err != nil {
		b.r.Fatalf("create service %s: %v", name, err)
	}
	ip, err := netip.ParseAddr(got.Spec.ClusterIP)
	if err != nil {
		b.r.Fatalf("service %s: ClusterIP %q: %v", name, got.Spec.ClusterIP, err)
	}
	return netip.AddrPortFrom(ip, 80)
}

// probeSlice is the EndpointSlice of probe Service svc with pod as its one
// endpoint. Its last-change-trigger-time is trigger, as the EndpointSlice
// controller would set it, so that the daemon's
// kubeproxy_network_programming_duration_seconds covers the change.
func (b *bench) probeSlice(svc, pod string, trigger time.Time) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: probeNS, Name: svc + "-1",
			Labels:      map[string]string{discoveryv1.LabelServiceName: svc},
			Annotations: map[string]string{corev1.EndpointsLastChangeTriggerTime: trigger.UTC().Format(time.RFC3339Nano)}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](dptest.HTTPPort), Protocol: ptr.To(corev1.ProtocolTCP)}},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{b.pods[pod].String()}, NodeName: ptr.To(nodeName),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
	}
}

// createMove creates the "move" probe Service with pod A as its endpoint.
func (b *bench) createMove() {
	b.moveAddr = b.probeService("move")
	sl, err := b.c.DiscoveryV1().EndpointSlices(probeNS).Create(context.Background(), b.probeSlice("move", podA, time.Now()), metav1.CreateOptions{})
	if err != nil {
		b.r.Fatal(err)
	}
	b.move, b.moveTo = sl, podA
}

// setMove points the "move" Service at pod, stamping the trigger time.
func (b *bench) setMove(pod string, trigger time.Time) error {
	sl := b.probeSlice("move", pod, trigger)
	sl.ResourceVersion = b.move.ResourceVersion
	got, err := b.c.DiscoveryV1().EndpointSlices(probeNS).Update(context.Background(), sl, metav1.UpdateOptions{})
	if err != nil {
		return err
	}
	b.move, b.moveTo = got, pod
	return nil
}

// result is one mode's figures.
type result struct {
	mode, bin       string
	cold            time.Duration
	memCold, memEnd daemontest.Memory
	move, create    samples
}

// measure runs the daemon in one mode and measures it; it leaves the node
// without rules and the API server as it found it (but for resource
// versions).
func (b *bench) measure(srv *apiserver.Server, mode string) result {
	r, o := b.r, b.o
	res := result{mode: mode, bin: filepath.Base(b.bin)}
	fmt.Printf("\n== %s (%s)\n", mode, b.bin)
	args := append(append([]string{}, modeArgs[mode]...),
		"--kubeconfig", srv.Kubeconfig(), "--hostname-override", nodeName, "--cluster-cidr", "10.244.0.0/16",
		"--min-sync-period", "0", "--sync-period", o.syncPeriod.String(),
		"--healthz-bind-address", "127.0.0.1:10256", "--metrics-bind-address", "127.0.0.1:10249")
	if o.heapProfiles != "" {
		args = append(args, "--profiling")
	}
	if b.moveTo != podA {
		if err := b.setMove(podA, time.Now()); err != nil {
			r.Fatal(err)
		}
	}
	b.forget(b.moveAddr)

	start := time.Now()
	d := daemontest.Start(r, b.bin, b.env.Node, args...)
	defer func() {
		// The next mode starts from an empty node.
		if ok, _ := d.Exited(); !ok {
			d.Stop(r)
		}
		if out, err := b.env.Node.Run(b.bin, "cleanup"); err != nil {
			r.Errorf("svcproxy cleanup: %v %s", err, out)
		}
	}()
	at, st, err := b.waitAnswer(d, b.moveAddr, podA, start.Add(o.coldTimeout))
	if err != nil {
		r.Fatalf("cold sync: %v\n%s", err, tail(d.Logs.String(), 20))
	}
	probeAt := at.Sub(start)
	// The probe Service sorts last; to be sure whatever order a backend
	// programs in, the cold sync is in when sampled synthetic Services
	// (first, middle, last) are too.
	for _, addr := range b.samples {
		t, err := b.waitProgrammed(d, addr, start.Add(o.coldTimeout))
		if err != nil {
			r.Fatalf("cold sync: %v\n%s", err, tail(d.Logs.String(), 20))
		}
		at = later(at, t)
	}
	res.cold = at.Sub(start)
	res.memCold = mustMemory(r, d)
	// The daemon records the sync once its backend returns, a moment after
	// the rules are in, and the network programming latencies after that:
	// wait for them, so that the figures of the changes below do not
	// include the first sync.
	var coldMetrics map[string]*histogram
	for wait := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		coldMetrics = b.scrape()
		if h := coldMetrics[metricSync]; (h != nil && h.count > 0) || time.Now().After(wait) {
			break
		}
	}
	time.Sleep(time.Second)
	coldMetrics = b.scrape()
	fmt.Printf("cold: first full sync in the kernel %.2f s after the daemon started (the probe Service answers after %.2f s, %d probe connections; sampled synthetic Services are DNATed)\n",
		res.cold.Seconds(), probeAt.Seconds(), st.attempts)
	if h := coldMetrics[metricFull]; h != nil && h.count > 0 {
		fmt.Printf("cold: the daemon's own figure: %d full sync(s), %.2f s in all (%s)\n", int(h.count), h.sum, metricFull)
	}
	fmt.Printf("cold: daemon RSS %.0f MiB, peak %.0f MiB\n", mib(res.memCold.RSS), mib(res.memCold.Peak))
	b.saveHeap(res, "cold")
	if o.iterations == 0 {
		// Memory only: the end is after a periodic full sync.
		time.Sleep(o.syncPeriod + 2*time.Second)
	}

	var created []string
	defer func() { b.deleteProbes(created) }()
	for i := range o.iterations {
		// Endpoint change: A → B, B → A, ...
		to := podB
		if b.moveTo == podB {
			to = podA
		}
		t0 := time.Now()
		if err := b.setMove(to, t0); err != nil {
			r.Fatalf("endpoint change: %v", err)
		}
		wrote := time.Since(t0)
		at, st, err := b.waitAnswer(d, b.moveAddr, to, t0.Add(o.timeout))
		if err != nil {
			r.Fatalf("endpoint change %d (to %s): %v\n%s", i, to, err, tail(d.Logs.String(), 20))
		}
		res.move.add(at.Sub(t0), wrote, st)
		b.forget(b.moveAddr)
		time.Sleep(o.gap)

		// A new Service and its EndpointSlice.
		name := fmt.Sprintf("new-%d", i)
		t0 = time.Now()
		addr := b.probeService(name)
		created = append(created, name)
		if _, err := b.c.DiscoveryV1().EndpointSlices(probeNS).Create(context.Background(), b.probeSlice(name, podC, t0), metav1.CreateOptions{}); err != nil {
			r.Fatalf("new service: %v", err)
		}
		wrote = time.Since(t0)
		at, st, err = b.waitAnswer(d, addr, podC, t0.Add(o.timeout))
		if err != nil {
			r.Fatalf("new service %d (%s): %v\n%s", i, addr, err, tail(d.Logs.String(), 20))
		}
		res.create.add(at.Sub(t0), wrote, st)
		b.forget(addr)
		time.Sleep(o.gap)
	}
	res.memEnd = mustMemory(r, d)
	b.saveHeap(res, "end")
	endMetrics := b.scrape()

	if o.iterations > 0 {
		fmt.Printf("endpoint change → kernel: %s\n", res.move.String())
		fmt.Printf("new service → kernel:     %s\n", res.create.String())
	}
	fmt.Printf("daemon RSS at the end %.0f MiB, peak %.0f MiB\n", mib(res.memEnd.RSS), mib(res.memEnd.Peak))
	fmt.Printf("daemon /metrics during the %d changes (quantiles as the upper bound of their bucket):\n", 2*o.iterations)
	for _, name := range []string{metricSync, metricPartial, metricFull, metricProgramming} {
		h := endMetrics[name]
		if h == nil {
			fmt.Printf("  %s: not exported\n", name)
			continue
		}
		fmt.Printf("  %s: %s\n", name, h.sub(coldMetrics[name]).String())
	}
	return res
}

func mustMemory(r *runner, d *daemontest.Daemon) daemontest.Memory {
	m, err := d.Memory()
	if err != nil {
		r.Fatal(err)
	}
	return m
}

// deleteProbes deletes the probe Services created by a mode and their
// slices, so that the next mode starts from the same cluster.
func (b *bench) deleteProbes(names []string) {
	ctx := context.Background()
	for _, n := range names {
		if err := b.c.CoreV1().Services(probeNS).Delete(ctx, n, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			b.r.Errorf("delete service %s: %v", n, err)
		}
		if err := b.c.DiscoveryV1().EndpointSlices(probeNS).Delete(ctx, n+"-1", metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			b.r.Errorf("delete slice %s-1: %v", n, err)
		}
	}
}

// forget deletes the node's connection-tracking entries towards addr: the
// probe's many short connections would otherwise fill the table.
func (b *bench) forget(addr netip.AddrPort) {
	_, _ = b.env.Node.Run("conntrack", "-D", "-p", "tcp", "--orig-dst", addr.Addr().String())
}

// probeStats describes one wait: how many connections the probe opened,
// and how many of them timed out (a timeout makes the figure coarser).
type probeStats struct {
	attempts, timeouts int
}

// waitAnswer connects from the node namespace to addr again and again (a
// new connection each time, at most one per --poll-interval) until one is
// answered by pod want, and returns the moment that answer arrived. Any
// other outcome — another pod answering, a refused or timed-out
// connection — means the change is not in the kernel yet.
func (b *bench) waitAnswer(d *daemontest.Daemon, addr netip.AddrPort, want string, deadline time.Time) (time.Time, probeStats, error) {
	var st probeStats
	var at time.Time
	err := b.env.Node.Do(func() error {
		lastCheck := time.Now()
		var last string
		for {
			begin := time.Now()
			if begin.After(deadline) {
				return fmt.Errorf("%s not answered by %s (last outcome: %s) after %d connections", addr, want, last, st.attempts)
			}
			if begin.Sub(lastCheck) > 100*time.Millisecond {
				lastCheck = begin
				if ok, err := d.Exited(); ok {
					return fmt.Errorf("the daemon exited: %v", err)
				}
			}
			st.attempts++
			pod, err := ask(addr, 200*time.Millisecond)
			if pod == want {
				at = time.Now()
				return nil
			}
			if err != nil {
				last = err.Error()
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					st.timeouts++
				}
			} else {
				last = "answered by " + pod
			}
			if rest := b.o.pollInterval - time.Since(begin); rest > 0 {
				time.Sleep(rest)
			}
		}
	})
	return at, st, err
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// waitProgrammed connects from the node namespace to addr, a synthetic
// Service, until the connection is DNATed to one of its (fake) endpoints,
// which the gateway refuses with an ICMP error (EHOSTUNREACH); without
// rules the gateway resets it (ECONNREFUSED). It returns the moment it saw
// the Service DNATed.
func (b *bench) waitProgrammed(d *daemontest.Daemon, addr netip.AddrPort, deadline time.Time) (time.Time, error) {
	var at time.Time
	err := b.env.Node.Do(func() error {
		var last error
		for i := 0; ; i++ {
			begin := time.Now()
			if begin.After(deadline) {
				return fmt.Errorf("%s not DNATed (last outcome: %v)", addr, last)
			}
			if i%100 == 0 {
				if ok, err := d.Exited(); ok {
					return fmt.Errorf("the daemon exited: %v", err)
				}
			}
			c, err := net.DialTimeout("tcp", addr.String(), 200*time.Millisecond)
			if err == nil {
				c.Close()
				return fmt.Errorf("%s answered: its endpoints should not exist", addr)
			}
			if errors.Is(err, syscall.EHOSTUNREACH) {
				at = time.Now()
				return nil
			}
			last = err
			if rest := b.o.pollInterval - time.Since(begin); rest > 0 {
				time.Sleep(rest)
			}
		}
	})
	return at, err
}

// ask makes one HTTP/1.0 request to addr on a new connection (in the
// namespace of the calling thread) and returns the name of the pod that
// answered. The connection is closed with a reset, which leaves no
// TIME_WAIT socket on either side and a short-lived conntrack entry.
func ask(addr netip.AddrPort, timeout time.Duration) (string, error) {
	c, err := (&net.Dialer{Timeout: timeout}).Dial("tcp", addr.String())
	if err != nil {
		return "", err
	}
	tc := c.(*net.TCPConn)
	defer func() {
		_ = tc.SetLinger(0)
		_ = tc.Close()
	}()
	_ = tc.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(tc, "GET / HTTP/1.0\r\n\r\n"); err != nil {
		return "", err
	}
	resp, err := io.ReadAll(io.LimitReader(tc, 4096))
	if err != nil {
		return "", err
	}
	_, body, ok := bytes.Cut(resp, []byte("\r\n\r\n"))
	f := strings.Fields(string(body))
	if !ok || len(f) == 0 {
		return "", fmt.Errorf("unexpected answer %q", resp)
	}
	return f[0], nil
}

// samples are the latencies of one kind of change.
type samples struct {
	latency, write     []time.Duration
	attempts, timeouts int
}

func (s *samples) add(latency, write time.Duration, st probeStats) {
	s.latency = append(s.latency, latency)
	s.write = append(s.write, write)
	s.attempts += st.attempts
	s.timeouts += st.timeouts
}

// quantile is the nearest-rank quantile of ds.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func (s *samples) row() string {
	if len(s.latency) == 0 {
		return "–" // --iterations 0
	}
	return fmt.Sprintf("%s / %s / %s / %s", msShort(quantile(s.latency, .5)), msShort(quantile(s.latency, .9)),
		msShort(quantile(s.latency, .99)), msShort(quantile(s.latency, 1)))
}

// msShort prints milliseconds with a decimal below 100.
func msShort(d time.Duration) string {
	if ms(d) < 100 {
		return fmt.Sprintf("%.1f", ms(d))
	}
	return fmt.Sprintf("%.0f", ms(d))
}

func (s *samples) String() string {
	return fmt.Sprintf("n=%d  p50 %.1f ms  p90 %.1f ms  p99 %.1f ms  max %.1f ms  (of which the client-go write, p50 %.1f ms; %d probe connections, %d timed out)",
		len(s.latency), ms(quantile(s.latency, .5)), ms(quantile(s.latency, .9)), ms(quantile(s.latency, .99)),
		ms(quantile(s.latency, 1)), ms(quantile(s.write, .5)), s.attempts, s.timeouts)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "daemon log (last lines):\n" + strings.Join(lines, "\n")
}

// The daemon's histograms reported as secondary figures.
const (
	metricSync        = "kubeproxy_sync_proxy_rules_duration_seconds"
	metricFull        = "kubeproxy_sync_full_proxy_rules_duration_seconds"
	metricPartial     = "kubeproxy_sync_partial_proxy_rules_duration_seconds"
	metricProgramming = "kubeproxy_network_programming_duration_seconds"
)

// scrape reads the daemon's /metrics from inside the node namespace.
func (b *bench) scrape() map[string]*histogram {
	body, err := b.get("/metrics")
	if err != nil {
		b.r.Errorf("scrape /metrics: %v", err)
		return nil
	}
	return parseHistograms(string(body))
}

// saveHeap saves the daemon's heap profile (--heap-profiles) as
// <binary>-<mode>-<when>.pb.gz; gc=1 has it garbage-collect first, so
// the profile shows what is retained.
func (b *bench) saveHeap(res result, when string) {
	if b.o.heapProfiles == "" {
		return
	}
	body, err := b.get("/debug/pprof/heap?gc=1")
	if err != nil {
		b.r.Errorf("heap profile: %v", err)
		return
	}
	name := filepath.Join(b.o.heapProfiles, fmt.Sprintf("%s-%s-%s.pb.gz", res.bin, res.mode, when))
	if err := os.WriteFile(name, body, 0o644); err != nil {
		b.r.Errorf("heap profile: %v", err)
		return
	}
	fmt.Printf("%s: heap profile in %s\n", when, name)
	// The profile's collection has just run: the heap now is what is live.
	if m, err := b.get("/metrics"); err == nil {
		for _, l := range strings.Split(string(m), "\n") {
			if v, ok := strings.CutPrefix(l, "go_memstats_heap_alloc_bytes "); ok {
				if f, err := strconv.ParseFloat(v, 64); err == nil {
					fmt.Printf("%s: live heap %.0f MiB (go_memstats_heap_alloc_bytes after the collection)\n", when, f/(1<<20))
				}
			}
		}
	}
}

// get fetches a path of the daemon's metrics server, from inside the node
// namespace.
func (b *bench) get(path string) ([]byte, error) {
	var body []byte
	err := b.env.Node.Do(func() error {
		c, err := net.DialTimeout("tcp", "127.0.0.1:10249", 5*time.Second)
		if err != nil {
			return err
		}
		tr := &http.Transport{Dial: func(string, string) (net.Conn, error) { return c, nil }}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 30 * time.Second}).Get("http://127.0.0.1:10249" + path)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", path, resp.Status)
		}
		body, err = io.ReadAll(resp.Body)
		return err
	})
	return body, err
}

// histogram is a Prometheus histogram without labels.
type histogram struct {
	les        []float64 // upper bounds, ascending, +Inf last
	cumulative []float64
	sum, count float64
}

// parseHistograms reads the unlabelled histograms of a text exposition.
func parseHistograms(text string) map[string]*histogram {
	hs := map[string]*histogram{}
	get := func(name string) *histogram {
		if hs[name] == nil {
			hs[name] = &histogram{}
		}
		return hs[name]
	}
	for _, line := range strings.Split(text, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			continue
		}
		name := f[0]
		switch {
		case strings.Contains(name, "_bucket{le=\""):
			base, le, _ := strings.Cut(name, "_bucket{le=\"")
			le = strings.TrimSuffix(le, "\"}")
			bound, err := strconv.ParseFloat(le, 64) // "+Inf" too
			if err != nil {
				continue
			}
			h := get(base)
			h.les = append(h.les, bound)
			h.cumulative = append(h.cumulative, v)
		case strings.HasSuffix(name, "_sum"):
			get(strings.TrimSuffix(name, "_sum")).sum = v
		case strings.HasSuffix(name, "_count"):
			get(strings.TrimSuffix(name, "_count")).count = v
		}
	}
	for name, h := range hs {
		if len(h.les) == 0 {
			delete(hs, name)
		}
	}
	return hs
}

// sub is h minus an earlier scrape of the same histogram (nil: h).
func (h *histogram) sub(old *histogram) *histogram {
	if old == nil || len(old.les) != len(h.les) {
		return h
	}
	d := &histogram{les: h.les, sum: h.sum - old.sum, count: h.count - old.count}
	for i := range h.cumulative {
		d.cumulative = append(d.cumulative, h.cumulative[i]-old.cumulative[i])
	}
	return d
}

// quantile bounds a quantile from above: the upper bound of the bucket
// holding it (no interpolation: the buckets of
// kubeproxy_network_programming_duration_seconds start at 250 ms, which
// interpolation would turn into invented figures). It returns +Inf when
// the quantile lies above the highest finite bound.
func (h *histogram) quantile(q float64) float64 {
	rank := q * h.count
	for i, le := range h.les {
		if h.cumulative[i] >= rank {
			return le
		}
	}
	return math.Inf(1)
}

func (h *histogram) String() string {
	if h.count == 0 {
		return "no observations"
	}
	return fmt.Sprintf("n=%d  mean %.1f ms  p50 ≤ %s  p90 ≤ %s  p99 ≤ %s", int(h.count),
		1000*h.sum/h.count, bound(h.quantile(.5)), bound(h.quantile(.9)), bound(h.quantile(.99)))
}

func bound(seconds float64) string {
	if math.IsInf(seconds, 1) {
		return "+Inf"
	}
	if seconds >= 1 {
		return fmt.Sprintf("%.4g s", seconds)
	}
	return fmt.Sprintf("%.4g ms", 1000*seconds)
}

// sandbox.TB is all dptest needs; keep the import explicit.
var _ sandbox.TB = (*runner)(nil)
