// Package scale generates synthetic clusters for benchmarks: N Services
// with M endpoints each, shaped like a real cluster (mostly ClusterIP, some
// NodePort and LoadBalancer, a few with policies and affinity).
package scale

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/svcproxy/svcproxy/proxy"
)

// Cluster returns n Services with eps ready endpoints each, spread over 10
// nodes (node-0 is "this" node), in 10.96.0.0/12 and 10.128.0.0/9.
func Cluster(n, eps int) proxy.Inputs {
	var in proxy.Inputs
	for i := range n {
		name := fmt.Sprintf("svc-%d", i)
		s := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: name},
			Spec: corev1.ServiceSpec{
				Type:      corev1.ServiceTypeClusterIP,
				ClusterIP: fmt.Sprintf("10.%d.%d.%d", 96+i>>16, i>>8&255, i&255),
				Ports:     []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}},
			},
		}
		switch {
		case i%20 == 1 && i < 2768*20:
			s.Spec.Type = corev1.ServiceTypeNodePort
			s.Spec.Ports[0].NodePort = int32(30000 + i/20)
		case i%20 == 2:
			s.Spec.Type = corev1.ServiceTypeLoadBalancer
			s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: fmt.Sprintf("198.%d.%d.%d", 18+i>>16&1, i>>8&255, i&255)}}
			s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		case i%100 == 3: // affinity is rare, and costs sets
			s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		}
		in.Services = append(in.Services, s)
		in.EndpointSlices = append(in.EndpointSlices, Slice(i, eps, 0))
	}
	return in
}

// Slice is service i's EndpointSlice with eps endpoints, skipping the
// first `skip` (a cheap way to make a one-endpoint change).
func Slice(i, eps, skip int) *discoveryv1.EndpointSlice {
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "bench", Name: fmt.Sprintf("svc-%d-abc", i), Labels: map[string]string{discoveryv1.LabelServiceName: fmt.Sprintf("svc-%d", i)}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	for j := skip; j < eps; j++ {
		ip := fmt.Sprintf("10.%d.%d.%d", 128+j%64, i>>8&255, i&255)
		sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip}, NodeName: ptr.To(fmt.Sprintf("node-%d", j%10))})
	}
	return sl
}

// Config is the node configuration the benchmarks use.
func Config() proxy.Config {
	cidrs, _ := proxy.ParseCIDRs("10.128.0.0/9")
	return proxy.Config{NodeName: "node-0", ClusterCIDRs: cidrs}
}
