package nft

import (
	"net/netip"
	"testing"

	"github.com/svcproxy/svcproxy/manifest"
	"github.com/svcproxy/svcproxy/proxy"
)

func demoState(t testing.TB) *proxy.State {
	t.Helper()
	objs, probs, err := manifest.Load("../examples/demo")
	if err != nil || len(probs) > 0 {
		t.Fatalf("load: %v %v", err, probs)
	}
	return proxy.Build(proxy.Inputs{Services: objs.Services, EndpointSlices: objs.EndpointSlices, Nodes: objs.Nodes},
		proxy.Config{NodeName: "node-a", ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}})
}

func TestRenderIsCanonical(t *testing.T) {
	out := Render(demoState(t))
	again, err := Canonical(out)
	if err != nil {
		t.Fatal(err)
	}
	if again != out {
		t.Errorf("Canonical(Render) != Render:\n%s\n---\n%s", again, out)
	}
	t.Log("\n" + out)
}
