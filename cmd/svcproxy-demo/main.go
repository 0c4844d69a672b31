// Command svcproxy-demo shows svcproxy at work in a sandbox of network
// namespaces: a node, a client and three pods answering with their name.
// It runs `svcproxy run --manifests` in the node on a copy of
// examples/demo, sends traffic, edits the manifests and shows the
// dataplane follow, prints the rules, and removes everything it created.
// It needs root (`make demo`).
package main

import (
	"bytes"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/svcproxy/svcproxy/dptest"
	"github.com/svcproxy/svcproxy/sandbox"
)

// runner implements sandbox.TB for a program: Fatal aborts the demo,
// cleanups run at the end whatever happens.
type runner struct{ cleanups []func() }

var _ sandbox.TB = (*runner)(nil)

type abort struct{ msg string }

func (r *runner) Helper()                           {}
func (r *runner) Fatal(args ...any)                 { panic(abort{fmt.Sprint(args...)}) }
func (r *runner) Fatalf(format string, args ...any) { panic(abort{fmt.Sprintf(format, args...)}) }
func (r *runner) Errorf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "warning: "+format+"\n", args...)
}
func (r *runner) Skip(args ...any) { panic(abort{fmt.Sprint(args...)}) }
func (r *runner) Cleanup(f func()) { r.cleanups = append(r.cleanups, f) }
func (r *runner) cleanup() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
	r.cleanups = nil
}

func main() {
	bin := flag.String("svcproxy", "bin/svcproxy", "the svcproxy binary")
	manifests := flag.String("manifests", "examples/demo", "the demo's manifests")
	flag.Parse()
	r := &runner{}
	code := 0
	var mine []string // the namespaces this demo created
	func() {
		defer func() {
			if p := recover(); p != nil {
				a, ok := p.(abort)
				if !ok {
					r.cleanup()
					panic(p)
				}
				fmt.Fprintf(os.Stderr, "\ndemo failed: %s\n", a.msg)
				code = 1
			}
		}()
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
		go func() { <-sig; fmt.Fprintln(os.Stderr, "\ninterrupted: cleaning up"); r.cleanup(); os.Exit(130) }()
		demo(r, *bin, *manifests, &mine)
	}()
	step("Cleaning up")
	r.cleanup()
	left, _ := exec.Command("ip", "netns", "list").Output()
	var leaked []string
	for _, n := range mine {
		if strings.Contains(string(left), n) {
			leaked = append(leaked, n)
		}
	}
	if len(leaked) > 0 {
		fmt.Printf("  namespaces left behind: %v\n", leaked)
		code = 1
	} else {
		fmt.Println("  all namespaces, processes and rules removed")
	}
	os.Exit(code)
}

func step(s string) { fmt.Printf("\n== %s\n", s) }

func demo(r *runner, bin, manifests string, mine *[]string) {
	start := time.Now()
	bin, err := filepath.Abs(bin)
	if err != nil {
		r.Fatal(err)
	}
	step("Building the sandbox")
	env := dptest.NewEnv(r)
	*mine = append(*mine, env.Node.Name, env.Client.Name)
	for _, p := range env.Pods {
		*mine = append(*mine, p.NS.Name)
	}
	fmt.Printf("  client %s ── node %s ── pods b1 %s, b2 %s (on node-a), b3 %s (on node-b)\n",
		dptest.ClientIP, dptest.NodeIP, env.Pods[0].IP, env.Pods[1].IP, env.Pods[2].IP)

	dir, err := os.MkdirTemp("", "svcproxy-demo-")
	if err != nil {
		r.Fatal(err)
	}
	r.Cleanup(func() { os.RemoveAll(dir) })
	for _, f := range []string{"node.yaml", "web.yaml", "more.yaml"} {
		data, err := os.ReadFile(filepath.Join(manifests, f))
		if err != nil {
			r.Fatal(err)
		}
		write(r, filepath.Join(dir, f), string(data))
	}

	step("Starting svcproxy run --manifests (nftables mode) in the node")
	args := []string{"--manifests", dir, "--proxy-mode", "nftables", "--hostname-override", "node-a", "--cluster-cidr", "10.244.0.0/16",
		"--min-sync-period", "0", "--healthz-bind-address", "127.0.0.1:10256", "--metrics-bind-address", ""}
	var logs bytes.Buffer
	cmd := exec.Command("ip", append([]string{"netns", "exec", env.Node.Name, bin, "run"}, args...)...)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		r.Fatal(err)
	}
	r.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
		}
		if out, err := env.Node.Run(bin, "cleanup"); err != nil {
			fmt.Fprintf(os.Stderr, "svcproxy cleanup: %v %s\n", err, out)
		}
	})
	fmt.Printf("  pid %d; manifests in %s\n", cmd.Process.Pid, dir)

	web := netip.MustParseAddrPort("10.96.0.10:80")
	waitFor(r, &logs, "the ClusterIP answers", func() bool { _, err := env.Request(env.Client, "tcp", web, time.Second); return err == nil })

	step("30 HTTP requests from the client to the ClusterIP 10.96.0.10:80")
	spread(r, env, "tcp", web, 30)
	step("30 HTTP requests to the NodePort 192.168.50.2:30080")
	spread(r, env, "tcp", netip.MustParseAddrPort("192.168.50.2:30080"), 30)
	step("20 UDP datagrams to the NodePort 192.168.50.2:30007 (externalTrafficPolicy Local)")
	spread(r, env, "udp", netip.MustParseAddrPort("192.168.50.2:30007"), 20)
	fmt.Println("  only the pod on this node answers, and it sees the client's own address")

	step("Editing web.yaml: scaling down to b1 and b2, moving the NodePort to 30090")
	webYAML, _ := os.ReadFile(filepath.Join(dir, "web.yaml"))
	edited := strings.Replace(string(webYAML), "- {addresses: [10.244.2.13], nodeName: node-b, conditions: {ready: true}}\n", "", 1)
	edited = strings.Replace(edited, "nodePort: 30080", "nodePort: 30090", 1)
	write(r, filepath.Join(dir, "web.yaml"), edited)
	waitFor(r, &logs, "the new NodePort answers", func() bool {
		_, err := env.Request(env.Client, "tcp", netip.MustParseAddrPort("192.168.50.2:30090"), time.Second)
		return err == nil
	})
	spread(r, env, "tcp", web, 30)
	if _, err := env.Request(env.Client, "tcp", netip.MustParseAddrPort("192.168.50.2:30080"), time.Second); err != nil {
		fmt.Printf("  the old NodePort 30080: %v\n", err)
	}
	spread(r, env, "tcp", netip.MustParseAddrPort("192.168.50.2:30090"), 20)

	step("The IPv4 rules, as `svcproxy render --proxy-mode=nftables` prints them")
	out, err := exec.Command(bin, "render", "--proxy-mode=nftables", "--node", "node-a", "--cluster-cidr", "10.244.0.0/16", "-f", dir).Output()
	if err != nil {
		r.Fatalf("render: %v", err)
	}
	ipv4, _, _ := strings.Cut(string(out), "table ip6 ")
	fmt.Print(indent(ipv4))
	listing, err := env.Node.Run("nft", "list", "table", "ip", "svcproxy")
	if err == nil {
		fmt.Printf("  (the kernel holds %d lines of it for IPv4; `svcproxy diff` compares manifest versions in CI)\n", strings.Count(listing, "\n"))
	}

	step("Stopping svcproxy (SIGTERM leaves the rules in place), then `svcproxy cleanup`")
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	if _, err := env.Request(env.Client, "tcp", web, time.Second); err == nil {
		fmt.Println("  after SIGTERM the ClusterIP still answers")
	}
	fmt.Printf("\nDone in %.1fs.\n", time.Since(start).Seconds())
}

func write(r *runner, path, content string) {
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		r.Fatal(err)
	}
}

func waitFor(r *runner, logs *bytes.Buffer, what string, ok func() bool) {
	deadline := time.Now().Add(20 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			r.Fatalf("timed out waiting until %s; svcproxy log:\n%s", what, logs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// spread sends n requests and prints how they spread over the pods.
func spread(r *runner, env *dptest.Env, proto string, to netip.AddrPort, n int) {
	count := map[string]int{}
	sources := map[string]bool{}
	for range n {
		a, err := env.Request(env.Client, proto, to, 2*time.Second)
		if err != nil {
			r.Fatalf("%s %s: %v", proto, to, err)
		}
		count[a.Pod]++
		sources[a.Source] = true
	}
	var pods []string
	for p := range count {
		pods = append(pods, p)
	}
	slices.Sort(pods)
	var parts []string
	for _, p := range pods {
		parts = append(parts, fmt.Sprintf("%s %-3d %s", p, count[p], strings.Repeat("█", count[p])))
	}
	var srcs []string
	for s := range sources {
		srcs = append(srcs, s)
	}
	slices.Sort(srcs)
	fmt.Printf("  %s %s → %s\n    pods saw the source %s\n", proto, to, strings.Join(parts, "  "), strings.Join(srcs, ", "))
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimSuffix(s, "\n"), "\n", "\n    ") + "\n"
}
