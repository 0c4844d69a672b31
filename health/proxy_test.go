package health

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Step(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// client never keeps connections, so closed servers leave nothing behind.
var client = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}

type response struct {
	code int
	hdr  http.Header
	body string
}

func get(t *testing.T, url string) response {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return response{resp.StatusCode, resp.Header, string(b)}
}

func checkJSONHeaders(t *testing.T, what string, h http.Header) {
	t.Helper()
	if got := h.Values("Content-Type"); len(got) != 1 || got[0] != "application/json" {
		t.Errorf("%s: Content-Type %q, want application/json", what, got)
	}
	if got := h.Values("X-Content-Type-Options"); len(got) != 1 || got[0] != "nosniff" {
		t.Errorf("%s: X-Content-Type-Options %q, want nosniff", what, got)
	}
}

// serveProxy serves p on a free 127.0.0.1 port until the test ends.
func serveProxy(t *testing.T, p *ProxyHealth) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

func node(mod func(*v1.Node)) *v1.Node {
	n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}
	if mod != nil {
		mod(n)
	}
	return n
}

func TestProxyHealth(t *testing.T) {
	const (
		zero = "0001-01-01T00:00:00Z"
		t0   = "2026-01-02T03:04:05.000000006Z"
		t25  = "2026-01-02T03:04:30.000000006Z"
		t34  = "2026-01-02T03:04:39.000000006Z"
		t35  = "2026-01-02T03:04:40.000000006Z"
	)
	clk := &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)}
	p := NewProxyHealth(10*time.Second, clk)
	base := serveProxy(t, p)

	steps := []struct {
		name       string
		do         func()
		healthz    int
		healthzRaw string
		livez      int
		livezRaw   string
	}{{
		name: "fresh: node not known yet",
		do:   func() {},
		// kube-proxy v1.36 treats an unknown Node as ineligible.
		healthz:    503,
		healthzRaw: `{"lastUpdated":"` + zero + `","currentTime":"` + t0 + `","nodeEligible":false,"healthy":true}`,
		livez:      200,
		livezRaw:   `{"lastUpdated":"` + t0 + `","currentTime":"` + t0 + `","healthy":true}`,
	}, {
		name:       "node known",
		do:         func() { p.SetNode(node(nil)) },
		healthz:    200,
		healthzRaw: `{"lastUpdated":"` + t0 + `","currentTime":"` + t0 + `","nodeEligible":true,"healthy":true}`,
		livez:      200,
		livezRaw:   `{"lastUpdated":"` + t0 + `","currentTime":"` + t0 + `","healthy":true}`,
	}, {
		name:       "sync loops start (Updated per family)",
		do:         func() { p.Updated(v1.IPv4Protocol); p.Updated(v1.IPv6Protocol) },
		healthz:    200,
		healthzRaw: `{"lastUpdated":"` + t0 + `","currentTime":"` + t0 + `","nodeEligible":true,"healthy":true,"status":{"IPv4":{"lastUpdated":"` + t0 + `","healthy":true},"IPv6":{"lastUpdated":"` + t0 + `","healthy":true}}}`,
		livez:      200,
		livezRaw:   `{"lastUpdated":"` + t0 + `","currentTime":"` + t0 + `","healthy":true,"status":{"IPv4":{"lastUpdated":"` + t0 + `","healthy":true},"IPv6":{"lastUpdated":"` + t0 + `","healthy":true}}}`,
	}, {
		name:       "idle for longer than the timeout: healthy, lastUpdated reads now",
		do:         func() { clk.Step(25 * time.Second) },
		healthz:    200,
		healthzRaw: `{"lastUpdated":"` + t25 + `","currentTime":"` + t25 + `","nodeEligible":true,"healthy":true,"status":{"IPv4":{"lastUpdated":"` + t0 + `","healthy":true},"IPv6":{"lastUpdated":"` + t0 + `","healthy":true}}}`,
		livez:      200,
		livezRaw:   `{"lastUpdated":"` + t25 + `","currentTime":"` + t25 + `","healthy":true,"status":{"IPv4":{"lastUpdated":"` + t0 + `","healthy":true},"IPv6":{"lastUpdated":"` + t0 + `","healthy":true}}}`,
	}, {
		name:       "IPv4 change pending just under the timeout",
		do:         func() { p.QueuedUpdate(v1.IPv4Protocol); clk.Step(9 * time.Second) },
		healthz:    200,
		healthzRaw: `{"lastUpdated":"` + t34 + `","currentTime":"` + t34 + `","nodeEligible":true,"healthy":true,"status":{"IPv4":{"lastUpdated":"` + t0 + `","healthy":true},"IPv6":{"lastUpdated":"` + t0 + `","healthy":true}}}`,
		livez:      200,
		livezRaw:   `{"lastUpdated":"` + t34 + `","currentTime":"` + t34 + `","healthy":true,"status":{"IPv4":{"lastUpdated":"` + t0 + `","healthy":true},"IPv6":{"lastUpdated":"` + t0 + `","healthy":true}}}`,
	}, {
		name: "IPv4 change pending for the timeout (queueing again does not reset it): 503 on both paths",
		do: func() {
			p.QueuedUpdate(v1.IPv4Protocol)
			p.QueuedUpdate(v1.IPv6Protocol)
			clk.Step(time.Second)
		},
		healthz:    503,
		healthzRaw: `{"lastUpdated":"` + t0 + `","currentTime":"` + t35 + `","nodeEligible":true,"healthy":false,"status":{"IPv4":{"lastUpdated":"` + t0 + `","healthy":false},"IPv6":{"lastUpdated":"` + t0 + `","healthy":true}}}`,
		livez:      503,
		livezRaw:   `{"lastUpdated":"` + t0 + `","currentTime":"` + t35 + `","healthy":false,"status":{"IPv4":{"lastUpdated":"` + t0 + `","healthy":false},"IPv6":{"lastUpdated":"` + t0 + `","healthy":true}}}`,
	}, {
		name:       "IPv6 programmed: IPv4 still late",
		do:         func() { p.Updated(v1.IPv6Protocol) },
		healthz:    503,
		healthzRaw: `{"lastUpdated":"` + t35 + `","currentTime":"` + t35 + `","nodeEligible":true,"healthy":false,"status":{"IPv4":{"lastUpdated":"` + t0 + `","healthy":false},"IPv6":{"lastUpdated":"` + t35 + `","healthy":true}}}`,
		livez:      503,
		livezRaw:   `{"lastUpdated":"` + t35 + `","currentTime":"` + t35 + `","healthy":false,"status":{"IPv4":{"lastUpdated":"` + t0 + `","healthy":false},"IPv6":{"lastUpdated":"` + t35 + `","healthy":true}}}`,
	}, {
		name:       "IPv4 programmed: healthy again",
		do:         func() { p.Updated(v1.IPv4Protocol) },
		healthz:    200,
		healthzRaw: `{"lastUpdated":"` + t35 + `","currentTime":"` + t35 + `","nodeEligible":true,"healthy":true,"status":{"IPv4":{"lastUpdated":"` + t35 + `","healthy":true},"IPv6":{"lastUpdated":"` + t35 + `","healthy":true}}}`,
		livez:      200,
		livezRaw:   `{"lastUpdated":"` + t35 + `","currentTime":"` + t35 + `","healthy":true,"status":{"IPv4":{"lastUpdated":"` + t35 + `","healthy":true},"IPv6":{"lastUpdated":"` + t35 + `","healthy":true}}}`,
	}, {
		name: "node tainted by the autoscaler: /healthz 503, /livez 200",
		do: func() {
			p.SetNode(node(func(n *v1.Node) {
				n.Spec.Taints = []v1.Taint{{Key: ToBeDeletedTaint, Effect: v1.TaintEffectPreferNoSchedule}}
			}))
		},
		healthz:    503,
		healthzRaw: `{"lastUpdated":"` + t35 + `","currentTime":"` + t35 + `","nodeEligible":false,"healthy":true,"status":{"IPv4":{"lastUpdated":"` + t35 + `","healthy":true},"IPv6":{"lastUpdated":"` + t35 + `","healthy":true}}}`,
		livez:      200,
		livezRaw:   `{"lastUpdated":"` + t35 + `","currentTime":"` + t35 + `","healthy":true,"status":{"IPv4":{"lastUpdated":"` + t35 + `","healthy":true},"IPv6":{"lastUpdated":"` + t35 + `","healthy":true}}}`,
	}, {
		name: "other taints do not matter",
		do: func() {
			p.SetNode(node(func(n *v1.Node) {
				n.Spec.Taints = []v1.Taint{{Key: "other", Effect: v1.TaintEffectNoSchedule}}
			}))
		},
		healthz:    200,
		healthzRaw: `{"lastUpdated":"` + t35 + `","currentTime":"` + t35 + `","nodeEligible":true,"healthy":true,"status":{"IPv4":{"lastUpdated":"` + t35 + `","healthy":true},"IPv6":{"lastUpdated":"` + t35 + `","healthy":true}}}`,
		livez:      200,
		livezRaw:   `{"lastUpdated":"` + t35 + `","currentTime":"` + t35 + `","healthy":true,"status":{"IPv4":{"lastUpdated":"` + t35 + `","healthy":true},"IPv6":{"lastUpdated":"` + t35 + `","healthy":true}}}`,
	}, {
		name: "node being deleted",
		do: func() {
			p.SetNode(node(func(n *v1.Node) { n.DeletionTimestamp = &metav1.Time{Time: clk.Now()} }))
		},
		healthz:    503,
		healthzRaw: `{"lastUpdated":"` + t35 + `","currentTime":"` + t35 + `","nodeEligible":false,"healthy":true,"status":{"IPv4":{"lastUpdated":"` + t35 + `","healthy":true},"IPv6":{"lastUpdated":"` + t35 + `","healthy":true}}}`,
		livez:      200,
		livezRaw:   `{"lastUpdated":"` + t35 + `","currentTime":"` + t35 + `","healthy":true,"status":{"IPv4":{"lastUpdated":"` + t35 + `","healthy":true},"IPv6":{"lastUpdated":"` + t35 + `","healthy":true}}}`,
	}, {
		name:       "node unknown (nil)",
		do:         func() { p.SetNode(nil) },
		healthz:    503,
		healthzRaw: `{"lastUpdated":"` + t35 + `","currentTime":"` + t35 + `","nodeEligible":false,"healthy":true,"status":{"IPv4":{"lastUpdated":"` + t35 + `","healthy":true},"IPv6":{"lastUpdated":"` + t35 + `","healthy":true}}}`,
		livez:      200,
		livezRaw:   `{"lastUpdated":"` + t35 + `","currentTime":"` + t35 + `","healthy":true,"status":{"IPv4":{"lastUpdated":"` + t35 + `","healthy":true},"IPv6":{"lastUpdated":"` + t35 + `","healthy":true}}}`,
	}}
	for _, s := range steps {
		s.do()
		for _, c := range []struct {
			path string
			code int
			raw  string
		}{{"/healthz", s.healthz, s.healthzRaw}, {"/livez", s.livez, s.livezRaw}} {
			r := get(t, base+c.path)
			if r.code != c.code || r.body != c.raw {
				t.Errorf("%s: GET %s = %d %s\nwant %d %s", s.name, c.path, r.code, r.body, c.code, c.raw)
			}
			checkJSONHeaders(t, s.name+" "+c.path, r.hdr)
		}
	}
	if r := get(t, base+"/healthz/x"); r.code != http.StatusNotFound {
		t.Errorf("GET /healthz/x = %d, want 404", r.code)
	}
}

// A family whose first sync never succeeds turns unhealthy even without
// the sync loop's initial Updated.
func TestProxyHealthQueuedNeverUpdated(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	p := NewProxyHealth(10*time.Second, clk)
	p.SetNode(node(nil))
	p.QueuedUpdate(v1.IPv6Protocol)
	clk.Step(10 * time.Second)
	r := get(t, serveProxy(t, p)+"/livez")
	want := `{"lastUpdated":"0001-01-01T00:00:00Z","currentTime":"2026-01-02T03:04:15Z","healthy":false,"status":{"IPv6":{"lastUpdated":"0001-01-01T00:00:00Z","healthy":false}}}`
	if r.code != 503 || r.body != want {
		t.Errorf("GET /livez = %d %s\nwant 503 %s", r.code, r.body, want)
	}
	if p.Healthy() {
		t.Error("Healthy() = true")
	}
}

func TestProxyHealthListenAndServe(t *testing.T) {
	busy, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	p := NewProxyHealth(time.Minute, nil)
	err = p.ListenAndServe(context.Background(), busy.Addr().String())
	if err == nil || !strings.Contains(err.Error(), "failed to start proxy healthz on "+busy.Addr().String()) {
		t.Fatalf("ListenAndServe on a busy port: %v", err)
	}

	addr := busy.Addr().String()
	busy.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.ListenAndServe(ctx, addr) }()
	var r response
	for i := 0; ; i++ {
		resp, err := client.Get("http://" + addr + "/livez")
		if err == nil {
			resp.Body.Close()
			r.code = resp.StatusCode
			break
		}
		if i == 100 {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if r.code != 200 {
		t.Errorf("/livez = %d, want 200", r.code)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("ListenAndServe after cancel: %v", err)
	}
	if _, err := client.Get("http://" + addr + "/livez"); err == nil {
		t.Error("still serving after cancel")
	}
}
