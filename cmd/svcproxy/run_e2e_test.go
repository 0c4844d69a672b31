package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/svcproxy/svcproxy/daemontest"
	"github.com/svcproxy/svcproxy/dptest"
	"github.com/svcproxy/svcproxy/nft"
	"github.com/svcproxy/svcproxy/sandbox"
)

const nodeManifest = `apiVersion: v1
kind: Node
metadata: {name: node-a}
status: {addresses: [{type: InternalIP, address: 192.168.50.2}, {type: InternalIP, address: "fd00:50::2"}]}
`

// manifestDir is a directory holding the test node and the base Services
// of the shared scenarios, as `run --manifests` reads it.
func manifestDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range map[string]string{"node.yaml": nodeManifest, "services.yaml": dptest.Scenarios[0].Manifests} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// buildBinary compiles svcproxy once per test binary run.
func buildBinary(t *testing.T) string {
	t.Helper()
	return daemontest.Build(t)
}

// daemon is `svcproxy run` inside the node namespace.
type daemon = daemontest.Daemon

func startDaemon(t *testing.T, bin string, node *sandbox.NS, args ...string) *daemon {
	t.Helper()
	return daemontest.Start(t, bin, node, args...)
}

// eventually polls check until it returns nil or 20 s pass.
func eventually(t *testing.T, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		if err = check(); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s: %v", what, err)
}

// answers collects which pods answer n requests.
func answers(env *dptest.Env, to string, n int) (map[string]bool, error) {
	got := map[string]bool{}
	as, err := env.Requests(env.Client, "tcp", netip.MustParseAddrPort(to), n, 2*time.Second)
	for _, a := range as {
		got[a.Pod] = true
	}
	return got, err
}

func httpInNS(ns *sandbox.NS, url string) (int, string, error) {
	var conn net.Conn
	host := strings.TrimPrefix(url, "http://")
	host = host[:strings.Index(host, "/")]
	if err := ns.Do(func() error {
		var err error
		conn, err = net.DialTimeout("tcp", host, 2*time.Second)
		return err
	}); err != nil {
		return 0, "", err
	}
	tr := &http.Transport{DialContext: nil, Dial: func(string, string) (net.Conn, error) { return conn, nil }}
	resp, err := (&http.Client{Transport: tr, Timeout: 3 * time.Second}).Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), nil
}

func TestRunFromManifestsEndToEnd(t *testing.T) {
	bin := buildBinary(t)
	for _, mode := range []string{"nftables", "iptables"} {
		t.Run(mode, func(t *testing.T) {
			env := dptest.NewEnv(t)
			dir := manifestDir(t)
			write := func(name, content string) {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			// --profiling in one mode only: /debug/pprof is served with it, not without.
			profiling := mode == "nftables"
			d := startDaemon(t, bin, env.Node, "--manifests", dir, "--proxy-mode", mode, "--hostname-override", "node-a",
				"--cluster-cidr", "10.244.0.0/16,fd00:244::/56", "--min-sync-period", "0", "--sync-period", "5s",
				"--healthz-bind-address", "127.0.0.1:10256", "--metrics-bind-address", "127.0.0.1:10249",
				fmt.Sprintf("--profiling=%t", profiling))

			eventually(t, "web reaches all three pods", func() error {
				got, err := answers(env, "10.96.0.10:80", 30)
				if err != nil || len(got) != 3 {
					return errorf("answers %v, %v", got, err)
				}
				return nil
			})
			// Edit the manifests: web keeps b1 only.
			write("services.yaml", dptest.ScaleDownManifests())
			eventually(t, "web follows the edit", func() error {
				got, err := answers(env, "10.96.0.10:80", 20)
				if err != nil || len(got) != 1 || !got["b1"] {
					return errorf("answers %v, %v", got, err)
				}
				return nil
			})
			code, body, err := httpInNS(env.Node, "http://127.0.0.1:10256/healthz")
			if err != nil || code != 200 || !strings.Contains(body, `"nodeEligible":true`) {
				t.Errorf("/healthz: %d %q %v", code, body, err)
			}
			// The healthCheckNodePort of the LoadBalancer with eTP Local: one local endpoint (b1).
			code, body, err = httpInNS(env.Node, "http://127.0.0.1:32001/")
			if err != nil || code != 200 || !strings.Contains(body, `"localEndpoints": 1`) {
				t.Errorf("healthCheckNodePort: %d %q %v", code, body, err)
			}
			code, body, err = httpInNS(env.Node, "http://127.0.0.1:10249/metrics")
			if err != nil || code != 200 || !strings.Contains(body, "kubeproxy_sync_proxy_rules_last_timestamp_seconds") {
				t.Errorf("/metrics: %d %v (%d bytes)", code, err, len(body))
			}
			code, body, err = httpInNS(env.Node, "http://127.0.0.1:10249/debug/pprof/heap?debug=1")
			if want := map[bool]int{true: 200, false: 404}[profiling]; err != nil || code != want || profiling != strings.Contains(body, "heap profile:") {
				t.Errorf("/debug/pprof/heap with --profiling=%t: %d %v (%d bytes), want %d", profiling, code, err, len(body), want)
			}

			// SIGTERM leaves the rules: traffic still flows.
			d.Stop(t)
			if got, err := answers(env, "10.96.0.10:80", 5); err != nil || !got["b1"] {
				t.Fatalf("after SIGTERM: %v, %v", got, err)
			}
			// cleanup removes them.
			if out, err := env.Node.Run(bin, "cleanup"); err != nil {
				t.Fatalf("cleanup: %v %s", err, out)
			}
			if _, err := env.Request(env.Client, "tcp", netip.MustParseAddrPort("10.96.0.10:80"), 500*time.Millisecond); err == nil {
				t.Fatal("the ClusterIP still answers after cleanup")
			}
		})
	}
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

// Switching --proxy-mode leaves no rules of the previous mode behind, and
// traffic keeps flowing.
func TestSwitchingProxyMode(t *testing.T) {
	bin := buildBinary(t)
	env := dptest.NewEnv(t)
	dir := manifestDir(t)
	common := []string{"--manifests", dir, "--hostname-override", "node-a", "--cluster-cidr", "10.244.0.0/16",
		"--min-sync-period", "0", "--healthz-bind-address", "", "--metrics-bind-address", ""}
	leftovers := func() (nftTables, iptChains int) {
		out, _ := env.Node.Run("nft", "list", "tables")
		nftTables = strings.Count(out, " svcproxy")
		for _, save := range []string{"iptables-legacy-save", "iptables-nft-save", "ip6tables-legacy-save", "ip6tables-nft-save"} {
			out, _ := env.Node.Run(save)
			iptChains += strings.Count(out, ":SVCP-")
		}
		return
	}
	for i, mode := range []string{"iptables", "nftables", "iptables"} {
		d := startDaemon(t, bin, env.Node, append([]string{"--proxy-mode", mode}, common...)...)
		eventually(t, mode+": traffic", func() error {
			got, err := answers(env, "10.96.0.10:80", 10)
			if err != nil || len(got) == 0 {
				return errorf("%v %v", got, err)
			}
			return nil
		})
		eventually(t, mode+": only its own rules", func() error {
			n, ipt := leftovers()
			if (mode == "nftables") != (n == 2) || (mode == "iptables") != (ipt > 0) || (mode == "nftables" && ipt > 0) || (mode == "iptables" && n > 0) {
				return errorf("step %d (%s): %d nft tables, %d iptables chains", i, mode, n, ipt)
			}
			return nil
		})
		d.Stop(t)
	}
}

// While the kernel refuses every sync, the rules stay, /healthz turns
// unhealthy after 2 × --sync-period and failures are counted; when the
// cause goes, the next retry programs the change and health returns.
func TestRefusedSyncsMakeHealthzFail(t *testing.T) {
	bin := buildBinary(t)
	env := dptest.NewEnv(t)
	dir := manifestDir(t)
	startDaemon(t, bin, env.Node, "--manifests", dir, "--proxy-mode", "nftables", "--hostname-override", "node-a",
		"--cluster-cidr", "10.244.0.0/16,fd00:244::/56", "--min-sync-period", "0", "--sync-period", "2s",
		"--healthz-bind-address", "127.0.0.1:10256", "--metrics-bind-address", "127.0.0.1:10249")
	healthz := func() int { code, _, _ := httpInNS(env.Node, "http://127.0.0.1:10256/healthz"); return code }
	eventually(t, "healthy", func() error {
		if c := healthz(); c != 200 {
			return errorf("healthz %d", c)
		}
		return nil
	})

	// Block a chain the next change needs (the model predicts its name).
	// The edit also adds a Service with affinity, which gets chains of its
	// own (others share chains by content, which may exist already).
	edit := dptest.ScaleDownManifests() + `---
apiVersion: v1
kind: Service
metadata: {name: sticky2, namespace: t}
spec: {clusterIP: 10.96.0.99, sessionAffinity: ClientIP, ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: sticky2-1, namespace: t, labels: {kubernetes.io/service-name: sticky2}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints: [{addresses: ["10.244.1.11"], nodeName: node-a}]
`
	next := dptest.Scenario{Name: "next", Manifests: edit}.Build(t)
	current, _ := env.Node.Run("nft", "list", "table", "ip", "svcproxy")
	var blocker string
	ipTable, _, _ := strings.Cut(nft.Render(next), "table ip6 ")
	for _, l := range strings.Split(ipTable, "\n") {
		if name, ok := strings.CutPrefix(strings.TrimSpace(l), "chain "); ok && !strings.Contains(current, "chain "+name) {
			blocker = strings.TrimSuffix(name, " {")
			break
		}
	}
	if blocker == "" {
		t.Fatal("the change adds no chain to block")
	}
	env.Node.MustRun(t, "nft", "add", "chain", "ip", "svcproxy", blocker, "{ type filter hook input priority 100; policy accept; }")
	os.WriteFile(filepath.Join(dir, "services.yaml"), []byte(edit), 0o644)

	eventually(t, "unhealthy while syncs fail", func() error {
		if c := healthz(); c != 503 {
			return errorf("healthz %d", c)
		}
		return nil
	})
	// The old rules still work: web still reaches b3, which the edit removed.
	if got, err := answers(env, "10.96.0.10:80", 30); err != nil || !got["b3"] {
		t.Errorf("old rules during the failures: %v %v", got, err)
	}
	_, metrics, _ := httpInNS(env.Node, "http://127.0.0.1:10249/metrics")
	if !strings.Contains(metrics, "kubeproxy_sync_proxy_rules_nftables_sync_failures_total ") || strings.Contains(metrics, "kubeproxy_sync_proxy_rules_nftables_sync_failures_total 0\n") {
		t.Errorf("failures not counted")
	}

	env.Node.MustRun(t, "nft", "delete", "chain", "ip", "svcproxy", blocker)
	eventually(t, "healthy again and the change programmed", func() error {
		if c := healthz(); c != 200 {
			return errorf("healthz %d", c)
		}
		got, err := answers(env, "10.96.0.10:80", 20)
		if err != nil || len(got) != 1 || !got["b1"] {
			return errorf("answers %v %v", got, err)
		}
		return nil
	})
}
