package proxy_test

import (
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/svcproxy/svcproxy/proxy"
)

// Build the desired state of node-a from a Service and its EndpointSlice,
// then read what each kind of traffic does.
func Example() {
	web := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"},
		Spec: corev1.ServiceSpec{
			Type:                  corev1.ServiceTypeNodePort,
			ClusterIP:             "10.96.0.10",
			ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
			Ports:                 []corev1.ServicePort{{Name: "http", Port: 80, NodePort: 30080, Protocol: corev1.ProtocolTCP}},
		},
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "shop", Name: "web-abc", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.244.1.7"}, NodeName: ptr.To("node-a")},
			{Addresses: []string{"10.244.2.9"}, NodeName: ptr.To("node-b")},
		},
	}
	state := proxy.Build(
		proxy.Inputs{Services: []*corev1.Service{web}, EndpointSlices: []*discoveryv1.EndpointSlice{slice}},
		proxy.Config{NodeName: "node-a", ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}},
	)

	sp := state.IPv4.Service(proxy.Key{Namespace: "shop", Name: "web", Protocol: proxy.TCP, Port: "http"})
	fmt.Println("internal:", sp.InternalVerdict(), sp.InternalEndpoints())
	fmt.Println("external:", sp.ExternalVerdict(), sp.ExternalEndpoints())
	fmt.Print(state.Dump())
	// Output:
	// internal: forward [10.244.1.7:8080 10.244.2.9:8080]
	// external: forward [10.244.1.7:8080]
	// ipv4 masqueradeAll=false clusterCIDRs=[10.244.0.0/16] nodeIP=none nodePorts=all-local
	//   shop/web/tcp/http 10.96.0.10:80 nodePort=30080 externalTrafficPolicy=Local
	//     internal forward 10.244.1.7:8080(local) 10.244.2.9:8080
	//     external forward 10.244.1.7:8080(local)
	// ipv6 masqueradeAll=false clusterCIDRs=[] nodeIP=none nodePorts=all-local
}
