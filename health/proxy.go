package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"
)

// ToBeDeletedTaint is the taint the Cluster Autoscaler puts on a node it is
// about to delete. Any taint with this key, whatever its effect, makes the
// node ineligible.
const ToBeDeletedTaint = "ToBeDeletedByClusterAutoscaler"

// Clock tells the time. Tests inject a fake one.
type Clock interface{ Now() time.Time }

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// Status is the body of /healthz and /livez, field for field kube-proxy's
// ProxyHealth. Times marshal as RFC 3339 with nanoseconds in the clock's
// location.
type Status struct {
	// LastUpdated is the latest Updated time of any family; in a healthy
	// response it is replaced by CurrentTime, as kube-proxy does.
	LastUpdated time.Time `json:"lastUpdated"`
	CurrentTime time.Time `json:"currentTime"`
	// NodeEligible is set in /healthz responses only.
	NodeEligible *bool `json:"nodeEligible,omitempty"`
	// Healthy is true when every family is; it ignores the node.
	Healthy bool `json:"healthy"`
	// Families is the per-family state, keyed "IPv4" / "IPv6".
	Families map[v1.IPFamily]FamilyStatus `json:"status,omitempty"`
}

// FamilyStatus is the health of one IP family's dataplane.
type FamilyStatus struct {
	LastUpdated time.Time `json:"lastUpdated"`
	Healthy     bool      `json:"healthy"`
}

// ProxyHealth tracks whether queued changes reach the dataplane in time, and
// whether the node is eligible for load-balancer traffic. It is safe for
// concurrent use.
//
// Protocol, per IP family, as kube-proxy's sync loop follows it:
// Updated once when the sync loop starts, QueuedUpdate whenever a Service,
// EndpointSlice or Node change is waiting to be programmed (not on the
// periodic resync), and Updated after every sync that programmed everything.
// A failed sync calls nothing: the queued change stays pending, and the
// family turns unhealthy once it has waited the timeout. There is no other
// failure accounting.
type ProxyHealth struct {
	clock   Clock
	timeout time.Duration

	mu           sync.Mutex
	lastUpdated  map[v1.IPFamily]time.Time
	oldestQueued map[v1.IPFamily]time.Time
	nodeEligible bool
}

// NewProxyHealth returns a tracker whose families turn unhealthy when a
// queued update waits timeout or longer (kube-proxy: 2 × --sync-period). A
// nil clock is the real one. The node is ineligible until SetNode reports an
// eligible one: kube-proxy v1.36 only serves once it knows its Node.
func NewProxyHealth(timeout time.Duration, clock Clock) *ProxyHealth {
	if clock == nil {
		clock = realClock{}
	}
	return &ProxyHealth{
		clock:        clock,
		timeout:      timeout,
		lastUpdated:  map[v1.IPFamily]time.Time{},
		oldestQueued: map[v1.IPFamily]time.Time{},
	}
}

// QueuedUpdate records that a change for family awaits programming. Only
// the oldest pending change counts: repeated calls do not move it.
func (p *ProxyHealth) QueuedUpdate(family v1.IPFamily) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, pending := p.oldestQueued[family]; !pending {
		p.oldestQueued[family] = p.clock.Now()
	}
}

// Updated records that family's dataplane now reflects every queued change.
func (p *ProxyHealth) Updated(family v1.IPFamily) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.oldestQueued, family)
	p.lastUpdated[family] = p.clock.Now()
}

// SetNode records this node's latest state (call it on every add and
// update). The node is eligible unless it is nil (unknown), has a deletion
// timestamp, or carries the ToBeDeletedTaint. kube-proxy v1.36 keeps the
// last Node object when the Node is deleted; pass nil on deletion only to
// deviate from that on purpose.
func (p *ProxyHealth) SetNode(node *v1.Node) {
	eligible := node != nil && node.DeletionTimestamp.IsZero()
	if eligible {
		for _, t := range node.Spec.Taints {
			if t.Key == ToBeDeletedTaint {
				eligible = false
				break
			}
		}
	}
	p.mu.Lock()
	p.nodeEligible = eligible
	p.mu.Unlock()
}

// NodeEligible reports the eligibility from the last SetNode.
func (p *ProxyHealth) NodeEligible() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.nodeEligible
}

// Healthy is the proxy's health without the node: what /livez reports and
// what service health checks call serviceProxyHealthy.
func (p *ProxyHealth) Healthy() bool { return p.Status().Healthy }

// Status computes the proxy's health now. A family is unhealthy while its
// oldest pending change has waited the timeout or longer. Families appear
// once Updated or QueuedUpdate was called for them (kube-proxy lists only
// Updated ones; its sync loop's initial Updated makes the two agree).
func (p *ProxyHealth) Status() Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.clock.Now()
	st := Status{CurrentTime: now, Healthy: true}
	add := func(f v1.IPFamily) {
		if st.Families == nil {
			st.Families = map[v1.IPFamily]FamilyStatus{}
		}
		if _, done := st.Families[f]; done {
			return
		}
		fs := FamilyStatus{LastUpdated: p.lastUpdated[f], Healthy: true}
		if q, pending := p.oldestQueued[f]; pending && now.Sub(q) >= p.timeout {
			fs.Healthy = false
			st.Healthy = false
		}
		if fs.LastUpdated.After(st.LastUpdated) {
			st.LastUpdated = fs.LastUpdated
		}
		st.Families[f] = fs
	}
	for f := range p.lastUpdated {
		add(f)
	}
	for f := range p.oldestQueued {
		add(f)
	}
	return st
}

// Handler serves /healthz and /livez (exact paths, any method; anything
// else is 404). Both answer 200 when healthy and 503 otherwise, with
// Content-Type application/json, X-Content-Type-Options nosniff and the
// compact JSON of Status. /healthz also requires an eligible node and
// carries nodeEligible.
func (p *ProxyHealth) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { p.respond(w, true) })
	mux.HandleFunc("/livez", func(w http.ResponseWriter, _ *http.Request) { p.respond(w, false) })
	return mux
}

func (p *ProxyHealth) respond(w http.ResponseWriter, withNode bool) {
	st := p.Status()
	healthy := st.Healthy
	if withNode {
		eligible := p.NodeEligible()
		st.NodeEligible = &eligible
		healthy = healthy && eligible
	}
	code := http.StatusServiceUnavailable
	if healthy {
		code = http.StatusOK
		// kube-proxy reports lastUpdated as "now" while healthy, which is
		// what it meant before updates were tracked per change.
		st.LastUpdated = st.CurrentTime
	}
	body, _ := json.Marshal(st)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

// Serve serves Handler on ln until ctx ends, then closes the server and its
// connections and returns nil; it returns the error if serving fails.
func (p *ProxyHealth) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: p.Handler(), ReadHeaderTimeout: 10 * time.Second}
	stop := context.AfterFunc(ctx, func() { _ = srv.Close() })
	defer stop()
	klog.V(3).InfoS("Serving proxy health", "address", ln.Addr())
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("proxy healthz closed with error: %w", err)
	}
	return nil
}

// ListenAndServe listens on addr (host:port, e.g. "0.0.0.0:10256") and
// serves until ctx ends. kube-proxy retries a failed listen every 5s.
func (p *ProxyHealth) ListenAndServe(ctx context.Context, addr string) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("failed to start proxy healthz on %s: %w", addr, err)
	}
	return p.Serve(ctx, ln)
}
