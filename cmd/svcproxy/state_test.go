package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func run(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	rc := dispatch(args, &out, &errb)
	return rc, out.String(), errb.String()
}

func TestStateOnDemoManifests(t *testing.T) {
	rc, out, errs := run("state", "--node", "node-a", "--cluster-cidr", "10.244.0.0/16,fd00:244::/56", "-f", "../../examples/demo")
	if rc != 0 || errs != "" {
		t.Fatalf("rc=%d stderr=%q", rc, errs)
	}
	for _, want := range []string{
		"ipv4 masqueradeAll=false clusterCIDRs=[10.244.0.0/16] nodeIP=192.168.50.2 nodePorts=all-local\n",
		"  demo/web/tcp/http 10.96.0.10:80 nodePort=30080\n    internal forward 10.244.1.11:8080(local) 10.244.1.12:8080(local) 10.244.2.13:8080\n",
		"    external forward 10.244.1.11:7007(local)\n",
		"ipv6 masqueradeAll=false clusterCIDRs=[fd00:244::/56]",
		"externalName demo/api-db -> db.example.com\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestStateProblemsAndStrict(t *testing.T) {
	dir := t.TempDir()
	bad := "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: ns}\nspec: {clusterIP: 10.96.0.1, ports: [{port: 99999}]}\n---\nkind: Deployment\napiVersion: apps/v1\n"
	if err := os.WriteFile(filepath.Join(dir, "bad.yaml"), []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		rc   int
	}{{nil, 0}, {[]string{"--strict"}, 1}} {
		rc, _, errs := run(append([]string{"state", "-f", dir}, tc.args...)...)
		if rc != tc.rc {
			t.Errorf("%v: rc=%d, want %d", tc.args, rc, tc.rc)
		}
		for _, want := range []string{
			"problem: Service ns/s: spec.ports[0].port: 99999 is out of range 1-65535: port skipped",
			`bad.yaml: document 1: unknown kind "apps/v1, Kind=Deployment": skipped`,
		} {
			if !strings.Contains(errs, want) {
				t.Errorf("stderr lacks %q:\n%s", want, errs)
			}
		}
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{nil, {"nope"}, {"state"}, {"state", "-f", "/does/not/exist"}, {"state", "--cluster-cidr", "x", "-f", "."}} {
		if rc, _, _ := run(args...); rc != 2 {
			t.Errorf("%q: rc=%d, want 2", args, rc)
		}
	}
}
