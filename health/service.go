package health

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"
)

// ServiceKey names a Service.
type ServiceKey struct{ Namespace, Name string }

func (k ServiceKey) String() string { return k.Namespace + "/" + k.Name }

// Checker reports the proxy's own health (ProxyHealth.Healthy).
type Checker interface{ Healthy() bool }

// ServiceHealth runs the healthCheckNodePort servers of one IP family, as
// kube-proxy runs one set per family. It is safe for concurrent use.
type ServiceHealth struct {
	network string
	addrs   []string // listen hosts
	proxy   Checker

	mu       sync.Mutex
	services map[ServiceKey]*serviceServer
}

// NewServiceHealth returns a manager with no servers. family selects the
// socket family as kube-proxy does: IPv4 listens with tcp4, IPv6 with tcp6,
// "" with tcp (both). listenIPs are the node addresses selected by
// --nodeport-addresses; empty means all addresses of the family. proxy
// feeds serviceProxyHealthy; nil counts as healthy.
func NewServiceHealth(family v1.IPFamily, listenIPs []netip.Addr, proxy Checker) *ServiceHealth {
	s := &ServiceHealth{network: "tcp", addrs: []string{"0.0.0.0"}, proxy: proxy, services: map[ServiceKey]*serviceServer{}}
	switch family {
	case v1.IPv4Protocol:
		s.network = "tcp4"
	case v1.IPv6Protocol:
		s.network, s.addrs = "tcp6", []string{"::"}
	}
	if len(listenIPs) > 0 {
		s.addrs = nil
		for _, ip := range listenIPs {
			s.addrs = append(s.addrs, ip.String())
		}
	}
	return s
}

// Sync makes services (Service → healthCheckNodePort; port 0 means none) the
// set being served. Servers of Services that left, or whose port changed,
// are closed first; servers of unchanged Services are kept, with their
// endpoint count; new ones start with 0 endpoints. A port that cannot be
// bound on every listen address is logged, left unbound and retried at the
// next Sync; the other Services are unaffected. The error joins the bind
// failures.
func (s *ServiceHealth) Sync(services map[ServiceKey]uint16) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for key, srv := range s.services {
		if port, ok := services[key]; !ok || port != srv.port {
			klog.V(2).InfoS("Closing healthcheck", "service", key, "port", srv.port)
			srv.close()
			delete(s.services, key)
		}
	}
	var errs []error
	for key, port := range services {
		if port == 0 || s.services[key] != nil {
			continue
		}
		srv, err := s.open(key, port)
		if err != nil {
			klog.ErrorS(err, "Failed to start healthcheck; retrying at the next sync", "service", key, "port", port)
			errs = append(errs, fmt.Errorf("healthcheck %s on port %d: %w", key, port, err))
			continue
		}
		klog.V(2).InfoS("Opened healthcheck", "service", key, "port", port)
		s.services[key] = srv
	}
	return errors.Join(errs...)
}

// SyncEndpoints sets each served Service's local endpoint count; Services
// missing from counts get 0, counts of Services not served are dropped.
// kube-proxy counts the distinct IPs of this node's ready endpoints (not
// terminating ones) across all the Service's ports.
func (s *ServiceHealth) SyncEndpoints(counts map[ServiceKey]int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for key, srv := range s.services {
		srv.endpoints.Store(int64(counts[key]))
	}
}

// Close stops every server and waits until they have stopped. The manager
// stays usable: a later Sync opens servers again.
func (s *ServiceHealth) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for key, srv := range s.services {
		srv.close()
		delete(s.services, key)
	}
	return nil
}

// Ports returns the Services currently served and their ports.
func (s *ServiceHealth) Ports() map[ServiceKey]uint16 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[ServiceKey]uint16, len(s.services))
	for key, srv := range s.services {
		out[key] = srv.port
	}
	return out
}

type serviceServer struct {
	key       ServiceKey
	port      uint16
	proxy     Checker
	endpoints atomic.Int64
	srv       *http.Server
	wg        sync.WaitGroup
}

// http1Only: a plain-text server is never reached over HTTP/2 (that needs
// TLS, or h2c, which is off), but net/http set HTTP/2 up for each server:
// ~1 KiB apiece, and there is one per LoadBalancer Service with
// externalTrafficPolicy Local (2,500 at 50k Services in the benchmarks).
var http1Only = func() *http.Protocols {
	var p http.Protocols
	p.SetHTTP1(true)
	return &p
}()

// open binds every listen address (all or nothing) and serves them.
func (s *ServiceHealth) open(key ServiceKey, port uint16) (*serviceServer, error) {
	var lns []net.Listener
	for _, host := range s.addrs {
		ln, err := net.Listen(s.network, net.JoinHostPort(host, strconv.Itoa(int(port))))
		if err != nil {
			for _, l := range lns {
				_ = l.Close()
			}
			return nil, err
		}
		lns = append(lns, ln)
	}
	ss := &serviceServer{key: key, port: port, proxy: s.proxy}
	ss.srv = &http.Server{Handler: ss, ReadHeaderTimeout: 10 * time.Second, Protocols: http1Only}
	for _, ln := range lns {
		ss.wg.Add(1)
		go func() {
			defer ss.wg.Done()
			if err := ss.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				klog.ErrorS(err, "Healthcheck closed", "service", key, "address", ln.Addr())
			}
		}()
	}
	return ss, nil
}

// close shuts the listeners and open connections and waits for the serving
// goroutines to return.
func (ss *serviceServer) close() {
	_ = ss.srv.Close()
	ss.wg.Wait()
}

// ServeHTTP answers any method and path: 200 when the Service has local
// endpoints and the proxy is healthy, else 503; headers Content-Type
// application/json, X-Content-Type-Options nosniff and
// X-Load-Balancing-Endpoint-Weight: <count>; the body is kube-proxy's
// tab-indented JSON, without a final newline.
func (ss *serviceServer) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	count := int(ss.endpoints.Load())
	proxyHealthy := ss.proxy == nil || ss.proxy.Healthy()
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Load-Balancing-Endpoint-Weight", strconv.Itoa(count))
	if count != 0 && proxyHealthy {
		w.WriteHeader(http.StatusOK)
	} else {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_, _ = w.Write(serviceBody(ss.key, count, proxyHealthy))
}

// serviceBody is the body kube-proxy builds from a dedented template; names
// are quoted as Go's %q does.
func serviceBody(key ServiceKey, count int, proxyHealthy bool) []byte {
	return fmt.Appendf(nil, "{\n\t\"service\": {\n\t\t\"namespace\": %q,\n\t\t\"name\": %q\n\t},\n\t\"localEndpoints\": %d,\n\t\"serviceProxyHealthy\": %v\n}",
		key.Namespace, key.Name, count, proxyHealthy)
}
