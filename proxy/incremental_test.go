package proxy_test

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"runtime"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/svcproxy/svcproxy/proxy"
	"github.com/svcproxy/svcproxy/scale"
)

// TestBuilderRandomChanges applies random sequences of the changes an
// informer delivers (and a few only manifests can) and checks after each
// that the Builder's State equals Build's, that Diff's shortcut agrees with
// the full comparison, and that the shortcut is taken when it should be.
func TestBuilderRandomChanges(t *testing.T) {
	fast, builds := 0, 0
	for seed := range uint64(40) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			f, b := randomChanges(t, seed)
			fast, builds = fast+f, builds+b
		})
	}
	// Conflicts (op 8), two objects under one name (op 12) and the node
	// (op 14) turn the shortcut off for a while: most builds still take it.
	t.Logf("%d of %d builds were incremental", fast, builds)
	if fast < builds/4 {
		t.Errorf("only %d of %d builds were incremental", fast, builds)
	}
}

func randomChanges(t *testing.T, seed uint64) (fast, builds int) {
	r := rand.New(rand.NewPCG(seed, 7))
	const n = 40
	in := scale.Cluster(n, 3)
	cfg := scale.Config()
	var m proxy.Builder
	prev := m.Build(in, cfg)
	var extra *corev1.Service
	pickSvc := func() int {
		for {
			if i := r.IntN(len(in.Services)); in.Services[i] != nil {
				return i
			}
		}
	}
	for step := range 60 {
		var did []string
		for range 1 + r.IntN(3) {
			op := r.IntN(17)
			did = append(did, fmt.Sprint(op))
			switch op {
			case 0, 1, 2: // endpoints change (count, or the same count)
				i := r.IntN(n + 5)
				in.EndpointSlices = replaceSlice(in.EndpointSlices, scale.Slice(i, 1+r.IntN(4), r.IntN(2)))
			case 3: // a slice deleted
				if len(in.EndpointSlices) > 0 {
					j := r.IntN(len(in.EndpointSlices))
					in.EndpointSlices = append(in.EndpointSlices[:j:j], in.EndpointSlices[j+1:]...)
				}
			case 4: // a second slice for a Service
				sl := scale.Slice(r.IntN(n), 2, 0)
				sl.Name += "-2"
				sl.Endpoints[0].Addresses = []string{fmt.Sprintf("10.200.%d.%d", r.IntN(256), r.IntN(256))}
				in.EndpointSlices = replaceSlice(in.EndpointSlices, sl)
			case 5: // a slice moves to another Service, or loses its label
				if len(in.EndpointSlices) > 0 {
					sl := in.EndpointSlices[r.IntN(len(in.EndpointSlices))].DeepCopy()
					if r.IntN(2) == 0 {
						sl.Labels[discoveryv1.LabelServiceName] = fmt.Sprintf("svc-%d", r.IntN(n))
					} else {
						delete(sl.Labels, discoveryv1.LabelServiceName)
					}
					in.EndpointSlices = replaceSlice(in.EndpointSlices, sl)
				}
			case 6: // a Service's port changes
				i := pickSvc()
				s := in.Services[i].DeepCopy()
				s.Spec.Ports[0].Port = int32(80 + r.IntN(3))
				in.Services = replaceAt(in.Services, i, s)
			case 7: // a Service deleted
				i := pickSvc()
				in.Services = append(in.Services[:i:i], in.Services[i+1:]...)
			case 8: // a new Service; now and then taking a ClusterIP, NodePort or LB IP already used
				k := r.IntN(8)
				s := &corev1.Service{
					ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: fmt.Sprintf("new-%d", k),
						CreationTimestamp: metav1.NewTime(time.Unix(int64(r.IntN(3)), 0))},
					Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, ClusterIP: fmt.Sprintf("10.99.0.%d", k),
						Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, NodePort: int32(31000 + k)}}},
				}
				switch r.IntN(8) {
				case 0:
					s.Spec.ClusterIP = "10.96.0.5" // svc-5's
				case 1:
					s.Spec.Ports[0].NodePort = 30000 // svc-1's
				case 2:
					s.Spec.Type = corev1.ServiceTypeLoadBalancer
					s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "198.18.0.2"}, {IP: "198.18.0.2"}}
				}
				in.Services = replaceByName(in.Services, s)
			case 9: // ExternalName, and back
				i := pickSvc()
				s := in.Services[i].DeepCopy()
				if s.Spec.Type == corev1.ServiceTypeExternalName {
					s.Spec.Type, s.Spec.ExternalName = corev1.ServiceTypeClusterIP, ""
				} else {
					s.Spec.Type, s.Spec.ExternalName = corev1.ServiceTypeExternalName, "db.example.com"
				}
				in.Services = replaceAt(in.Services, i, s)
			case 10: // bad input: a problem that must be reported while it lasts
				i := pickSvc()
				s := in.Services[i].DeepCopy()
				s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: "bad", Port: 0, Protocol: "QUIC"})
				in.Services = replaceAt(in.Services, i, s)
			case 11: // another proxy's Service
				i := pickSvc()
				s := in.Services[i].DeepCopy()
				s.Labels = map[string]string{proxy.LabelServiceProxyName: "other"}
				in.Services = replaceAt(in.Services, i, s)
			case 12: // two objects under one name (manifests) or a nil entry, for a while
				if extra != nil {
					in.Services = slices.DeleteFunc(slices.Clone(in.Services), func(s *corev1.Service) bool { return s == extra })
					extra = nil
					in.Services = slices.DeleteFunc(in.Services, func(s *corev1.Service) bool { return s == nil })
				} else if r.IntN(2) == 0 {
					extra = in.Services[pickSvc()].DeepCopy()
					extra.Spec.ClusterIP = "10.97.0.1"
					in.Services = append(slices.Clone(in.Services), extra)
				} else {
					in.Services = append(slices.Clone(in.Services), nil)
				}
			case 13: // the same object listed twice
				in.EndpointSlices = append(in.EndpointSlices, in.EndpointSlices[r.IntN(len(in.EndpointSlices))])
			case 14: // the node's labels change: everything is rebuilt
				cfg.NodeLabels = map[string]string{corev1.LabelTopologyZone: fmt.Sprint("z", r.IntN(2))}
			case 16: // the Node object changes, with or without a bad address (a problem)
				nd := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-0"}}
				nd.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.168.0.10"}}
				if r.IntN(2) == 0 {
					nd.Status.Addresses = append(nd.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "bogus"})
				}
				in.Nodes = []*corev1.Node{nd}
			case 15: // many changes at once
				for i := range n {
					in.EndpointSlices = replaceSlice(in.EndpointSlices, scale.Slice(i, 1+r.IntN(3), 0))
				}
			}
		}
		got, want := m.Build(in, cfg), proxy.Build(in, cfg)
		if g, w := got.Dump(), want.Dump(); g != w {
			t.Fatalf("step %d (ops %v): Builder and Build differ:\n--- Builder\n%s\n--- Build\n%s", step, did, g, w)
		}
		if !reflect.DeepEqual(got.Problems, want.Problems) {
			t.Fatalf("step %d (ops %v): problems differ:\n%v\n%v", step, did, got.Problems, want.Problems)
		}
		for _, f := range []proxy.Family{proxy.IPv4, proxy.IPv6} {
			if d, all := got.Diff(prev, f), proxy.DiffAll(got, prev, f); !reflect.DeepEqual(d, all) {
				t.Fatalf("step %d (ops %v): Diff %v, full comparison %v", step, did, d, all)
			}
		}
		if proxy.HasDelta(got) {
			fast++
		}
		builds++
		prev = got
	}
	return fast, builds
}

func replaceAt(l []*corev1.Service, i int, s *corev1.Service) []*corev1.Service {
	out := append([]*corev1.Service(nil), l...)
	out[i] = s
	return out
}

func replaceByName(l []*corev1.Service, s *corev1.Service) []*corev1.Service {
	for i, o := range l {
		if o != nil && o.Namespace == s.Namespace && o.Name == s.Name {
			return replaceAt(l, i, s)
		}
	}
	return append(append([]*corev1.Service(nil), l...), s)
}

func replaceSlice(l []*discoveryv1.EndpointSlice, s *discoveryv1.EndpointSlice) []*discoveryv1.EndpointSlice {
	out := append([]*discoveryv1.EndpointSlice(nil), l...)
	found := false
	for i, o := range out {
		if o.Namespace == s.Namespace && o.Name == s.Name {
			out[i] = s // every copy (op 13)
			found = true
		}
	}
	if !found {
		out = append(out, s)
	}
	return out
}

// A Builder's States do not keep the ones before them alive: the daemon
// builds one per change for as long as it runs.
func TestBuilderStatesDoNotKeepTheirPredecessors(t *testing.T) {
	in, cfg := bigInputs(100, 3), proxy.Config{NodeName: "node-0"}
	var m proxy.Builder
	first := m.Build(in, cfg)
	collected := make(chan struct{})
	runtime.AddCleanup(first, func(ch chan struct{}) { close(ch) }, collected)
	first = nil
	var last *proxy.State
	for i := range 5 {
		sl := in.EndpointSlices[i].DeepCopy()
		sl.Endpoints = sl.Endpoints[1:]
		in.EndpointSlices = replaceSlice(in.EndpointSlices, sl)
		if last = m.Build(in, cfg); !proxy.HasDelta(last) {
			t.Fatalf("build %d was not incremental", i)
		}
	}
	for range 50 {
		runtime.GC()
		select {
		case <-collected:
			runtime.KeepAlive(last)
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Error("the first State is still reachable, five builds later")
}
