package proxy

import (
	"net/netip"
	"slices"
	"strings"
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
	var out []HealthCheck
	addrs := map[[2]string]map[netip.Addr]bool{}
	for _, sp := range fs.Services {
		if sp.HealthCheckNodePort == 0 {
			continue
		}
		k := [2]string{sp.Key.Namespace, sp.Key.Name}
		if addrs[k] == nil {
			addrs[k] = map[netip.Addr]bool{}
			out = append(out, HealthCheck{Namespace: k[0], Name: k[1], Port: sp.HealthCheckNodePort})
		}
		for _, e := range sp.LocalEndpoints {
			if e.Ready {
				addrs[k][e.IP] = true
			}
		}
	}
	for i := range out {
		out[i].LocalEndpoints = len(addrs[[2]string{out[i].Namespace, out[i].Name}])
	}
	slices.SortFunc(out, func(a, b HealthCheck) int {
		if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out
}
