package main

import (
	"net"
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/svcproxy/svcproxy/health"
	"github.com/svcproxy/svcproxy/proxy"
)

// The health check servers follow the States; syncs that change none of
// them skip them, but a port that could not be bound is retried at the
// next sync even when nothing changed.
func TestSyncServiceHealthRetriesUnboundPorts(t *testing.T) {
	busy, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(busy.Addr().(*net.TCPAddr).Port)
	local := []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	servers := map[proxy.Family]*health.ServiceHealth{
		proxy.IPv4: health.NewServiceHealth(corev1.IPv4Protocol, local, nil),
		proxy.IPv6: health.NewServiceHealth(corev1.IPv6Protocol, nil, nil),
	}
	defer servers[proxy.IPv4].Close()
	st := &proxy.State{
		IPv4: &proxy.FamilyState{Family: proxy.IPv4, Services: []*proxy.ServicePort{{
			Key: proxy.Key{Namespace: "ns", Name: "lb", Protocol: proxy.TCP}, HealthCheckNodePort: port}}},
		IPv6: &proxy.FamilyState{Family: proxy.IPv6},
	}
	key := health.ServiceKey{Namespace: "ns", Name: "lb"}
	done := map[proxy.Family][]proxy.HealthCheck{}

	syncServiceHealth(st, servers, done)
	if got := servers[proxy.IPv4].Ports(); len(got) != 0 {
		t.Fatalf("served %v on a busy port", got)
	}
	busy.Close()
	syncServiceHealth(st, servers, done)
	if got := servers[proxy.IPv4].Ports()[key]; got != port {
		t.Fatalf("port %d not bound at the next sync: %v", port, servers[proxy.IPv4].Ports())
	}
	if _, ok := done[proxy.IPv4]; !ok {
		t.Error("a sync that bound everything is not remembered")
	}
}
