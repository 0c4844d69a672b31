package golden

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseAndFormat(t *testing.T) {
	in := "# header\n\nmore\n-- config --\n# a comment\nnode: n1\ncluster-cidr: 10.0.0.0/8, fd00::/64\nmasquerade-all: true\nnodeport-addresses: primary\n" +
		"-- manifests.yaml --\napiVersion: v1\n-- problems --\n-- nftables --\ntable ip svcproxy {\n}\n-- iptables --\n*nat\nCOMMIT\n"
	c, err := Parse("x", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if c.Comment != "# header\n\nmore\n" || string(c.Manifests) != "apiVersion: v1\n" || c.Problems != "" ||
		c.NFT != "table ip svcproxy {\n}\n" || c.IPTables != "*nat\nCOMMIT\n" {
		t.Errorf("parsed %+v", c)
	}
	if c.Config.NodeName != "n1" || len(c.Config.ClusterCIDRs) != 2 || !c.Config.MasqueradeAll || !c.Config.NodePortAddresses.Primary {
		t.Errorf("config %+v", c.Config)
	}
	if out := string(Format(c)); out != in {
		t.Errorf("Format:\n%s\nwant:\n%s", out, in)
	}

	// A file made in code gets its config printed.
	c.hasConfig, c.rawConfig = false, nil
	back, err := Parse("x", Format(c))
	if err != nil {
		t.Fatal(err)
	}
	if back.Config.NodeName != "n1" || len(back.Config.ClusterCIDRs) != 2 || !back.Config.MasqueradeAll || !back.Config.NodePortAddresses.Primary {
		t.Errorf("config after FormatConfig: %+v", back.Config)
	}

	// Defaults.
	d, err := Parse("d", []byte("-- manifests.yaml --\n"))
	if err != nil {
		t.Fatal(err)
	}
	if d.Config.NodeName != DefaultNode || d.Config.MasqueradeAll || len(d.Config.ClusterCIDRs) != 0 {
		t.Errorf("default config %+v", d.Config)
	}
	if strings.Contains(string(Format(d)), "-- config --") {
		t.Error("a default config made in code is written")
	}

	for _, bad := range []string{
		"-- manifest.yaml --\n",
		"-- manifests.yaml --\n-- manifests.yaml --\n",
		"-- config --\nnode n1\n-- manifests.yaml --\n",
		"-- config --\nzone: a\n-- manifests.yaml --\n",
		"-- config --\ncluster-cidr: 10.0.0.0\n-- manifests.yaml --\n",
		"-- config --\nmasquerade-all: maybe\n-- manifests.yaml --\n",
		"-- config --\nnodeport-addresses: primary,10.0.0.0/8\n-- manifests.yaml --\n",
		"-- config --\nnode: a\nnode: b\n-- manifests.yaml --\n",
	} {
		if _, err := Parse("bad", []byte(bad)); err == nil {
			t.Errorf("Parse(%q) succeeded", bad)
		}
	}
}

func TestWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.txtar")
	in := "# h\n-- config --\nnode:   node-b   \n-- manifests.yaml --\nx: 1\n-- problems --\nold\n-- nftables --\nold\n-- iptables --\nold\n"
	c, err := Parse("c", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	c.Problems, c.NFT, c.IPTables = "", "new nft\n", "new ipt\n"
	if err := Write(path, c); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	want := "# h\n-- config --\nnode:   node-b   \n-- manifests.yaml --\nx: 1\n-- problems --\n-- nftables --\nnew nft\n-- iptables --\nnew ipt\n"
	if string(got) != want {
		t.Errorf("Write:\n%s\nwant:\n%s", got, want)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("Write left %d files", len(entries))
	}
}

func TestDiff(t *testing.T) {
	if d := Diff("a\nb\n", "a\nb\n"); d != "" {
		t.Errorf("equal: %q", d)
	}
	want := strings.Join([]string{"1", "2", "3", "4", "5", "6", "7", "8", "9", "10"}, "\n") + "\n"
	got := strings.Join([]string{"1", "2", "3", "4", "five", "6", "7", "8", "9", "10", "11"}, "\n") + "\n"
	d := Diff(want, got)
	exp := `--- want
+++ got
@@ -2,9 +2,10 @@
 2
 3
 4
-5
+five
 6
 7
 8
 9
 10
+11
`
	if d != exp {
		t.Errorf("Diff:\n%s\nwant:\n%s", d, exp)
	}
	if d := Diff("", "x\n"); d != "--- want\n+++ got\n@@ -0,0 +1,1 @@\n+x\n" {
		t.Errorf("Diff from empty: %q", d)
	}
	if d := Diff("x", "x\n"); !strings.Contains(d, "No newline at end of file") {
		t.Errorf("Diff of a missing newline: %q", d)
	}
}
