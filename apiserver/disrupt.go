package apiserver

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"k8s.io/client-go/rest"
)

// Option configures a Server at Start.
type Option func(*Server)

// WithArgs adds kube-apiserver flags after the package's own (for a flag
// given twice, the last wins), for every start of the server, restarts
// included. For instance "--watch-cache=false" makes the API server serve
// watches from etcd directly, so that a watch from a resource version etcd
// has compacted (CompactEtcd) is answered with 410 Gone.
func WithArgs(args ...string) Option {
	return func(s *Server) { s.extraArgs = append(s.extraArgs, args...) }
}

// CompactEtcd compacts etcd's history up to its current revision, as the
// API server itself does every 5 minutes (--etcd-compaction-interval), and
// returns that revision. Afterwards etcd cannot replay events from before
// it: a watch from an older resource version that reaches etcd (no watch
// cache, see WithArgs) is answered with 410 Gone ("The resourceVersion for
// the provided watch is too old"), and kube-apiserver logs "watch chan
// error: etcdserver: mvcc: required revision has been compacted".
//
// It uses etcd's JSON gateway (/v3/kv/range, /v3/kv/compaction), so needs
// no etcdctl. Failure fails t.
func (s *Server) CompactEtcd(t TB) int64 {
	t.Helper()
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: s.dial}}
	defer client.CloseIdleConnections()
	post := func(path string, req any) ([]byte, error) {
		body, _ := json.Marshal(req)
		resp, err := client.Post(s.etcdURL+path, "application/json", bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("%s: %s: %s", path, resp.Status, out)
		}
		return out, nil
	}
	// Any read returns the current revision in its header (int64 as a JSON
	// string, as the gateway encodes them).
	out, err := post("/v3/kv/range", map[string]any{"key": base64.StdEncoding.EncodeToString([]byte("/")), "limit": 1})
	if err != nil {
		t.Fatalf("apiserver: etcd revision: %v", err)
	}
	var r struct {
		Header struct {
			Revision string `json:"revision"`
		} `json:"header"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("apiserver: etcd revision: %v: %s", err, out)
	}
	rev, err := strconv.ParseInt(r.Header.Revision, 10, 64)
	if err != nil || rev <= 0 {
		t.Fatalf("apiserver: etcd revision %q: %v", r.Header.Revision, err)
	}
	// physical: return once the compaction is applied, not just scheduled.
	if _, err := post("/v3/kv/compaction", map[string]any{"revision": strconv.FormatInt(rev, 10), "physical": true}); err != nil {
		t.Fatalf("apiserver: compacting etcd at revision %d: %v", rev, err)
	}
	return rev
}

// Proxy relays TCP connections to the API server from another port on the
// same 127.0.0.1 (in the server's namespace, if any). A client configured
// with the proxy's Kubeconfig or RESTConfig — a daemon under test — can be
// cut off from the API server (Cut) while the test keeps using it
// directly, and reconnected (Heal): a network partition between one node
// and the control plane.
//
// While cut, the port is closed: connections are refused, which client-go
// reflectors answer by retrying the watch from the resource version they
// had (not by relisting).
type Proxy struct {
	// URL is https://127.0.0.1:<proxy port>; the server's certificate is
	// valid for it.
	URL string

	s          *Server
	port       int
	kubeconfig string

	mu    sync.Mutex
	ln    net.Listener // nil while cut
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

// StartProxy starts a Proxy to the server; it is closed when the test
// ends. Failure fails t.
func (s *Server) StartProxy(t TB) *Proxy {
	t.Helper()
	port, err := s.freePort()
	if err != nil {
		t.Fatalf("apiserver: proxy port: %v", err)
	}
	p := &Proxy{s: s, port: port, URL: "https://127.0.0.1:" + strconv.Itoa(port), conns: map[net.Conn]bool{}}
	p.kubeconfig = filepath.Join(s.dir, "kubeconfig-proxy-"+strconv.Itoa(port))
	if err := s.writeKubeconfigFor(p.kubeconfig, p.URL); err != nil {
		t.Fatalf("apiserver: %v", err)
	}
	t.Cleanup(func() { p.Cut(); p.wg.Wait() })
	p.Heal(t)
	return p
}

// Kubeconfig is the path of a kubeconfig like Server.Kubeconfig's, for the
// proxy's URL.
func (p *Proxy) Kubeconfig() string { return p.kubeconfig }

// RESTConfig is Server.RESTConfig for the proxy's URL.
func (p *Proxy) RESTConfig() *rest.Config {
	c := p.s.RESTConfig()
	c.Host = p.URL
	return c
}

// Cut closes the proxy's port and every connection it relays. Cutting a
// cut proxy does nothing.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// Heal opens the proxy's port again (the same port). Healing a proxy that
// is not cut does nothing. Failure fails t.
func (p *Proxy) Heal(t TB) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		return
	}
	var ln net.Listener
	err := p.s.inNS(func() error {
		var err error
		ln, err = net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p.port))
		return err
	})
	if err != nil {
		t.Fatalf("apiserver: proxy: %v", err)
	}
	p.ln = ln
	p.wg.Add(1)
	go p.accept(ln)
}

func (p *Proxy) accept(ln net.Listener) {
	defer p.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		p.wg.Add(1)
		go p.relay(ln, c)
	}
}

// relay copies between c and a new connection to the API server until
// either side closes or the proxy is cut.
func (p *Proxy) relay(ln net.Listener, c net.Conn) {
	defer p.wg.Done()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	up, err := p.s.dial(ctx, "tcp", "127.0.0.1:"+strconv.Itoa(p.s.port))
	cancel()
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	if p.ln != ln { // cut meanwhile
		p.mu.Unlock()
		c.Close()
		up.Close()
		return
	}
	p.conns[c], p.conns[up] = true, true
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	copyAndClose := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		dst.Close()
		src.Close()
		done <- struct{}{}
	}
	go copyAndClose(up, c)
	go copyAndClose(c, up)
	<-done
	<-done
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, up)
	p.mu.Unlock()
}
