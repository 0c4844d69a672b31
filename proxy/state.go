package proxy

import (
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Family is an IP address family. Each family has its own FamilyState: a
// dual-stack Service appears in both, a single-stack one in one.
type Family uint8

const (
	IPv4 Family = 4
	IPv6 Family = 6
)

func (f Family) String() string {
	if f == IPv6 {
		return "ipv6"
	}
	return "ipv4"
}

// Contains reports whether a belongs to family f (IPv4-mapped IPv6 addresses
// count as IPv6, as they do in the kernel).
func (f Family) Contains(a netip.Addr) bool {
	return a.IsValid() && (f == IPv4) == a.Is4()
}

// Protocol is a Service port's L4 protocol, spelled as in the Kubernetes API.
type Protocol string

const (
	TCP  Protocol = "TCP"
	UDP  Protocol = "UDP"
	SCTP Protocol = "SCTP"
)

// Lower returns the protocol as nftables and iptables spell it ("tcp").
func (p Protocol) Lower() string { return strings.ToLower(string(p)) }

// Key identifies one port of one Service. It is stable across syncs and is
// what backends name their per-service chains after.
type Key struct {
	Namespace string
	Name      string
	Protocol  Protocol
	Port      string // the Service port's name; "" for an unnamed port
}

// String is "namespace/name/protocol/port", or "namespace/name/protocol" for
// an unnamed port, with the protocol in lower case.
func (k Key) String() string {
	s := k.Namespace + "/" + k.Name + "/" + k.Protocol.Lower()
	if k.Port != "" {
		s += "/" + k.Port
	}
	return s
}

// Compare orders keys by namespace, name, protocol, then port name.
func (k Key) Compare(o Key) int {
	if c := strings.Compare(k.Namespace, o.Namespace); c != 0 {
		return c
	}
	if c := strings.Compare(k.Name, o.Name); c != 0 {
		return c
	}
	if c := strings.Compare(string(k.Protocol), string(o.Protocol)); c != 0 {
		return c
	}
	return strings.Compare(k.Port, o.Port)
}

// Endpoint is one backend of a service port, as the model resolved it.
//
// Every endpoint masquerades traffic whose source is the endpoint itself
// (hairpin: a pod reaching itself through its Service), so that the reply
// comes back through the node.
//
// The State holds one per endpoint and port: the fields are ordered so
// that it takes 48 bytes (Port among the flags; it took 56).
type Endpoint struct {
	IP          netip.Addr
	NodeName    string // "" when the EndpointSlice did not say
	Port        uint16
	Local       bool // on this node
	Ready       bool
	Serving     bool
	Terminating bool
}

// String is "ip:port" ("[ip]:port" for IPv6).
func (e Endpoint) String() string { return netip.AddrPortFrom(e.IP, e.Port).String() }

func compareEndpoints(a, b Endpoint) int {
	if c := a.IP.Compare(b.IP); c != 0 {
		return c
	}
	return int(a.Port) - int(b.Port)
}

// Verdict is what happens to a packet addressed to a service port.
type Verdict uint8

const (
	// Forward: DNAT to one of the endpoints.
	Forward Verdict = iota
	// Reject: the Service has no usable endpoint anywhere; the client is
	// refused at once (ICMP port unreachable / TCP reset) rather than left to
	// time out.
	Reject
	// Drop: endpoints exist, but none on this node and the traffic policy is
	// Local; the packet is silently dropped, as kube-proxy does.
	Drop
)

func (v Verdict) String() string {
	switch v {
	case Reject:
		return "reject"
	case Drop:
		return "drop"
	}
	return "forward"
}

// ServicePort is everything a backend needs to program one port of one
// Service in one family. All of its fields are decided by Build; a backend
// renders them and decides nothing.
//
// Destinations: the ClusterIP:Port ("internal" traffic), and the "external"
// destinations NodePort (on the node's NodePort addresses), ExternalIPs:Port
// and LoadBalancerIPs:Port.
type ServicePort struct {
	Key  Key
	Hash uint64 // content hash of every other field; equal hash ⇔ same rules

	ClusterIP       netip.Addr
	Port            uint16
	NodePort        uint16 // 0: none
	ExternalIPs     []netip.Addr
	LoadBalancerIPs []netip.Addr

	// SourceRanges, when not empty, restricts traffic to LoadBalancerIPs:
	// packets whose source lies outside every prefix are dropped. It already
	// includes each LoadBalancerIP (as a host prefix) when a configured range
	// contains the node's IP, so that the node reaching its own VIP works.
	SourceRanges []netip.Prefix

	// HealthCheckNodePort is the port of the per-service health check server
	// (LoadBalancer services with externalTrafficPolicy Local); 0: none.
	HealthCheckNodePort uint16

	InternalPolicyLocal bool // internalTrafficPolicy: Local
	ExternalPolicyLocal bool // externalTrafficPolicy: Local (externally accessible ports only)

	// AffinitySeconds > 0 enables ClientIP session affinity: a client keeps
	// the endpoint it was last sent to for this many seconds of inactivity.
	AffinitySeconds int32

	// ClusterEndpoints serve traffic under the Cluster policy: ready
	// endpoints narrowed by topology hints, or, when none is ready anywhere,
	// the serving terminating ones. Empty when no traffic uses this policy.
	ClusterEndpoints []Endpoint
	// LocalEndpoints serve traffic under the Local policy: this node's ready
	// endpoints, or its serving terminating ones when none is ready. Empty
	// when no traffic uses this policy.
	LocalEndpoints []Endpoint
	// HasEndpoints: some usable endpoint exists on some node. It tells Drop
	// from Reject when the policy's own list is empty.
	HasEndpoints bool
	// Topology is the hint set that narrowed ClusterEndpoints: "Zone",
	// "Node", or "" when topology did not apply.
	Topology string

	// created is the Service's creationTimestamp: when two Services claim
	// one destination, the older keeps it.
	created time.Time
}

// ExternallyAccessible reports whether the port has any external
// destination (NodePort, externalIP or load-balancer IP) in this family.
func (sp *ServicePort) ExternallyAccessible() bool {
	return sp.NodePort != 0 || len(sp.ExternalIPs) > 0 || len(sp.LoadBalancerIPs) > 0
}

// InternalEndpoints are the endpoints ClusterIP traffic is sent to.
func (sp *ServicePort) InternalEndpoints() []Endpoint {
	if sp.InternalPolicyLocal {
		return sp.LocalEndpoints
	}
	return sp.ClusterEndpoints
}

// ExternalEndpoints are the endpoints external traffic from outside the
// node and outside the cluster CIDRs is sent to.
//
// With externalTrafficPolicy Local, traffic to an external destination that
// comes from the node itself (masqueraded) or from a pod in the cluster
// CIDRs (not masqueraded) is short-circuited to ClusterEndpoints instead, as
// if it were internal; ExternalVerdict does not apply to it while
// HasEndpoints is true.
func (sp *ServicePort) ExternalEndpoints() []Endpoint {
	if sp.ExternalPolicyLocal {
		return sp.LocalEndpoints
	}
	return sp.ClusterEndpoints
}

// InternalVerdict is what happens to ClusterIP traffic.
func (sp *ServicePort) InternalVerdict() Verdict {
	return verdict(len(sp.InternalEndpoints()) > 0, sp.HasEndpoints)
}

// ExternalVerdict is what happens to external traffic (see
// ExternalEndpoints for the short-circuited exceptions).
func (sp *ServicePort) ExternalVerdict() Verdict {
	return verdict(len(sp.ExternalEndpoints()) > 0, sp.HasEndpoints)
}

func verdict(own, any bool) Verdict {
	switch {
	case own:
		return Forward
	case any:
		return Drop
	}
	return Reject
}

// NodePortMatch says which destination addresses accept NodePort traffic.
type NodePortMatch struct {
	// AllLocal: every address local to the node except loopback ones (nft
	// `fib daddr type local`, iptables `-m addrtype --dst-type LOCAL`).
	AllLocal bool
	// Addresses, when AllLocal is false: exactly these node addresses. Empty
	// means NodePorts are not reachable in this family.
	Addresses []netip.Addr
}

// FamilyState is the desired dataplane of one address family.
type FamilyState struct {
	Family Family

	// MasqueradeAll masquerades all traffic to ClusterIPs.
	MasqueradeAll bool
	// ClusterCIDRs detect traffic from pods ("local traffic"). When not
	// empty, traffic to a ClusterIP from outside them is masqueraded, and
	// pod traffic to external destinations of an externalTrafficPolicy
	// Local service is short-circuited to the cluster endpoints. Empty: no
	// local-traffic detection.
	ClusterCIDRs []netip.Prefix
	// NodeIP is the node's primary address in this family (may be invalid).
	NodeIP netip.Addr
	// NodePorts says where NodePorts are accepted.
	NodePorts NodePortMatch

	// Services holds every programmed service port, sorted by Key.
	Services []*ServicePort

	// GlobalHash covers every field above except Services: when it changes,
	// rules shared by all services must be rewritten.
	GlobalHash uint64
}

// Service returns the port with key k, or nil.
func (fs *FamilyState) Service(k Key) *ServicePort {
	i, ok := slices.BinarySearchFunc(fs.Services, k, func(sp *ServicePort, k Key) int { return sp.Key.Compare(k) })
	if !ok {
		return nil
	}
	return fs.Services[i]
}

// ExternalName is a Service of type ExternalName: DNS only, no rules.
type ExternalName struct {
	Namespace, Name string
	ExternalName    string
}

// State is the node-local desired dataplane: the output of Build and the
// input of every backend. It is immutable once built; backends may keep a
// State to diff the next one against.
type State struct {
	IPv4 *FamilyState
	IPv6 *FamilyState
	// ExternalNames lists ExternalName Services, sorted by namespace/name.
	ExternalNames []ExternalName
	// Problems lists the input the model could not use, sorted.
	Problems []Problem

	// delta, set by a Builder, names the ports that may differ from the
	// State it built before, so that Diff need not compare them all.
	delta *delta
	// id numbers the States a Builder makes (0: not a Builder's).
	id uint64
}

// Families returns the IPv4 and the IPv6 state, in that order.
func (s *State) Families() []*FamilyState { return []*FamilyState{s.IPv4, s.IPv6} }

// Family returns the state of family f.
func (s *State) Family(f Family) *FamilyState {
	if f == IPv6 {
		return s.IPv6
	}
	return s.IPv4
}
