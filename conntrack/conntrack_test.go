package conntrack

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/svcproxy/svcproxy/dptest"
	"github.com/svcproxy/svcproxy/nft"
	"github.com/svcproxy/svcproxy/proxy"
)

var podIPs = map[string]string{"b1": "10.244.1.11", "b2": "10.244.1.12", "b3": "10.244.2.13"}

func dnsState(t *testing.T, pods ...string) *proxy.State {
	var eps []string
	for _, p := range pods {
		eps = append(eps, fmt.Sprintf("- {addresses: [%s], nodeName: node-a}", podIPs[p]))
	}
	m := `apiVersion: v1
kind: Service
metadata: {name: dns, namespace: t}
spec: {clusterIP: 10.96.0.11, ports: [{name: dns, port: 53, protocol: UDP}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: dns-1, namespace: t, labels: {kubernetes.io/service-name: dns}}
addressType: IPv4
ports: [{name: dns, port: 8080, protocol: UDP}]
endpoints:
` + strings.Join(eps, "\n") + "\n"
	return dptest.Scenario{Name: "dns", Manifests: m}.Build(t)
}

// ask sends a datagram on a socket that keeps its source port, so every
// datagram rides the same conntrack entry.
func ask(t *testing.T, c net.Conn) string {
	t.Helper()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("q")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(buf[:n]))[0]
}

func TestStaleUDPEntriesAreDeleted(t *testing.T) {
	env := dptest.NewEnv(t)
	be := nft.New(nft.WithNetNS(env.Node.FD()))
	defer be.Close()
	cl, err := New("/run/netns/" + env.Node.Name)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	all := dnsState(t, "b1", "b2", "b3")
	if err := be.Sync(ctx, all); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Clean(all); err != nil {
		t.Fatal(err)
	}
	var conn net.Conn
	if err := env.Client.Do(func() error {
		var err error
		conn, err = net.Dial("udp", "10.96.0.11:53")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	first := ask(t, conn)

	var rest []string
	for _, p := range []string{"b1", "b2", "b3"} {
		if p != first {
			rest = append(rest, p)
		}
	}
	fewer := dnsState(t, rest...)
	if err := be.Sync(ctx, fewer); err != nil {
		t.Fatal(err)
	}
	// The rules no longer lead to `first`, but the entry does.
	if got := ask(t, conn); got != first {
		t.Fatalf("without cleaning, the flow moved from %s to %s: this test proves nothing", first, got)
	}
	n, err := cl.Clean(fewer)
	if err != nil || n == 0 {
		t.Fatalf("Clean: deleted %d, %v", n, err)
	}
	if got := ask(t, conn); got == first {
		t.Fatalf("after cleaning, still answered by the removed endpoint %s", got)
	}
	// Unchanged targets: nothing to do.
	if n, err := cl.Clean(fewer); n != 0 || err != nil {
		t.Errorf("second Clean deleted %d, %v", n, err)
	}
}
