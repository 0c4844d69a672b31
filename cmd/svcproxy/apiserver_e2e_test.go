package main

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/svcproxy/svcproxy/apiserver"
	"github.com/svcproxy/svcproxy/dptest"
)

// cluster creates objects through a real API server.
type cluster struct {
	t *testing.T
	c kubernetes.Interface
}

func (k cluster) ctx() context.Context { return context.Background() }

func (k cluster) service(name, clusterIP string, mutate func(*corev1.Service)) {
	k.t.Helper()
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "t", Name: name},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: clusterIP,
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}},
	}
	if mutate != nil {
		mutate(s)
	}
	if _, err := k.c.CoreV1().Services("t").Create(k.ctx(), s, metav1.CreateOptions{}); err != nil {
		k.t.Fatalf("create service %s: %v", name, err)
	}
}

// endpoints creates or replaces the EndpointSlice of service svc.
func (k cluster) endpoints(svc string, pods ...string) {
	k.t.Helper()
	addr := map[string][2]string{"b1": {"10.244.1.11", "node-a"}, "b2": {"10.244.1.12", "node-a"}, "b3": {"10.244.2.13", "node-b"}}
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "t", Name: svc + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](dptest.HTTPPort), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	for _, p := range pods {
		sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{Addresses: []string{addr[p][0]}, NodeName: ptr.To(addr[p][1])})
	}
	slices := k.c.DiscoveryV1().EndpointSlices("t")
	if old, err := slices.Get(k.ctx(), sl.Name, metav1.GetOptions{}); err == nil {
		sl.ResourceVersion = old.ResourceVersion
		if _, err := slices.Update(k.ctx(), sl, metav1.UpdateOptions{}); err != nil {
			k.t.Fatalf("update slice: %v", err)
		}
		return
	}
	if _, err := slices.Create(k.ctx(), sl, metav1.CreateOptions{}); err != nil {
		k.t.Fatalf("create slice: %v", err)
	}
}

func (k cluster) setup() {
	k.t.Helper()
	if _, err := k.c.CoreV1().Namespaces().Create(k.ctx(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "t"}}, metav1.CreateOptions{}); err != nil {
		k.t.Fatal(err)
	}
	n, err := k.c.CoreV1().Nodes().Create(k.ctx(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}}, metav1.CreateOptions{})
	if err != nil {
		k.t.Fatal(err)
	}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: dptest.NodeIP.String()}}
	if _, err := k.c.CoreV1().Nodes().UpdateStatus(k.ctx(), n, metav1.UpdateOptions{}); err != nil {
		k.t.Fatal(err)
	}
}

// TestRunAgainstAPIServer is the daemon end to end: a real kube-apiserver
// and svcproxy both in the node's namespace, pods and a client around it.
func TestRunAgainstAPIServer(t *testing.T) {
	bin := buildBinary(t)
	for _, mode := range []string{"nftables", "iptables"} {
		t.Run(mode, func(t *testing.T) {
			env := dptest.NewEnv(t)
			srv := apiserver.StartInNetNS(t, env.Node)
			k := cluster{t: t, c: srv.Client()}
			k.setup()
			k.service("web", "10.96.0.10", func(s *corev1.Service) {
				s.Spec.Type = corev1.ServiceTypeNodePort
				s.Spec.Ports[0].NodePort = 30080
				s.Spec.ExternalIPs = []string{"192.0.2.10"}
			})
			k.endpoints("web", "b1", "b2", "b3")
			k.service("sticky", "10.96.0.13", func(s *corev1.Service) { s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP })
			k.endpoints("sticky", "b1", "b2", "b3")
			k.service("empty", "10.96.0.14", nil)
			k.service("lb", "10.96.0.16", func(s *corev1.Service) {
				s.Spec.Type = corev1.ServiceTypeLoadBalancer
				s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
			})
			k.endpoints("lb", "b1", "b3")
			lb, err := k.c.CoreV1().Services("t").Get(context.Background(), "lb", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			lb.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "198.51.100.16"}}
			if _, err := k.c.CoreV1().Services("t").UpdateStatus(context.Background(), lb, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}

			args := []string{"--kubeconfig", srv.Kubeconfig(), "--proxy-mode", mode, "--hostname-override", "node-a",
				"--cluster-cidr", "10.244.0.0/16", "--min-sync-period", "0", "--sync-period", "5s",
				"--healthz-bind-address", "127.0.0.1:10256", "--metrics-bind-address", ""}
			d := startDaemon(t, bin, env.Node, args...)

			reach := func(to string, want ...string) func() error {
				return func() error {
					got, err := answers(env, to, 30)
					if err != nil {
						return err
					}
					if len(got) != len(want) {
						return errorf("answers from %v, want %v", got, want)
					}
					for _, w := range want {
						if !got[w] {
							return errorf("answers from %v, want %v", got, want)
						}
					}
					return nil
				}
			}
			eventually(t, "ClusterIP", reach("10.96.0.10:80", "b1", "b2", "b3"))
			eventually(t, "NodePort", reach("192.168.50.2:30080", "b1", "b2", "b3"))
			eventually(t, "externalIP", reach("192.0.2.10:80", "b1", "b2", "b3"))
			// LoadBalancer with externalTrafficPolicy Local: only the local pod,
			// and its healthCheckNodePort (allocated by the API server) says so.
			eventually(t, "load-balancer IP", reach("198.51.100.16:80", "b1"))
			hc := int(lb.Spec.HealthCheckNodePort)
			eventually(t, "healthCheckNodePort", func() error {
				code, body, err := httpInNS(env.Node, fmt.Sprintf("http://127.0.0.1:%d/", hc))
				if err != nil || code != 200 || !strings.Contains(body, `"localEndpoints": 1`) {
					return errorf("%d %q %v", code, body, err)
				}
				return nil
			})
			if _, err := env.Request(env.Client, "tcp", netip.MustParseAddrPort("10.96.0.14:80"), time.Second); err == nil {
				t.Error("a Service without endpoints answered")
			}

			// Changes through the API reach the kernel.
			k.endpoints("web", "b2")
			eventually(t, "endpoint change", reach("10.96.0.10:80", "b2"))
			k.endpoints("empty", "b3")
			eventually(t, "new endpoints", reach("10.96.0.14:80", "b3"))
			if err := k.c.CoreV1().Services("t").Delete(context.Background(), "empty", metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			eventually(t, "deleted Service", func() error {
				if _, err := env.Request(env.Client, "tcp", netip.MustParseAddrPort("10.96.0.14:80"), 500*time.Millisecond); err == nil {
					return errorf("still answers")
				}
				return nil
			})

			// A newer Service claiming web's externalIP does not get it, and gets an
			// Event naming the problem; web keeps working.
			k.service("clash", "10.96.0.15", func(s *corev1.Service) { s.Spec.ExternalIPs = []string{"192.0.2.10"} })
			eventually(t, "an Event on the conflicting Service", func() error {
				evs, err := k.c.CoreV1().Events("t").List(context.Background(), metav1.ListOptions{})
				if err != nil {
					return err
				}
				for _, e := range evs.Items {
					if e.InvolvedObject.Name == "clash" && e.Reason == "InvalidInput" && strings.Contains(e.Message, "externalIP 192.0.2.10:80 is already used") {
						return nil
					}
				}
				return errorf("no Event among %d", len(evs.Items))
			})

			// API server outage: the rules stay and traffic flows.
			srv.Stop()
			time.Sleep(2 * time.Second)
			eventually(t, "traffic during the outage", reach("10.96.0.10:80", "b2"))
			srv.Restart(t)
			k.endpoints("web", "b1", "b3")
			eventually(t, "a change after the outage", reach("10.96.0.10:80", "b1", "b3"))

			// Killed and restarted: not one connection fails meanwhile.
			var ok, failed atomic.Int64
			stop := make(chan struct{})
			var wg sync.WaitGroup
			sticky := map[string]bool{}
			var mu sync.Mutex
			for _, to := range []string{"10.96.0.10:80", "10.96.0.13:80"} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						a, err := env.Request(env.Client, "tcp", netip.MustParseAddrPort(to), 2*time.Second)
						if err != nil {
							failed.Add(1)
							continue
						}
						ok.Add(1)
						if to == "10.96.0.13:80" {
							mu.Lock()
							sticky[a.Pod] = true
							mu.Unlock()
						}
					}
				}()
			}
			time.Sleep(300 * time.Millisecond)
			d.Kill()
			time.Sleep(300 * time.Millisecond)
			startDaemon(t, bin, env.Node, args...)
			time.Sleep(3 * time.Second) // the new process has synced by now
			close(stop)
			wg.Wait()
			if failed.Load() != 0 || ok.Load() < 20 {
				t.Fatalf("during the restart: %d requests failed, %d succeeded", failed.Load(), ok.Load())
			}
			if mode == "nftables" && len(sticky) != 1 {
				t.Errorf("affinity lost across the restart: %v", sticky)
			}
			t.Logf("%d requests during kill and restart, none failed", ok.Load())
			k.endpoints("web", "b3")
			eventually(t, "changes after the restart", reach("10.96.0.10:80", "b3"))
		})
	}
}
