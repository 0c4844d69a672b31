package dptest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/svcproxy/svcproxy/manifest"
	"github.com/svcproxy/svcproxy/proxy"
)

// Check is one expectation about real traffic.
type Check struct {
	From  string // "client", "node", or a pod name
	Proto string // "tcp" (HTTP), "udp", "sctp"
	To    string // destination address:port
	// Pods that must answer: each at least once, no other.
	Pods []string
	// Source the pods must see: "client" (the sender's address is kept),
	// "masq" (the node's address towards pods), "self" (the sending pod's
	// own address), or "" (not checked).
	Source  string
	Sticky  bool // every answer from one pod
	Refused bool // refused at once (ICMP unreachable / reset)
	Dropped bool // no answer at all
}

func (c Check) String() string {
	want := strings.Join(c.Pods, ",")
	switch {
	case c.Refused:
		want = "refused"
	case c.Dropped:
		want = "dropped"
	}
	return fmt.Sprintf("%s %s to %s: %s", c.From, c.Proto, c.To, want)
}

// Scenario is a set of manifests synced through the backend, then checked
// with traffic. Scenarios run in order against one backend, so each sync
// after the first is an update of the previous scenario's rules.
type Scenario struct {
	Name      string
	Manifests string
	Config    func(*proxy.Config)
	Checks    []Check
}

// Config is the model configuration of the test node.
func Config() proxy.Config {
	cidrs, _ := proxy.ParseCIDRs("10.244.0.0/16,fd00:244::/56")
	return proxy.Config{NodeName: "node-a", ClusterCIDRs: cidrs, NodeIPs: []netip.Addr{NodeIP, NodeIP6}}
}

// Build decodes a scenario's manifests and builds its State.
func (s Scenario) Build(t testing.TB) *proxy.State {
	t.Helper()
	objs, probs := manifest.Decode(s.Name+".yaml", []byte(s.Manifests))
	if len(probs) > 0 {
		t.Fatalf("manifests: %v", probs)
	}
	cfg := Config()
	if s.Config != nil {
		s.Config(&cfg)
	}
	st := proxy.Build(proxy.Inputs{Services: objs.Services, EndpointSlices: objs.EndpointSlices, Nodes: objs.Nodes}, cfg)
	if len(st.Problems) > 0 {
		t.Fatalf("model problems: %v", st.Problems)
	}
	return st
}

// Run syncs each scenario through the backend and checks its traffic.
// afterSync, if not nil, runs after every sync (backends compare the
// kernel's listing with their Render there).
func Run(t *testing.T, newBackend func(*Env) proxy.Backend, afterSync func(*testing.T, *proxy.State)) {
	env := NewEnv(t)
	b := newBackend(env)
	sctp := SCTPAvailable()
	if !sctp {
		t.Log("SCTP sockets are not available in this kernel: SCTP checks are skipped")
	}
	for _, sc := range Scenarios {
		t.Run(sc.Name, func(t *testing.T) {
			st := sc.Build(t)
			if err := b.Sync(context.Background(), st); err != nil {
				t.Fatalf("Sync: %v", err)
			}
			if afterSync != nil {
				afterSync(t, st)
			}
			for _, c := range sc.Checks {
				if c.Proto == "sctp" && !sctp {
					continue
				}
				t.Run(c.String(), func(t *testing.T) { env.check(t, c) })
			}
		})
	}
	if err := b.Cleanup(context.Background()); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	// After cleanup nothing is proxied any more.
	if _, err := env.Request(env.Client, "tcp", netip.MustParseAddrPort("10.96.0.10:80"), 300*time.Millisecond); err == nil {
		t.Error("a ClusterIP still answers after Cleanup")
	}
}

func (e *Env) check(t *testing.T, c Check) {
	from := e.Namespace(c.From)
	to := netip.MustParseAddrPort(c.To)
	if c.Refused || c.Dropped {
		_, err := e.Request(from, c.Proto, to, 700*time.Millisecond)
		want := ErrRefused
		if c.Dropped {
			want = ErrTimeout
		}
		if !errors.Is(err, want) {
			t.Fatalf("got %v, want %v", err, want)
		}
		return
	}
	n := 5
	if len(c.Pods) > 1 || c.Sticky {
		n = 40 // all of 3 pods answer 40 random picks but with probability 3·(2/3)^40 ≈ 3e-7
	}
	answers, err := e.Requests(from, c.Proto, to, n, 3*time.Second)
	if err != nil {
		t.Fatalf("after %d answers: %v", len(answers), err)
	}
	seen := map[string]bool{}
	for _, a := range answers {
		seen[a.Pod] = true
		if want := e.source(c, to); want != "" && a.Source != want {
			t.Fatalf("%s saw source %s, want %s (%s)", a.Pod, a.Source, want, c.Source)
		}
	}
	got := make([]string, 0, len(seen))
	for p := range seen {
		got = append(got, p)
	}
	slices.Sort(got)
	if c.Sticky {
		if len(got) != 1 {
			t.Fatalf("affinity broken: answers from %v", got)
		}
		if !slices.Contains(c.Pods, got[0]) {
			t.Fatalf("answer from %s, want one of %v", got[0], c.Pods)
		}
		return
	}
	want := slices.Sorted(slices.Values(c.Pods))
	if !slices.Equal(got, want) {
		t.Fatalf("answers from %v, want %v", got, want)
	}
}

// source resolves Check.Source to an address for the destination's family.
func (e *Env) source(c Check, to netip.AddrPort) string {
	v6 := to.Addr().Is6()
	pick := func(a4, a6 netip.Addr) string {
		if v6 {
			return a6.String()
		}
		return a4.String()
	}
	switch c.Source {
	case "client":
		return pick(ClientIP, ClientIP6)
	case "masq":
		return pick(MasqIP, MasqIP6)
	case "self":
		for _, p := range e.Pods {
			if p.Name == c.From {
				return pick(p.IP, p.IP6)
			}
		}
	}
	return ""
}
