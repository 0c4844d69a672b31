package proxy_test

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/svcproxy/svcproxy/proxy"
	"github.com/svcproxy/svcproxy/scale"
)

// A Builder gives what Build gives after every change, reuses unchanged
// Services, and never alters a State it returned before.
func TestBuilderEqualsBuild(t *testing.T) {
	cfg := scale.Config()
	in := scale.Cluster(100, 4)
	var m proxy.Builder
	var kept []*proxy.State
	var dumps []string
	check := func(step string, in proxy.Inputs, cfg proxy.Config) *proxy.State {
		t.Helper()
		got, want := m.Build(in, cfg), proxy.Build(in, cfg)
		if g, w := got.Dump(), want.Dump(); g != w {
			t.Fatalf("%s: Builder and Build differ:\n--- Builder\n%s\n--- Build\n%s", step, g, w)
		}
		for i, st := range kept {
			if st.Dump() != dumps[i] {
				t.Fatalf("%s: an earlier State changed", step)
			}
		}
		kept, dumps = append(kept, got), append(dumps, got.Dump())
		return got
	}
	first := check("first build", in, cfg)

	// Unchanged inputs: every service port is the one built before.
	again := check("same inputs", in, cfg)
	if again.IPv4.Services[0] != first.IPv4.Services[0] {
		t.Error("an unchanged Service was built again")
	}

	// A changed slice, a changed Service, a deleted Service.
	in.EndpointSlices[5] = scale.Slice(5, 4, 1)
	svc := in.Services[7].DeepCopy()
	svc.Spec.Ports[0].Port = 8080
	in.Services[7] = svc
	in.Services = append(in.Services[:9], in.Services[10:]...)
	check("changes", in, cfg)

	// An older Service takes the NodePort of svc-1, which was built
	// before: svc-1 must lose it in this State only.
	thief := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: "thief", CreationTimestamp: metav1.NewTime(time.Unix(1, 0))},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, ClusterIP: "10.99.0.1",
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, NodePort: 30000}}},
	}
	withThief := in
	withThief.Services = append(append([]*corev1.Service{}, in.Services...), thief)
	st := check("conflict", withThief, cfg)
	if len(st.Problems) == 0 {
		t.Fatal("the conflict was not reported")
	}
	check("conflict gone", in, cfg)

	// Another node: everything is built again.
	other := cfg
	other.NodeName = "node-3"
	check("other node", in, other)

	// Bad input: the problems of a reused Service are reported again.
	bad := in.Services[11].DeepCopy()
	bad.Spec.Ports = append(bad.Spec.Ports, corev1.ServicePort{Name: "bad", Port: 0, Protocol: "QUIC"})
	in.Services[11] = bad
	st = check("bad port", in, other)
	st2 := check("bad port again", in, other)
	if len(st.Problems) == 0 || len(st2.Problems) != len(st.Problems) {
		t.Errorf("problems: %d then %d", len(st.Problems), len(st2.Problems))
	}
}
