// Package dptest proves a backend with real packets: it builds a small
// network of namespaces — a node running the backend, an external client,
// and three backend pods — and runs a table of scenarios (Services and
// EndpointSlices in, which pod answers, from which source address, or
// whether the packet is refused or dropped) against any proxy.Backend.
//
// Topology (IPv4; IPv6 mirrors it under fd00:...):
//
//	client 192.168.50.100 ──c0── node 192.168.50.2 ──b1── pod b1 10.244.1.11 (node-a)
//	                                              ├──b2── pod b2 10.244.1.12 (node-a)
//	                                              └──b3── pod b3 10.244.2.13 (node-b, "remote")
//
// All three pods hang off this node, but b3's EndpointSlice places it on
// another node, so it is remote for traffic policies. The node's side of
// each pod link has 10.244.0.1: traffic the node masquerades reaches a pod
// from that address.
package dptest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/svcproxy/svcproxy/sandbox"
)

// Addresses of the test network.
var (
	NodeIP    = netip.MustParseAddr("192.168.50.2")
	NodeIP6   = netip.MustParseAddr("fd00:50::2")
	ClientIP  = netip.MustParseAddr("192.168.50.100")
	ClientIP6 = netip.MustParseAddr("fd00:50::100")
	// MasqIP is the address masqueraded traffic reaches a pod from.
	MasqIP  = netip.MustParseAddr("10.244.0.1")
	MasqIP6 = netip.MustParseAddr("fd00:244::1")
)

// Pod is one backend namespace.
type Pod struct {
	Name string
	IP   netip.Addr
	IP6  netip.Addr
	NS   *sandbox.NS
}

// Env is the test network.
type Env struct {
	Node   *sandbox.NS
	Client *sandbox.NS
	Pods   []*Pod
}

// Ports the pods serve on.
const (
	HTTPPort = 8080
	UDPPort  = 8080
	SCTPPort = 8080
)

// NewEnv builds the network and starts the servers; everything is removed
// when the test ends.
func NewEnv(t sandbox.TB) *Env {
	t.Helper()
	sandbox.Require(t, "nft", "iptables-legacy", "conntrack")
	e := &Env{Node: sandbox.New(t, "node"), Client: sandbox.New(t, "client")}
	n := e.Node
	// The node forwards what it has no route for back out of the client
	// link: no ICMP redirects for that, and no ICMP rate limit, which
	// would otherwise swallow the port-unreachable errors of rejects.
	for _, s := range []string{
		"net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1", "net.ipv4.conf.all.rp_filter=0",
		"net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.default.send_redirects=0",
		"net.ipv4.icmp_ratelimit=0", "net.ipv6.icmp.ratelimit=0",
	} {
		// /proc/sys/net belongs to the namespace of the writer: write it
		// from inside (no dependency on procps' sysctl).
		key, val, _ := strings.Cut(s, "=")
		n.MustRun(t, "sh", "-c", fmt.Sprintf("echo %s > /proc/sys/%s", val, strings.ReplaceAll(key, ".", "/")))
	}
	// The external link.
	n.MustRun(t, "ip", "link", "add", "c0", "type", "veth", "peer", "name", "eth0", "netns", e.Client.Name)
	n.MustRun(t, "ip", "addr", "add", NodeIP.String()+"/24", "dev", "c0")
	n.MustRun(t, "ip", "-6", "addr", "add", NodeIP6.String()+"/64", "dev", "c0", "nodad")
	n.MustRun(t, "ip", "link", "set", "c0", "up")
	// The node sends what it has no route for (ClusterIPs included) towards
	// the client, like a default gateway; DNAT reroutes service traffic.
	n.MustRun(t, "ip", "route", "add", "default", "via", ClientIP.String())
	n.MustRun(t, "ip", "-6", "route", "add", "default", "via", ClientIP6.String())
	c := e.Client
	c.MustRun(t, "ip", "addr", "add", ClientIP.String()+"/24", "dev", "eth0")
	c.MustRun(t, "ip", "-6", "addr", "add", ClientIP6.String()+"/64", "dev", "eth0", "nodad")
	c.MustRun(t, "ip", "link", "set", "eth0", "up")
	c.MustRun(t, "ip", "route", "add", "default", "via", NodeIP.String())
	c.MustRun(t, "ip", "-6", "route", "add", "default", "via", NodeIP6.String())

	for _, p := range []struct{ name, ip, ip6 string }{
		{"b1", "10.244.1.11", "fd00:244::11"}, {"b2", "10.244.1.12", "fd00:244::12"}, {"b3", "10.244.2.13", "fd00:244::13"},
	} {
		e.AddPod(t, p.name, netip.MustParseAddr(p.ip), netip.MustParseAddr(p.ip6))
	}
	return e
}

// AddPod adds a backend pod namespace, linked to the node by a veth pair
// named like the pod (so name is at most 15 bytes), serving as the first
// three do. Tests that need more endpoints than b1..b3 add pods.
func (e *Env) AddPod(t sandbox.TB, name string, ip, ip6 netip.Addr) *Pod {
	t.Helper()
	n := e.Node
	pod := &Pod{Name: name, IP: ip, IP6: ip6, NS: sandbox.New(t, name)}
	n.MustRun(t, "ip", "link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", pod.NS.Name)
	n.MustRun(t, "ip", "addr", "add", MasqIP.String()+"/32", "dev", name)
	n.MustRun(t, "ip", "-6", "addr", "add", MasqIP6.String()+"/128", "dev", name, "nodad")
	n.MustRun(t, "ip", "link", "set", name, "up")
	n.MustRun(t, "ip", "route", "add", ip.String()+"/32", "dev", name)
	n.MustRun(t, "ip", "-6", "route", "add", ip6.String()+"/128", "dev", name)
	pn := pod.NS
	pn.MustRun(t, "ip", "addr", "add", ip.String()+"/32", "dev", "eth0")
	pn.MustRun(t, "ip", "-6", "addr", "add", ip6.String()+"/128", "dev", "eth0", "nodad")
	pn.MustRun(t, "ip", "link", "set", "eth0", "up")
	pn.MustRun(t, "ip", "route", "add", MasqIP.String(), "dev", "eth0")
	pn.MustRun(t, "ip", "route", "add", "default", "via", MasqIP.String())
	pn.MustRun(t, "ip", "-6", "route", "add", MasqIP6.String(), "dev", "eth0")
	pn.MustRun(t, "ip", "-6", "route", "add", "default", "via", MasqIP6.String())
	e.Pods = append(e.Pods, pod)
	e.serve(t, pod)
	return pod
}

// serve starts the pod's servers: HTTP on HTTPPort, UDP on UDPPort (and on
// 7007), SCTP on SCTPPort where the kernel has it. Each answers
// "<pod name> <source address seen>".
func (e *Env) serve(t sandbox.TB, p *Pod) {
	var lns []net.Listener
	var pcs []net.PacketConn
	err := p.NS.Do(func() error {
		ln, err := net.Listen("tcp", fmt.Sprintf(":%d", HTTPPort))
		if err != nil {
			return err
		}
		lns = append(lns, ln)
		for _, port := range []int{UDPPort, 7007} {
			pc, err := net.ListenPacket("udp", fmt.Sprintf(":%d", port))
			if err != nil {
				return err
			}
			pcs = append(pcs, pc)
		}
		if sl, err := listenSCTP(SCTPPort); err == nil {
			lns = append(lns, sl)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("servers in %s: %v", p.Name, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		fmt.Fprintf(w, "%s %s\n", p.Name, host)
	})}
	go srv.Serve(lns[0])
	for _, l := range lns[1:] {
		go serveStream(l, p.Name)
	}
	for _, pc := range pcs {
		go func() {
			buf := make([]byte, 1500)
			for {
				_, addr, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				host, _, _ := net.SplitHostPort(addr.String())
				pc.WriteTo([]byte(p.Name+" "+host+"\n"), addr)
			}
		}()
	}
	t.Cleanup(func() {
		srv.Close()
		for _, l := range lns {
			l.Close()
		}
		for _, pc := range pcs {
			pc.Close()
		}
	})
}

// serveStream answers each connection with one line.
func serveStream(l net.Listener, name string) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
		c.Write([]byte(name + " " + host + "\n"))
		c.Close()
	}
}

// Namespace returns the namespace a check runs from: "client", "node", or
// a pod name.
func (e *Env) Namespace(from string) *sandbox.NS {
	switch from {
	case "client":
		return e.Client
	case "node":
		return e.Node
	}
	for _, p := range e.Pods {
		if p.Name == from {
			return p.NS
		}
	}
	panic("unknown namespace " + from)
}

// Answer is what a pod replied.
type Answer struct {
	Pod    string
	Source string // the source address the pod saw
}

// Outcome classifies a failed request.
var (
	ErrRefused = errors.New("refused")
	ErrTimeout = errors.New("timed out")
)

func classify(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.ECONNREFUSED), errors.Is(err, unix.EHOSTUNREACH), errors.Is(err, unix.ENETUNREACH):
		return fmt.Errorf("%w: %v", ErrRefused, err)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, unix.ETIMEDOUT), errors.Is(err, unix.EAGAIN), isTimeout(err):
		return fmt.Errorf("%w: %v", ErrTimeout, err)
	}
	return err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Request sends one request from the namespace to addr over proto ("tcp"
// is HTTP, "udp" a datagram, "sctp" a stream) and returns the answer.
// Every request uses a new socket, so a new connection-tracking entry.
func (e *Env) Request(from *sandbox.NS, proto string, addr netip.AddrPort, timeout time.Duration) (Answer, error) {
	var line string
	var err error
	switch proto {
	case "tcp":
		line, err = httpGet(from, addr, timeout)
	case "udp":
		line, err = udpAsk(from, addr, timeout)
	case "sctp":
		line, err = sctpAsk(from, addr, timeout)
	default:
		return Answer{}, fmt.Errorf("unknown protocol %q", proto)
	}
	if err != nil {
		return Answer{}, classify(err)
	}
	f := strings.Fields(line)
	if len(f) != 2 {
		return Answer{}, fmt.Errorf("unexpected answer %q", line)
	}
	return Answer{Pod: f[0], Source: f[1]}, nil
}

func httpGet(from *sandbox.NS, addr netip.AddrPort, timeout time.Duration) (string, error) {
	var conn net.Conn
	err := from.Do(func() error {
		var err error
		conn, err = (&net.Dialer{Timeout: timeout}).Dial("tcp", addr.String())
		return err
	})
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintf(conn, "GET / HTTP/1.0\r\nHost: %s\r\n\r\n", addr); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(body)), err
}

func udpAsk(from *sandbox.NS, addr netip.AddrPort, timeout time.Duration) (string, error) {
	var conn net.Conn
	err := from.Do(func() error {
		var err error
		conn, err = net.Dial("udp", addr.String())
		return err
	})
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	if _, err := conn.Write([]byte("hello")); err != nil {
		return "", err
	}
	buf := make([]byte, 256)
	n, err := conn.Read(buf)
	return strings.TrimSpace(string(buf[:n])), err
}

// Requests sends n requests and returns the answers; it stops at the first
// error.
func (e *Env) Requests(from *sandbox.NS, proto string, addr netip.AddrPort, n int, timeout time.Duration) ([]Answer, error) {
	var out []Answer
	for range n {
		a, err := e.Request(from, proto, addr, timeout)
		if err != nil {
			return out, err
		}
		out = append(out, a)
	}
	return out, nil
}
