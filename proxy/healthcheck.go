package proxy

import (
	"net/netip"
	"slices"
)

// HealthCheck is a Service that needs a health check server on this node
// (LoadBalancer with externalTrafficPolicy Local): the load balancer sends
// traffic only to nodes whose server reports local endpoints.
type HealthCheck struct {
	Namespace, Name string
	Port            uint16
	// LocalEndpoints counts this node's ready endpoints, as distinct
	// addresses across all the Service's ports (kube-proxy's count).
	LocalEndpoints int
}

// HealthChecks lists the family's health-checked Services, sorted by
// namespace/name. Ports of one Service share its health check port.
func (fs *FamilyState) HealthChecks() []HealthCheck {
	// The daemon calls this at every sync: no map per Service. A Service's
	// ports are adjacent in Services (sorted by Key), so each count is
	// taken over one run of ports, its addresses sorted and compacted.
	var out []HealthCheck
	var ips []netip.Addr // the current Service's ready local addresses
	count := func() {
		if len(out) > 0 {
			slices.SortFunc(ips, netip.Addr.Compare)
			out[len(out)-1].LocalEndpoints = len(slices.Compact(ips))
			ips = ips[:0]
		}
	}
	for _, sp := range fs.Services {
		if sp.HealthCheckNodePort == 0 {
			continue
		}
		if n := len(out); n == 0 || out[n-1].Namespace != sp.Key.Namespace || out[n-1].Name != sp.Key.Name {
			count()
			out = append(out, HealthCheck{Namespace: sp.Key.Namespace, Name: sp.Key.Name, Port: sp.HealthCheckNodePort})
		}
		for _, e := range sp.LocalEndpoints {
			if e.Ready {
				ips = append(ips, e.IP)
			}
		}
	}
	count()
	return out
}
