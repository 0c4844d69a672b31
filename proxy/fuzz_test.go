package proxy_test

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"github.com/svcproxy/svcproxy/manifest"
	"github.com/svcproxy/svcproxy/proxy"
)

const fuzzSeed = `
apiVersion: v1
kind: Service
metadata: {name: web, namespace: ns}
spec:
  type: LoadBalancer
  clusterIPs: [10.96.0.10, "fd00::10"]
  externalIPs: [192.0.2.1]
  externalTrafficPolicy: Local
  healthCheckNodePort: 32000
  sessionAffinity: ClientIP
  loadBalancerSourceRanges: [203.0.113.0/24]
  ports:
  - {name: http, port: 80, nodePort: 30080, protocol: TCP}
  - {name: dns, port: 53, protocol: UDP}
status:
  loadBalancer:
    ingress: [{ip: 198.51.100.1}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: ns
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}, {name: dns, port: 5353, protocol: UDP}]
endpoints:
- addresses: [10.0.1.1]
  nodeName: node-a
  hints: {forZones: [{name: z1}]}
- addresses: [10.0.1.2]
  nodeName: node-b
  conditions: {ready: false, serving: true, terminating: true}
---
apiVersion: v1
kind: Node
metadata: {name: node-a, labels: {topology.kubernetes.io/zone: z1}}
status: {addresses: [{type: InternalIP, address: 192.168.0.1}]}
`

// FuzzBuild feeds mutated manifests to Build: it must not panic, must give
// the same State for any input order, and must only emit well-formed
// service ports.
func FuzzBuild(f *testing.F) {
	f.Add([]byte(fuzzSeed), "node-a", uint64(1))
	f.Fuzz(func(t *testing.T, data []byte, nodeName string, seed uint64) {
		objs, _ := manifest.Decode("fuzz.yaml", data)
		in := proxy.Inputs{Services: objs.Services, EndpointSlices: objs.EndpointSlices, Nodes: objs.Nodes}
		cfg := proxy.Config{NodeName: nodeName}
		st := proxy.Build(in, cfg)

		r := rand.New(rand.NewPCG(seed, seed))
		r.Shuffle(len(in.Services), func(a, b int) { in.Services[a], in.Services[b] = in.Services[b], in.Services[a] })
		r.Shuffle(len(in.EndpointSlices), func(a, b int) {
			in.EndpointSlices[a], in.EndpointSlices[b] = in.EndpointSlices[b], in.EndpointSlices[a]
		})
		r.Shuffle(len(in.Nodes), func(a, b int) { in.Nodes[a], in.Nodes[b] = in.Nodes[b], in.Nodes[a] })
		if again := proxy.Build(in, cfg); !reflect.DeepEqual(st, again) {
			t.Fatalf("Build depends on input order:\n%s", firstDiff(again.Dump(), st.Dump()))
		}
		checkInvariants(t, st)
	})
}

func checkInvariants(t *testing.T, st *proxy.State) {
	t.Helper()
	for _, fs := range st.Families() {
		dests := map[string]proxy.Key{}
		claim := func(sp *proxy.ServicePort, d string) {
			if o, ok := dests[d]; ok {
				t.Fatalf("destination %s of %s also belongs to %s", d, sp.Key, o)
			}
			dests[d] = sp.Key
		}
		for _, sp := range fs.Services {
			claim(sp, fmt.Sprintf("%s %s:%d", sp.Key.Protocol, sp.ClusterIP, sp.Port))
			if sp.NodePort != 0 {
				claim(sp, fmt.Sprintf("%s nodeport %d", sp.Key.Protocol, sp.NodePort))
			}
			for _, ip := range append(slices.Clone(sp.ExternalIPs), sp.LoadBalancerIPs...) {
				claim(sp, fmt.Sprintf("%s %s:%d", sp.Key.Protocol, ip, sp.Port))
			}
		}
		if !slices.IsSortedFunc(fs.Services, func(a, b *proxy.ServicePort) int { return a.Key.Compare(b.Key) }) {
			t.Fatalf("%s services not sorted", fs.Family)
		}
		for i, sp := range fs.Services {
			if i > 0 && fs.Services[i-1].Key == sp.Key {
				t.Fatalf("duplicate key %s", sp.Key)
			}
			if !fs.Family.Contains(sp.ClusterIP) || sp.Port == 0 {
				t.Fatalf("%s: bad destination %s:%d in %s", sp.Key, sp.ClusterIP, sp.Port, fs.Family)
			}
			for _, list := range [][]proxy.Endpoint{sp.ClusterEndpoints, sp.LocalEndpoints} {
				for _, e := range list {
					if !fs.Family.Contains(e.IP) || e.Port == 0 {
						t.Fatalf("%s: bad endpoint %s in %s", sp.Key, e, fs.Family)
					}
				}
			}
			for _, e := range sp.LocalEndpoints {
				if !e.Local {
					t.Fatalf("%s: non-local endpoint %s in LocalEndpoints", sp.Key, e)
				}
			}
			if (len(sp.ClusterEndpoints)+len(sp.LocalEndpoints) > 0) && !sp.HasEndpoints {
				t.Fatalf("%s: endpoints but HasEndpoints false", sp.Key)
			}
		}
	}
}
