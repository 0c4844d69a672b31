// Package proxy is svcproxy's declarative model: a pure, deterministic
// function (Build) from Kubernetes Services, EndpointSlices and this node's
// Node object to the node-local desired dataplane (State).
//
// Every Kubernetes semantic is decided here, as kube-proxy v1.36 defines it:
// which addresses and ports a Service answers on, which endpoints each kind
// of traffic may reach (traffic policies, topology hints, terminating
// fallback), session affinity, source ranges, and whether traffic is
// forwarded, rejected or dropped. Backends (packages nft and iptables)
// only render a State; they implement Backend.
//
// The package touches no kernel and no API server. Input it cannot use is
// never fatal: Build skips the offending port, endpoint or object and
// records a Problem naming the object and the field.
//
// For incremental syncs, every ServicePort carries a stable Key and a
// content Hash, and State.Diff reports what was added, changed and removed
// since a previous State.
package proxy
