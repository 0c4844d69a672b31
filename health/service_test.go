package health

import (
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
)

var loopback = []netip.Addr{netip.MustParseAddr("127.0.0.1")}

type fakeChecker struct{ unhealthy atomic.Bool }

func (f *fakeChecker) Healthy() bool { return !f.unhealthy.Load() }

// freePorts returns n distinct ports that were free on 127.0.0.1.
func freePorts(t *testing.T, n int) []uint16 {
	t.Helper()
	var lns []net.Listener
	var ports []uint16
	for range n {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, uint16(ln.Addr().(*net.TCPAddr).Port))
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

func hcURL(port uint16) string { return fmt.Sprintf("http://127.0.0.1:%d/", port) }

// refused reports whether nothing listens on port any more.
func refused(port uint16) bool {
	c, err := net.DialTimeout("tcp4", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
	if err != nil {
		return true
	}
	c.Close()
	return false
}

func newTestServiceHealth(t *testing.T, proxy Checker) *ServiceHealth {
	s := NewServiceHealth(v1.IPv4Protocol, loopback, proxy)
	t.Cleanup(func() { s.Close() })
	return s
}

func TestServiceHealthResponse(t *testing.T) {
	key := ServiceKey{"ns-1", "web"}
	body := func(n int, healthy bool) string {
		return fmt.Sprintf("{\n\t\"service\": {\n\t\t\"namespace\": \"ns-1\",\n\t\t\"name\": \"web\"\n\t},\n\t\"localEndpoints\": %d,\n\t\"serviceProxyHealthy\": %v\n}", n, healthy)
	}
	port := freePorts(t, 1)[0]
	proxy := &fakeChecker{}
	s := newTestServiceHealth(t, proxy)
	if err := s.Sync(map[ServiceKey]uint16{key: port}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		endpoints map[ServiceKey]int
		unhealthy bool
		code      int
		weight    string
		body      string
	}{
		{"new service: no endpoints yet", nil, false, 503, "0", body(0, true)},
		{"local endpoints", map[ServiceKey]int{key: 3}, false, 200, "3", body(3, true)},
		{"local endpoints, proxy unhealthy", map[ServiceKey]int{key: 3}, true, 503, "3", body(3, false)},
		{"no local endpoints, proxy unhealthy", map[ServiceKey]int{key: 0}, true, 503, "0", body(0, false)},
		{"one local endpoint", map[ServiceKey]int{key: 1}, false, 200, "1", body(1, true)},
		{"service missing from the counts: 0", map[ServiceKey]int{{"ns-1", "other"}: 4}, false, 503, "0", body(0, true)},
	} {
		proxy.unhealthy.Store(tc.unhealthy)
		s.SyncEndpoints(tc.endpoints)
		for _, path := range []string{"", "healthz", "anything"} {
			r := get(t, hcURL(port)+path)
			if r.code != tc.code || r.body != tc.body {
				t.Errorf("%s: GET /%s = %d %q\nwant %d %q", tc.name, path, r.code, r.body, tc.code, tc.body)
			}
			checkJSONHeaders(t, tc.name, r.hdr)
			if got := r.hdr.Values("X-Load-Balancing-Endpoint-Weight"); len(got) != 1 || got[0] != tc.weight {
				t.Errorf("%s: X-Load-Balancing-Endpoint-Weight %q, want %s", tc.name, got, tc.weight)
			}
		}
	}
}

func TestServiceHealthNilChecker(t *testing.T) {
	port := freePorts(t, 1)[0]
	s := newTestServiceHealth(t, nil)
	key := ServiceKey{"a", "b"}
	if err := s.Sync(map[ServiceKey]uint16{key: port}); err != nil {
		t.Fatal(err)
	}
	s.SyncEndpoints(map[ServiceKey]int{key: 2})
	if r := get(t, hcURL(port)); r.code != 200 || !strings.Contains(r.body, `"serviceProxyHealthy": true`) {
		t.Errorf("GET = %d %s", r.code, r.body)
	}
}

func TestServiceHealthSync(t *testing.T) {
	p := freePorts(t, 4)
	a, b, c := ServiceKey{"ns", "a"}, ServiceKey{"ns", "b"}, ServiceKey{"ns", "c"}
	s := newTestServiceHealth(t, nil)

	steps := []struct {
		name      string
		services  map[ServiceKey]uint16
		endpoints map[ServiceKey]int // applied after Sync when not nil
		serving   map[ServiceKey]uint16
		weights   map[ServiceKey]string
		closed    []uint16
	}{{
		name:      "add a, b; port 0 means none",
		services:  map[ServiceKey]uint16{a: p[0], b: p[1], c: 0},
		endpoints: map[ServiceKey]int{a: 1, b: 2},
		serving:   map[ServiceKey]uint16{a: p[0], b: p[1]},
		weights:   map[ServiceKey]string{a: "1", b: "2"},
		closed:    []uint16{p[2], p[3]},
	}, {
		name:     "remove a: its port is freed, b keeps its count",
		services: map[ServiceKey]uint16{b: p[1]},
		serving:  map[ServiceKey]uint16{b: p[1]},
		weights:  map[ServiceKey]string{b: "2"},
		closed:   []uint16{p[0]},
	}, {
		name:     "b moves port: old port freed, count restarts at 0",
		services: map[ServiceKey]uint16{b: p[2]},
		serving:  map[ServiceKey]uint16{b: p[2]},
		weights:  map[ServiceKey]string{b: "0"},
		closed:   []uint16{p[0], p[1]},
	}, {
		name:      "b and c swap ports in one Sync",
		services:  map[ServiceKey]uint16{b: p[1], c: p[2]},
		endpoints: map[ServiceKey]int{b: 5, c: 6},
		serving:   map[ServiceKey]uint16{b: p[1], c: p[2]},
		weights:   map[ServiceKey]string{b: "5", c: "6"},
		closed:    []uint16{p[0], p[3]},
	}, {
		name:     "remove all",
		services: nil,
		serving:  map[ServiceKey]uint16{},
		closed:   p,
	}}
	for _, st := range steps {
		if err := s.Sync(st.services); err != nil {
			t.Fatalf("%s: Sync: %v", st.name, err)
		}
		if st.endpoints != nil {
			s.SyncEndpoints(st.endpoints)
		}
		if got := s.Ports(); fmt.Sprint(got) != fmt.Sprint(st.serving) {
			t.Errorf("%s: Ports() = %v, want %v", st.name, got, st.serving)
		}
		for key, port := range st.serving {
			r := get(t, hcURL(port))
			if !strings.Contains(r.body, fmt.Sprintf("%q: %q", "name", key.Name)) || r.hdr.Get("X-Load-Balancing-Endpoint-Weight") != st.weights[key] {
				t.Errorf("%s: port %d: weight %q body %s; want %s with weight %s", st.name, port,
					r.hdr.Get("X-Load-Balancing-Endpoint-Weight"), r.body, key, st.weights[key])
			}
		}
		for _, port := range st.closed {
			if !refused(port) {
				t.Errorf("%s: port %d still accepts connections", st.name, port)
			}
		}
	}
	// Freed ports can be bound again at once.
	for _, port := range p {
		ln, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Errorf("port %d not freed: %v", port, err)
			continue
		}
		ln.Close()
	}
}

func TestServiceHealthBindFailure(t *testing.T) {
	p := freePorts(t, 2)
	busy, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", p[0]))
	if err != nil {
		t.Fatal(err)
	}
	a, b := ServiceKey{"ns", "a"}, ServiceKey{"ns", "b"}
	want := map[ServiceKey]uint16{a: p[0], b: p[1]}
	s := newTestServiceHealth(t, nil)

	err = s.Sync(want)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("healthcheck ns/a on port %d", p[0])) || strings.Contains(err.Error(), "ns/b") {
		t.Fatalf("Sync with a busy port: error %v, want one naming ns/a only", err)
	}
	if got := s.Ports(); fmt.Sprint(got) != fmt.Sprint(map[ServiceKey]uint16{b: p[1]}) {
		t.Errorf("Ports() = %v, want only b", got)
	}
	s.SyncEndpoints(map[ServiceKey]int{a: 1, b: 1})
	if r := get(t, hcURL(p[1])); r.code != 200 {
		t.Errorf("b: %d %s", r.code, r.body)
	}

	busy.Close()
	if err := s.Sync(want); err != nil {
		t.Fatalf("retry after the port was freed: %v", err)
	}
	s.SyncEndpoints(map[ServiceKey]int{a: 1, b: 1})
	for _, port := range p {
		if r := get(t, hcURL(port)); r.code != 200 {
			t.Errorf("port %d after retry: %d %s", port, r.code, r.body)
		}
	}
}

func TestServiceHealthCloseLeavesNothing(t *testing.T) {
	before := runtime.NumGoroutine()
	p := freePorts(t, 3)
	s := NewServiceHealth(v1.IPv4Protocol, loopback, nil)
	services := map[ServiceKey]uint16{}
	for i, port := range p {
		services[ServiceKey{"ns", fmt.Sprint(i)}] = port
	}
	if err := s.Sync(services); err != nil {
		t.Fatal(err)
	}
	// An idle keep-alive connection held by a client must not keep a
	// server goroutine alive after Close.
	idle, err := net.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", p[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	fmt.Fprintf(idle, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	buf := make([]byte, 1024)
	if _, err := idle.Read(buf); err != nil {
		t.Fatal(err)
	}
	for _, port := range p {
		get(t, hcURL(port))
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, port := range p {
		if !refused(port) {
			t.Errorf("port %d still accepts connections after Close", port)
		}
	}
	if len(s.Ports()) != 0 {
		t.Errorf("Ports() after Close = %v", s.Ports())
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("goroutines: %d before, %d after Close\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
