package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/svcproxy/svcproxy/manifest"
	"github.com/svcproxy/svcproxy/nft"
	"github.com/svcproxy/svcproxy/proxy"
)

func TestRenderMatchesBackend(t *testing.T) {
	objs, _, err := manifest.Load("../../examples/demo")
	if err != nil {
		t.Fatal(err)
	}
	st := proxy.Build(proxy.Inputs{Services: objs.Services, EndpointSlices: objs.EndpointSlices, Nodes: objs.Nodes}, proxy.Config{NodeName: "node-a"})
	rc, out, errs := run("render", "--proxy-mode=nftables", "--node", "node-a", "-f", "../../examples/demo")
	if rc != 0 || errs != "" {
		t.Fatalf("rc=%d stderr=%q", rc, errs)
	}
	if out != nft.Render(st) {
		t.Error("render output differs from nft.Render")
	}
	// Byte-stable across runs.
	if _, again, _ := run("render", "--proxy-mode=nftables", "--node", "node-a", "-f", "../../examples/demo"); again != out {
		t.Error("render is not stable")
	}
	for _, args := range [][]string{{"render", "--proxy-mode=bogus", "-f", "../../examples/demo"}, {"render"}, {"render", "-f", "/nope"}} {
		if rc, _, _ := run(args...); rc != 2 {
			t.Errorf("%q: rc=%d, want 2", args, rc)
		}
	}
	if rc, out, _ := run("render", "-f", "../../examples/demo"); rc != 0 || !strings.HasPrefix(out, "*filter") {
		t.Errorf("default mode should be iptables: rc=%d %.40q", rc, out)
	}
}

func TestDiffExitCodes(t *testing.T) {
	dir := t.TempDir()
	old, cur := filepath.Join(dir, "old"), filepath.Join(dir, "new")
	for _, d := range []string{old, cur} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	web, err := os.ReadFile("../../examples/demo/web.yaml")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(old, "web.yaml"), web, 0o644)
	os.WriteFile(filepath.Join(cur, "web.yaml"), web, 0o644)
	if rc, out, errs := run("diff", "--proxy-mode=nftables", old, cur); rc != 0 || out != "" {
		t.Fatalf("equal: rc=%d out=%q err=%q", rc, out, errs)
	}
	scaled := strings.Replace(string(web), "- {addresses: [10.244.2.13], nodeName: node-b, conditions: {ready: true}}\n", "", 1)
	os.WriteFile(filepath.Join(cur, "web.yaml"), []byte(scaled), 0o644)
	rc, out, _ := run("diff", "--proxy-mode=nftables", old, cur)
	if rc != 1 {
		t.Fatalf("different: rc=%d", rc)
	}
	for _, want := range []string{"--- " + old + "\n+++ " + cur + "\n@@ ", "\n-\t\t\t     10.96.0.10 . tcp . 80 . 0x00000002 : 10.244.2.13 . 8080 }\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("diff lacks %q:\n%s", want, out)
		}
	}
	if rc, _, _ := run("diff", old); rc != 2 {
		t.Errorf("one argument: rc=%d", rc)
	}
	if rc, _, _ := run("diff", old, filepath.Join(dir, "missing")); rc != 2 {
		t.Errorf("missing path: rc=%d", rc)
	}
}

func TestExplainCommand(t *testing.T) {
	cases := []struct {
		args []string
		want []string
	}{
		{[]string{"--src", "192.168.50.100", "--dst", "10.96.0.10:80"}, []string{"ClusterIP of Service port demo/web/tcp/http", "verdict: DNAT to one of 3 endpoints, masqueraded", "10.244.2.13:8080  weight 1/3  node node-b"}},
		{[]string{"--src", "10.244.9.9", "--dst", "web.demo.svc.cluster.local:80"}, []string{"resolves to 10.96.0.10", "verdict: DNAT to one of 3 endpoints\n"}},
		{[]string{"--src", "192.168.50.100", "--dst", "192.168.50.2:30007/udp"}, []string{"NodePort of Service port demo/echo/udp/echo", "this node's endpoints only", "10.244.1.11:7007  weight 1/1"}},
		{[]string{"--src", "10.244.9.9", "--dst", "api-db.demo:5432"}, []string{"ExternalName Service: DNS only (a CNAME to db.example.com)"}},
		{[]string{"--src", "10.244.9.9", "--dst", "10.96.0.99:80"}, []string{"not proxied"}},
	}
	for _, c := range cases {
		args := append([]string{"explain", "--node", "node-a", "--cluster-cidr", "10.244.0.0/16", "-f", "../../examples/demo"}, c.args...)
		rc, out, errs := run(args...)
		if rc != 0 {
			t.Errorf("%v: rc=%d %s", c.args, rc, errs)
		}
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("%v: output lacks %q:\n%s", c.args, w, out)
			}
		}
	}
	for _, bad := range [][]string{{"--src", "x", "--dst", "10.96.0.10:80"}, {"--src", "10.0.0.1", "--dst", "10.96.0.10"}, {"--src", "10.0.0.1", "--dst", "10.96.0.10:80/icmp"}} {
		if rc, _, _ := run(append([]string{"explain", "-f", "../../examples/demo"}, bad...)...); rc != 2 {
			t.Errorf("%v: rc=%d, want 2", bad, rc)
		}
	}
}
