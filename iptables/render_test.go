package iptables

import (
	"flag"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/svcproxy/svcproxy/proxy"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current code")

func TestRender(t *testing.T) {
	for _, c := range renderCases {
		t.Run(c.name, func(t *testing.T) {
			st := build(t, c.manifests, c.config)
			out := Render(st)
			lines := strings.Split(out, "\n")
			for _, w := range c.want {
				found := false
				for _, l := range lines {
					if lineMatches(w, l) {
						found = true
						break
					}
				}
				if !found {
					t.Errorf("no line matches\n  %s", w)
				}
			}
			for _, nw := range c.notWant {
				if strings.Contains(out, nw) {
					t.Errorf("Render holds %q", nw)
				}
			}
			checkWellFormed(t, st)
			if t.Failed() {
				t.Log("\n" + out)
			}
		})
	}
}

var (
	chainName   = regexp.MustCompile(`^SVCP-[A-Z0-9-]+$`)
	declaration = regexp.MustCompile(`^:(\S+) - \[0:0\]$`)
)

// checkWellFormed checks invariants every Render output keeps: each
// family's part is its own canonical form; only table, chain, rule and
// COMMIT lines; chain names within iptables' 28 characters; every target
// of ours declared in its table; every comment made of the safe characters
// and at most 255 long.
func checkWellFormed(t *testing.T, s *proxy.State) {
	t.Helper()
	for _, fs := range s.Families() {
		if out := desired(fs).String(); Canonical(out) != out {
			t.Errorf("%s: Canonical(Render) differs from Render:\n%s", fs.Family, lineDiff(out, Canonical(out)))
		}
	}
	out := Render(s)
	var declared map[string]bool
	var targets []string
	check := func() {
		for _, tg := range targets {
			if !declared[tg] {
				t.Errorf("target %s is not declared in its table", tg)
			}
		}
		targets = nil
	}
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		switch {
		case l == "*filter" || l == "*nat":
			declared = map[string]bool{}
		case l == "COMMIT":
			check()
		case declaration.MatchString(l):
			name := declaration.FindStringSubmatch(l)[1]
			if !chainName.MatchString(name) || len(name) > 28 {
				t.Errorf("bad chain name %q", name)
			}
			declared[name] = true
		case strings.HasPrefix(l, "-A "):
			toks := tokenize(l)
			for i, tok := range toks {
				if tok.quoted && (i == 0 || toks[i-1].text != "--comment") {
					t.Errorf("quoted token %q outside a comment: %s", tok.text, l)
				}
				if i > 0 && toks[i-1].text == "--comment" && !regexp.MustCompile(`^[A-Za-z0-9._/:-]{1,255}$`).MatchString(tok.text) {
					t.Errorf("unsafe comment %q", tok.text)
				}
				if i > 0 && (toks[i-1].text == "-j" || toks[i-1].text == "-g") && strings.HasPrefix(tok.text, chainPrefix) {
					targets = append(targets, tok.text)
				}
			}
		default:
			t.Errorf("unexpected line %q", l)
		}
	}
}

// TestHostileNames: names from manifests cannot change the structure of
// the rules: each hostile Service renders exactly as many lines, with the
// same tokens, as a Service with a plain name.
func TestHostileNames(t *testing.T) {
	for i, name := range hostileNames {
		plainName := "plain"
		manifests := func(n string) string {
			return svcYAML(n, `spec: {clusterIP: 10.96.1.1, sessionAffinity: ClientIP, ports: [{name: "p\" --x", port: 80}]}`) +
				sliceYAML(n, "IPv4", `p" --x`, "TCP", "b1", "b2")
		}
		hs := build(t, manifests(name), nil)
		hostile := Render(hs)
		plain := Render(build(t, manifests(plainName), nil))
		checkWellFormed(t, hs)
		shape := func(s string) string {
			// Comments and chain hashes are the only parts allowed to differ.
			s = regexp.MustCompile(`--comment "[^"]*"`).ReplaceAllString(s, `--comment C`)
			return regexp.MustCompile(`SVCP-(SVC|SEP)-[A-Z2-7]{16}`).ReplaceAllString(s, "SVCP-$1-H")
		}
		// Chains sort by their hashed names: compare the lines as multisets.
		if d := lineDiff(sortedLines(shape(plain)), sortedLines(shape(hostile))); d != "" {
			t.Errorf("name %d %q changes the rules:\n%s", i, name, d)
		}
	}
}

func TestCommentMatch(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"svcproxy", `-m comment --comment svcproxy`},
		{"a-b_C9", `-m comment --comment a-b_C9`},
		{"ns/name/tcp/http", `-m comment --comment "ns/name/tcp/http"`},
		{"a.b:c", `-m comment --comment "a.b:c"`},
		{"", `-m comment --comment ""`},
		{`x" -j ACCEPT`, `-m comment --comment x__-j_ACCEPT`},
		{"a\nb\\c'd/", `-m comment --comment "a_b_c_d/"`},
		{"é", `-m comment --comment __`},
		{strings.Repeat("a", 300), "-m comment --comment " + strings.Repeat("a", 255)},
	} {
		if got := commentMatch(c.in); got != c.want {
			t.Errorf("commentMatch(%q) = %s, want %s", c.in, got, c.want)
		}
	}
}

func TestProbability(t *testing.T) {
	// As iptables-save prints them (checked on a kernel by the tests that
	// compare listings).
	for _, c := range []struct {
		n    int
		want string
	}{
		{2, "0.50000000000"}, {3, "0.33333333349"}, {4, "0.25000000000"}, {5, "0.20000000019"},
		{7, "0.14285714272"}, {10, "0.10000000009"}, {1000, "0.00100000016"},
	} {
		if got := probability(c.n); got != c.want {
			t.Errorf("probability(%d) = %s, want %s", c.n, got, c.want)
		}
	}
}

func TestAddrString(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"10.0.0.1", "10.0.0.1"},
		{"fd00::1", "fd00::1"},
		{"::1", "::1"},
		{"::", "::"},
		{"::102:304", "::1.2.3.4"},
		{"::1:0", "::0.1.0.0"},
		{"::ffff:1.2.3.4", "::ffff:1.2.3.4"},
		{"2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"},
	} {
		if got := addrString(netip.MustParseAddr(c.in)); got != c.want {
			t.Errorf("addrString(%s) = %s, want %s", c.in, got, c.want)
		}
	}
}

func TestCanonical(t *testing.T) {
	save := `# Generated by iptables-save v1.8.9 on Sun Nov 22 12:24:48 2026
*nat
:PREROUTING ACCEPT [10:600]
:OUTPUT ACCEPT [0:0]
:FOREIGN - [0:0]
:SVCP-SERVICES - [3:180]
:SVCP-MARK-MASQ - [0:0]
[5:300] -A PREROUTING -m comment --comment svcproxy -j SVCP-SERVICES
[0:0] -A PREROUTING -j FOREIGN
-A OUTPUT -m comment --comment "-j SVCP-SERVICES" -j ACCEPT
-A OUTPUT -m comment --comment -j -j ACCEPT
-A FOREIGN -j SVCP-SERVICES
-A SVCP-SERVICES -d 10.96.0.10/32 -j SVCP-MARK-MASQ
-A SVCP-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
COMMIT
# Completed on Sun Nov 22 12:24:48 2026
*filter
:INPUT ACCEPT [0:0]
-A INPUT -j ACCEPT
COMMIT
*mangle
:SVCP-X - [0:0]
COMMIT
`
	want := `*mangle
:SVCP-X - [0:0]
COMMIT
*nat
:SVCP-MARK-MASQ - [0:0]
:SVCP-SERVICES - [0:0]
-A PREROUTING -m comment --comment svcproxy -j SVCP-SERVICES
-A SVCP-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A SVCP-SERVICES -d 10.96.0.10/32 -j SVCP-MARK-MASQ
COMMIT
`
	if got := Canonical(save); got != want {
		t.Errorf("Canonical:\n%s\nwant:\n%s", got, want)
	}
	if got := Canonical(""); got != "" {
		t.Errorf("Canonical of nothing = %q", got)
	}
}

// TestChainNamesStable: names depend on the service key (and endpoint)
// only, and differ between keys and kinds.
func TestChainNamesStable(t *testing.T) {
	k1 := proxy.Key{Namespace: "a", Name: "b", Protocol: proxy.TCP, Port: "c"}.String()
	k2 := proxy.Key{Namespace: "a", Name: "b", Protocol: proxy.UDP, Port: "c"}.String()
	ep := netip.MustParseAddrPort("10.0.0.1:80")
	if hashName(prefixSVC, k1) != hashName(prefixSVC, k1) || endpointChain(k1, ep) != endpointChain(k1, ep) {
		t.Error("names are not stable")
	}
	names := map[string]bool{}
	for _, n := range []string{hashName(prefixSVC, k1), hashName(prefixSVC, k2), hashName(prefixSVL, k1),
		endpointChain(k1, ep), endpointChain(k2, ep), endpointChain(k1, netip.MustParseAddrPort("10.0.0.1:81"))} {
		if names[n] || len(n) != 25 {
			t.Errorf("name %s repeated or not 25 long", n)
		}
		names[n] = true
	}
}

// TestGolden keeps the full rendering of the demo in
// testdata/demo.golden, to review layout changes (-update rewrites it).
func TestGolden(t *testing.T) {
	st := demoState(t)
	got := Render(st)
	const path = "testdata/demo.golden"
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("Render(demo) differs from %s (-update rewrites it):\n%s", path, lineDiff(string(want), got))
	}
	checkWellFormed(t, st)
}

// sortedLines sorts the lines of s, for comparing them as a multiset.
func sortedLines(s string) string {
	l := strings.Split(s, "\n")
	slices.Sort(l)
	return strings.Join(l, "\n")
}
