package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/svcproxy/svcproxy/apiserver"
	"github.com/svcproxy/svcproxy/dptest"
	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/nft"
	"github.com/svcproxy/svcproxy/sandbox"
	"github.com/svcproxy/svcproxy/textdiff"
)

// kernelRules is the canonical text of what svcproxy programmed in ns:
// its nftables tables and its iptables chains (both variants, both
// families; the unused ones are empty).
func kernelRules(t *testing.T, ns *sandbox.NS) string {
	t.Helper()
	out := ns.MustRun(t, "nft", "list", "ruleset")
	c, err := nft.Canonical(out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, save := range []string{"iptables-legacy-save", "iptables-nft-save", "ip6tables-legacy-save", "ip6tables-nft-save"} {
		c += iptables.Canonical(ns.MustRun(t, save))
	}
	return c
}

// within polls check until it returns nil, failing t after d.
func within(t *testing.T, d time.Duration, what string, check func() error) time.Duration {
	t.Helper()
	start := time.Now()
	var err error
	for time.Since(start) < d {
		if err = check(); err == nil {
			return time.Since(start)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s after %v: %v", what, d, err)
	return 0
}

// TestWatchExpiryRelists: the daemon runs against a real kube-apiserver,
// reaching it through a proxy the test cuts (a partition between the node
// and the control plane). While cut, an EndpointSlice changes, a Service
// is deleted and another created; then the API server loses the history
// the daemon's watches would resume from — etcd compacted with the watch
// cache off, or the API server restarted (its new watch cache starts after
// the changes). When the partition heals, the API server answers every
// watch with 410 Gone and the informers relist.
//
// Proven with real packets and the kernel's listing: during the partition
// the rules are byte-identical (through periodic full syncs) and traffic
// follows the old view; a Service untouched by the changes answers every
// request from before the cut until after the relist (no flapping rules);
// afterwards the rules converge to the changes. That a relist really
// happened is shown by the daemon's svcproxy_informer_watch_expired_total
// and svcproxy_informer_lists_total (one expiry and one more list per
// resource), by the server's 410 message in the daemon's log ("too old"),
// and for the compaction by kube-apiserver's own log.
func TestWatchExpiryRelists(t *testing.T) {
	bin := buildBinary(t)
	type variant struct {
		name      string
		opts      []apiserver.Option
		disrupt   func(*testing.T, *apiserver.Server)
		apiLog    string // in kube-apiserver's log afterwards
		daemonLog string // the 410's message, in the daemon's log
	}
	variants := []variant{
		{name: "etcd-compaction", opts: []apiserver.Option{apiserver.WithArgs("--watch-cache=false")},
			disrupt: func(t *testing.T, s *apiserver.Server) { t.Logf("etcd compacted at revision %d", s.CompactEtcd(t)) },
			apiLog:  "mvcc: required revision has been compacted", daemonLog: "The resourceVersion for the provided watch is too old"},
		{name: "apiserver-restart", disrupt: func(t *testing.T, s *apiserver.Server) { s.Restart(t) },
			daemonLog: "too old resource version"},
	}
	for _, mode := range []string{"nftables", "iptables"} {
		for _, v := range variants {
			t.Run(mode+"/"+v.name, func(t *testing.T) {
				began := time.Now()
				env := dptest.NewEnv(t)
				srv := apiserver.StartInNetNS(t, env.Node, v.opts...)
				partition := srv.StartProxy(t)
				k := cluster{t: t, c: srv.Client()}
				k.setup()
				k.service("steady", "10.96.0.20", nil)
				k.endpoints("steady", "b1", "b2")
				k.service("web", "10.96.0.10", nil)
				k.endpoints("web", "b1", "b2", "b3")
				k.service("gone", "10.96.0.11", nil)
				k.endpoints("gone", "b3")

				const metrics = "127.0.0.1:10249"
				d := startDaemon(t, bin, env.Node, "--kubeconfig", partition.Kubeconfig(), "--proxy-mode", mode,
					"--hostname-override", "node-a", "--cluster-cidr", "10.244.0.0/16", "--min-sync-period", "0",
					"--sync-period", "2s", "--v=2", "--healthz-bind-address", "", "--metrics-bind-address", metrics)
				reach := func(to string, want ...string) func() error {
					return func() error {
						got, err := answers(env, to, 20)
						if err != nil && len(want) > 0 {
							return err
						}
						if len(got) != len(want) {
							return errorf("%s: answers from %v, want %v", to, got, want)
						}
						for _, w := range want {
							if !got[w] {
								return errorf("%s: answers from %v, want %v", to, got, want)
							}
						}
						return nil
					}
				}
				refused := func(to string) func() error {
					return func() error {
						if _, err := env.Request(env.Client, "tcp", netip.MustParseAddrPort(to), 500*time.Millisecond); err == nil {
							return errorf("%s answers", to)
						}
						return nil
					}
				}
				oldView := func() error {
					for _, check := range []func() error{reach("10.96.0.20:80", "b1", "b2"), reach("10.96.0.10:80", "b1", "b2", "b3"),
						reach("10.96.0.11:80", "b3"), refused("10.96.0.12:80")} {
						if err := check(); err != nil {
							return err
						}
					}
					return nil
				}
				eventually(t, "the first view programmed", oldView)
				stats := func() (lists, expired map[string]float64) {
					lists, expired = map[string]float64{}, map[string]float64{}
					for _, r := range []string{"services", "endpointslices", "nodes"} {
						lists[r] = metricValue(t, env.Node, metrics, `svcproxy_informer_lists_total{resource="`+r+`"}`)
						expired[r] = metricValue(t, env.Node, metrics, `svcproxy_informer_watch_expired_total{resource="`+r+`"}`)
					}
					return
				}
				lists, expired := stats()
				for r := range lists {
					if lists[r] != 1 || expired[r] != 0 {
						t.Fatalf("%s before the partition: %v lists, %v expired (want 1, 0)", r, lists[r], expired[r])
					}
				}

				// A Service nothing changes is used throughout, every 5 ms: a
				// tighter loop opens so many connections (~700/s) that after
				// 20–30k of them some collide with the pods' TIME_WAIT
				// sockets and time out, with static rules too (measured).
				var ok, failed atomic.Int64
				var lastErr atomic.Value
				stop := make(chan struct{})
				var wg sync.WaitGroup
				var stopOnce sync.Once
				finish := func() { stopOnce.Do(func() { close(stop) }); wg.Wait() }
				defer finish()
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						if _, err := env.Request(env.Client, "tcp", netip.MustParseAddrPort("10.96.0.20:80"), 2*time.Second); err != nil {
							failed.Add(1)
							lastErr.Store(time.Now().Format("15:04:05.000") + ": " + err.Error())
						} else {
							ok.Add(1)
						}
						time.Sleep(5 * time.Millisecond)
					}
				}()

				// Cut an established watch (one cut within a second of its
				// start, with no event, is "very short": client-go relists for
				// it without any 410).
				time.Sleep(1500 * time.Millisecond)
				rules := kernelRules(t, env.Node)
				partition.Cut()
				cutAt := time.Now()
				t.Logf("cut at %s", cutAt.Format("15:04:05.000"))
				k.endpoints("web", "b2")
				if err := k.c.CoreV1().Services("t").Delete(context.Background(), "gone", metav1.DeleteOptions{}); err != nil {
					t.Fatal(err)
				}
				k.service("fresh", "10.96.0.12", nil)
				k.endpoints("fresh", "b1")
				time.Sleep(2500 * time.Millisecond) // a full sync or more
				if err := oldView(); err != nil {
					t.Fatalf("during the partition: %v", err)
				}
				v.disrupt(t, srv)
				if got := kernelRules(t, env.Node); got != rules {
					t.Fatalf("the rules changed during the partition (%v):\n%s", time.Since(cutAt).Round(100*time.Millisecond), textdiff.Unified("at the cut", "later", rules, got))
				}
				partition.Heal(t)
				healedAt := time.Now()
				t.Logf("healed at %s", healedAt.Format("15:04:05.000"))

				took := within(t, 90*time.Second, "converged to the changes made during the partition", func() error {
					for _, check := range []func() error{reach("10.96.0.10:80", "b2"), refused("10.96.0.11:80"), reach("10.96.0.12:80", "b1")} {
						if err := check(); err != nil {
							return err
						}
					}
					return nil
				})
				// A reflector whose re-watches failed during the partition
				// waits out client-go's backoff (up to 30 s) before it relists.
				within(t, 40*time.Second, "one expiry and one more list per resource", func() error {
					lists, expired := stats()
					for r := range lists {
						if lists[r] < 2 || expired[r] < 1 {
							return fmt.Errorf("%s: %v lists, %v expired", r, lists[r], expired[r])
						}
					}
					return nil
				})
				time.Sleep(time.Second)
				finish()
				if failed.Load() != 0 || ok.Load() < 1000 {
					t.Errorf("the untouched Service: %d requests failed (last: %v), %d answered", failed.Load(), lastErr.Load(), ok.Load())
				}
				logs := d.Logs.String()
				if !strings.Contains(logs, "Watch expired; relisting") || !strings.Contains(logs, v.daemonLog) {
					t.Errorf("the daemon's log shows no expired watch with %q", v.daemonLog)
				}
				if v.apiLog != "" {
					log, err := os.ReadFile(filepath.Join(srv.LogDir(), "kube-apiserver.log"))
					if err != nil || !strings.Contains(string(log), v.apiLog) {
						t.Errorf("kube-apiserver's log does not show %q (%v)", v.apiLog, err)
					}
				}
				lists, expired = stats()
				t.Logf("partition %v; converged %v after healing; lists %v, expired %v; untouched Service: %d requests answered, %d failed; %v in all",
					healedAt.Sub(cutAt).Round(100*time.Millisecond), took.Round(100*time.Millisecond), lists, expired, ok.Load(), failed.Load(),
					time.Since(began).Round(100*time.Millisecond))
			})
		}
	}
}
