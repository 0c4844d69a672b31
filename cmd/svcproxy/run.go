package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"github.com/svcproxy/svcproxy/conntrack"
	"github.com/svcproxy/svcproxy/controller"
	"github.com/svcproxy/svcproxy/health"
	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/nft"
	"github.com/svcproxy/svcproxy/proxy"
)

// runFlags are kube-proxy's flags, with its names, syntax and defaults,
// plus --manifests.
type runFlags struct {
	kubeconfig, master, hostnameOverride, proxyMode string
	clusterCIDR                                     string
	masqueradeAll, cleanup, profiling               bool
	nodePortAddresses                               []string
	minSyncPeriod, syncPeriod, configSyncPeriod     time.Duration
	healthzBindAddress, metricsBindAddress          string
	manifests                                       string
	iptablesMode                                    string
}

func (f *runFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "Path to kubeconfig file with authorization information (in-cluster config when empty).")
	fs.StringVar(&f.master, "master", "", "The address of the Kubernetes API server (overrides any value in kubeconfig).")
	fs.StringVar(&f.hostnameOverride, "hostname-override", "", "If non-empty, will be used as the name of the Node that svcproxy is running on.")
	fs.StringVar(&f.proxyMode, "proxy-mode", "iptables", "Which proxy mode to use: 'iptables' or 'nftables'.")
	fs.StringVar(&f.clusterCIDR, "cluster-cidr", "", "The CIDR range of the pods in the cluster (comma-separated for dual-stack). Traffic from outside it to a ClusterIP is masqueraded.")
	fs.BoolVar(&f.masqueradeAll, "masquerade-all", false, "SNAT all traffic sent via Service cluster IPs.")
	fs.StringSliceVar(&f.nodePortAddresses, "nodeport-addresses", nil, "A list of CIDR ranges that contain valid node IPs, or the single string 'primary'. NodePorts are accepted only on those IPs. Default: 'primary' in nftables mode, all local IPs in iptables mode.")
	fs.DurationVar(&f.minSyncPeriod, "min-sync-period", time.Second, "The minimum period between proxy rule resyncs (e.g. '5s', '1m', '2h22m'). 0 resyncs on every change.")
	fs.DurationVar(&f.syncPeriod, "sync-period", 30*time.Second, "An interval (e.g. '5s', '1m', '2h22m') indicating how frequently various re-synchronizing and cleanup operations are performed. Must be greater than 0.")
	fs.DurationVar(&f.configSyncPeriod, "config-sync-period", 15*time.Minute, "How often configuration from the apiserver is refreshed. Must be greater than 0.")
	fs.StringVar(&f.healthzBindAddress, "healthz-bind-address", "0.0.0.0:10256", "The IP address and port for the health check server to serve on; empty to disable.")
	fs.StringVar(&f.metricsBindAddress, "metrics-bind-address", "127.0.0.1:10249", "The IP address and port for the metrics server to serve on; empty to disable.")
	fs.BoolVar(&f.profiling, "profiling", false, "If true enables profiling via web interface on /debug/pprof handler (on the metrics server, --metrics-bind-address).")
	fs.BoolVar(&f.cleanup, "cleanup", false, "If true cleanup iptables and nftables rules and exit.")
	fs.StringVar(&f.iptablesMode, "iptables-mode", "auto", "svcproxy only: which iptables variant to program in iptables mode: auto (detect what the node uses), legacy or nft.")
	fs.StringVar(&f.manifests, "manifests", "", "Read Services, EndpointSlices and Nodes from this directory of manifests (watched for changes) instead of an API server.")
}

// newFlagSet is a pflag set that also carries klog's flags (-v, ...).
func newFlagSet(name string, stderr io.Writer) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	gfs := flag.NewFlagSet(name, flag.ContinueOnError)
	klog.InitFlags(gfs)
	fs.AddGoFlagSet(gfs)
	return fs
}

func runRun(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("run", stderr)
	var f runFlags
	f.register(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if f.cleanup {
		return runCleanup(nil, stdout, stderr)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := f.run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintf(stderr, "svcproxy run: %v\n", err)
		return 1
	}
	klog.InfoS("Exiting; the rules stay in place")
	klog.Flush()
	return 0
}

func (f *runFlags) nodeName() (string, error) {
	if f.hostnameOverride != "" {
		return strings.ToLower(strings.TrimSpace(f.hostnameOverride)), nil
	}
	h, err := os.Hostname()
	return strings.ToLower(h), err
}

func (f *runFlags) run(ctx context.Context) error {
	if f.syncPeriod <= 0 {
		return errors.New("--sync-period must be greater than 0")
	}
	node, err := f.nodeName()
	if err != nil {
		return err
	}
	cidrs, err := proxy.ParseCIDRs(f.clusterCIDR)
	if err != nil {
		return fmt.Errorf("--cluster-cidr: %w", err)
	}
	npa := f.nodePortAddresses
	if len(npa) == 0 && f.proxyMode == "nftables" {
		npa = []string{"primary"} // kube-proxy's nftables default
	}
	nodePorts, err := proxy.ParseNodePortAddresses(npa)
	if err != nil {
		return err
	}

	iptMode, err := iptables.ParseMode(f.iptablesMode)
	if err != nil {
		return fmt.Errorf("--iptables-mode: %w", err)
	}
	var backend, other proxy.Backend
	failureMetric := "sync_proxy_rules_iptables_restore_failures_total"
	switch f.proxyMode {
	case "nftables":
		b := nft.New()
		defer b.Close()
		backend, failureMetric = b, "sync_proxy_rules_nftables_sync_failures_total"
		other = iptables.New()
	case "iptables", "":
		backend = iptables.New(iptables.WithMode(iptMode))
		o := nft.New()
		defer o.Close()
		other = o
	default:
		return fmt.Errorf("--proxy-mode %q: want iptables or nftables", f.proxyMode)
	}

	var src controller.Source
	var onProblems func([]proxy.Problem)
	if f.manifests != "" {
		src = controller.NewManifestSource(f.manifests, time.Second)
	} else {
		cfg, err := clientcmd.BuildConfigFromFlags(f.master, f.kubeconfig)
		if err != nil {
			return fmt.Errorf("API server configuration: %w", err)
		}
		client, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			return err
		}
		is := controller.NewInformerSource(client, node, f.configSyncPeriod)
		src = is
		broadcaster := record.NewBroadcaster(record.WithContext(ctx))
		broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
		defer broadcaster.Shutdown()
		recorder := broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "svcproxy", Host: node})
		onProblems = func(ps []proxy.Problem) {
			for _, p := range ps {
				if svc := is.ServiceOf(p); svc != nil {
					recorder.Eventf(svc, corev1.EventTypeWarning, "InvalidInput", "%s", p.String())
				}
			}
		}
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := controller.NewMetrics(reg, failureMetric)
	if is, ok := src.(*controller.InformerSource); ok {
		controller.RegisterWatchMetrics(reg, is)
	}
	if rc, ok := backend.(interface{ Repairs() uint64 }); ok {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "svcproxy", Name: "sync_proxy_rules_repairs_total",
			Help: "Full syncs that found the rules changed by someone else and repaired them",
		}, func() float64 { return float64(rc.Repairs()) }))
	}
	if sc, ok := backend.(interface{ SkippedFullSyncs() uint64 }); ok {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "svcproxy", Name: "sync_full_proxy_rules_skipped_total",
			Help: "Periodic full syncs not needed: the kernel's nftables generation showed no transaction since svcproxy's last",
		}, func() float64 { return float64(sc.SkippedFullSyncs()) }))
	}

	proxyHealth := health.NewProxyHealth(2*f.syncPeriod, nil)
	var listenIPs []netip.Addr // service health checks listen on the NodePort addresses when set
	svcHealth := map[proxy.Family]*health.ServiceHealth{
		proxy.IPv4: health.NewServiceHealth(corev1.IPv4Protocol, listenIPs, proxyHealth),
		proxy.IPv6: health.NewServiceHealth(corev1.IPv6Protocol, listenIPs, proxyHealth),
	}
	healthDone := map[proxy.Family][]proxy.HealthCheck{} // syncServiceHealth's
	defer func() {
		for _, s := range svcHealth {
			s.Close()
		}
	}()
	cleaner, err := conntrack.New("")
	if err != nil {
		return err
	}
	defer cleaner.Close()
	families := []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
	// Rules of the other mode (a node switching --proxy-mode) are removed
	// once this mode's rules are in place, so traffic never goes unproxied.
	var otherCleaned bool
	c := &controller.Controller{
		Source:        src,
		Backend:       backend,
		Config:        proxy.Config{NodeName: node, ClusterCIDRs: cidrs, MasqueradeAll: f.masqueradeAll, NodePortAddresses: nodePorts},
		MinSyncPeriod: f.minSyncPeriod,
		SyncPeriod:    f.syncPeriod,
		Metrics:       metrics,
		Memory:        memoryHeadroom(),
		Hooks: controller.Hooks{
			Queued: func() {
				for _, fam := range families {
					proxyHealth.QueuedUpdate(fam)
				}
			},
			Synced: func(st *proxy.State, in proxy.Inputs) {
				if !otherCleaned {
					if err := other.Cleanup(ctx); err != nil {
						klog.ErrorS(err, "Removing the rules of the other proxy mode")
					} else {
						otherCleaned = true
					}
				}
				for _, fam := range families {
					proxyHealth.Updated(fam)
				}
				for _, n := range in.Nodes {
					if n.Name == node {
						proxyHealth.SetNode(n)
					}
				}
				syncServiceHealth(st, svcHealth, healthDone)
				if n, err := cleaner.Clean(st); err != nil {
					klog.ErrorS(err, "Deleting stale UDP conntrack entries")
				} else if n > 0 {
					klog.V(2).InfoS("Deleted stale UDP conntrack entries", "count", n)
				}
			},
			NewProblems: func(ps []proxy.Problem) {
				for _, p := range ps {
					klog.InfoS("Skipped invalid input", "object", p.Object(), "field", p.Field, "problem", p.Message)
				}
				if onProblems != nil {
					onProblems(ps)
				}
			},
		},
	}
	if f.healthzBindAddress != "" {
		go serveUntil(ctx, "healthz", f.healthzBindAddress, proxyHealth.Handler())
	}
	if f.metricsBindAddress != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		if f.profiling {
			installProfiling(mux)
		}
		go serveUntil(ctx, "metrics", f.metricsBindAddress, mux)
	}
	klog.InfoS("Starting svcproxy", "node", node, "proxyMode", f.proxyMode, "manifests", f.manifests)
	return c.Run(ctx)
}

// installProfiling serves Go's profiles under /debug/pprof/, as
// kube-proxy's --profiling does on its metrics server.
func installProfiling(mux *http.ServeMux) {
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
}

// serveUntil serves h on addr until ctx ends, retrying a failed listen
// every 5 seconds as kube-proxy does.
func serveUntil(ctx context.Context, what, addr string, h http.Handler) {
	for {
		srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 10 * time.Second}
		go func() { <-ctx.Done(); srv.Close() }()
		err := srv.ListenAndServe()
		if ctx.Err() != nil {
			return
		}
		klog.ErrorS(err, "Serving failed; retrying", "server", what, "address", addr)
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Second):
		}
	}
}

// syncServiceHealth runs the healthCheckNodePort servers of st. A family
// whose health checks are those of the last call (done) is skipped: most
// syncs change none, and this runs at every sync. Unless that call failed
// to bind a port: the next Sync retries it.
func syncServiceHealth(st *proxy.State, servers map[proxy.Family]*health.ServiceHealth, done map[proxy.Family][]proxy.HealthCheck) {
	for _, fs := range st.Families() {
		hcs := fs.HealthChecks()
		if last, ok := done[fs.Family]; ok && slices.Equal(last, hcs) {
			continue
		}
		delete(done, fs.Family)
		ports := make(map[health.ServiceKey]uint16, len(hcs))
		counts := make(map[health.ServiceKey]int, len(hcs))
		for _, hc := range hcs {
			k := health.ServiceKey{Namespace: hc.Namespace, Name: hc.Name}
			ports[k], counts[k] = hc.Port, hc.LocalEndpoints
		}
		if err := servers[fs.Family].Sync(ports); err != nil {
			klog.ErrorS(err, "Health check servers", "family", fs.Family)
		} else {
			done[fs.Family] = hcs
		}
		servers[fs.Family].SyncEndpoints(counts)
	}
}

// runCleanup removes everything svcproxy programmed, in both backends.
func runCleanup(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("cleanup", stderr)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx := context.Background()
	failed := false
	for name, b := range map[string]proxy.Backend{"nftables": nft.New(), "iptables": iptables.New()} {
		if err := b.Cleanup(ctx); err != nil {
			fmt.Fprintf(stderr, "svcproxy cleanup: %s: %v\n", name, err)
			failed = true
		}
	}
	if failed {
		return 1
	}
	fmt.Fprintln(stdout, "svcproxy rules removed (nftables and iptables)")
	return 0
}

// memoryHeadroom is the daemon's bound on heap growth between collections
// (controller.MemoryHeadroom): a quarter of the live heap, at least 32 MiB. A
// GOMEMLIMIT or GOGC in the environment means the operator tunes the
// runtime: then the daemon leaves it alone.
func memoryHeadroom() *controller.MemoryHeadroom {
	for _, v := range []string{"GOMEMLIMIT", "GOGC"} {
		if _, set := os.LookupEnv(v); set {
			klog.InfoS("Go runtime tuned by the environment; no memory headroom bound", "variable", v)
			return nil
		}
	}
	return &controller.MemoryHeadroom{Fraction: 0.25, Min: 32 << 20}
}
