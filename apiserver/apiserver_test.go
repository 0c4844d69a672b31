package apiserver_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"github.com/svcproxy/svcproxy/apiserver"
)

// TestAPIServer runs the whole life of a Server in a subtest — objects,
// kubeconfig, Stop/Restart — and checks afterwards that its cleanup left no
// process behind.
func TestAPIServer(t *testing.T) {
	apiserver.Require(t)
	var pids []int
	ok := t.Run("lifecycle", func(t *testing.T) {
		start := time.Now()
		s := apiserver.Start(t)
		t.Logf("etcd + kube-apiserver ready at %s in %v", s.URL, time.Since(start).Round(time.Millisecond))
		etcdPID, apiPID := s.PIDs()
		pids = append(pids, etcdPID, apiPID)
		for _, pid := range pids {
			if !alive(pid) {
				t.Fatalf("pid %d not running after Start", pid)
			}
		}

		ctx := context.Background()
		c := s.Client()
		const ns = "svcproxy-it"
		if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create namespace: %v", err)
		}
		svc, err := c.CoreV1().Services(ns).Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "web"},
			Spec: corev1.ServiceSpec{
				Type:     corev1.ServiceTypeClusterIP,
				Selector: map[string]string{"app": "web"},
				Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create service: %v", err)
		}
		_, cidr, _ := net.ParseCIDR(apiserver.ServiceClusterIPRange)
		if ip := net.ParseIP(svc.Spec.ClusterIP); ip == nil || !cidr.Contains(ip) {
			t.Fatalf("service got ClusterIP %q, want an address in %s", svc.Spec.ClusterIP, cidr)
		}
		t.Logf("service web got ClusterIP %s", svc.Spec.ClusterIP)

		if _, err := c.DiscoveryV1().EndpointSlices(ns).Create(ctx, &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: "web-abc", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints: []discoveryv1.Endpoint{{
				Addresses:  []string{"10.244.1.5"},
				Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
				NodeName:   ptr.To("node-a"),
			}},
			Ports: []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create endpointslice: %v", err)
		}
		if _, err := c.CoreV1().Nodes().Create(ctx, &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: "node-a", Labels: map[string]string{"topology.kubernetes.io/zone": "z1"}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create node: %v", err)
		}
		checkObjects(t, c, ns, svc.Spec.ClusterIP)

		// The kubeconfig file works as a daemon would use it.
		cfg, err := clientcmd.BuildConfigFromFlags("", s.Kubeconfig())
		if err != nil {
			t.Fatalf("load kubeconfig %s: %v", s.Kubeconfig(), err)
		}
		kc := kubernetes.NewForConfigOrDie(cfg)
		if nodes, err := kc.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err != nil || len(nodes.Items) != 1 {
			t.Fatalf("list nodes via kubeconfig: %v (%d nodes)", err, len(nodes.Items))
		}

		// Outage: the API server goes away, etcd (and the data) stays.
		stopStart := time.Now()
		s.Stop()
		t.Logf("Stop took %v", time.Since(stopStart).Round(time.Millisecond))
		if alive(apiPID) {
			t.Fatalf("kube-apiserver pid %d still running after Stop", apiPID)
		}
		if !alive(etcdPID) {
			t.Fatalf("etcd pid %d stopped by Stop", etcdPID)
		}
		short, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err = c.CoreV1().Nodes().Get(short, "node-a", metav1.GetOptions{})
		cancel()
		if err == nil {
			t.Fatal("Get succeeded while the API server was stopped")
		}

		restartStart := time.Now()
		s.Restart(t)
		t.Logf("Restart took %v", time.Since(restartStart).Round(time.Millisecond))
		_, apiPID2 := s.PIDs()
		pids = append(pids, apiPID2)
		if apiPID2 == apiPID || !alive(apiPID2) {
			t.Fatalf("kube-apiserver after Restart: pid %d (before: %d)", apiPID2, apiPID)
		}
		// The same client works again, and the data survived.
		checkObjects(t, c, ns, svc.Spec.ClusterIP)
		if _, err := c.CoreV1().Services(ns).Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "after-restart"},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 53, Protocol: corev1.ProtocolUDP}}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create service after restart: %v", err)
		}
	})
	if !ok || len(pids) == 0 {
		return // failed (Start skips only when Require does)
	}
	// The subtest's cleanup has run: every process it started is gone.
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("pid %d still exists after cleanup", pid)
		}
	}
}

// checkObjects lists the test's objects back.
func checkObjects(t *testing.T, c kubernetes.Interface, ns, clusterIP string) {
	t.Helper()
	ctx := context.Background()
	svcs, err := c.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
	if err != nil || len(svcs.Items) == 0 || svcs.Items[0].Name != "web" || svcs.Items[0].Spec.ClusterIP != clusterIP {
		t.Fatalf("list services: %v %+v", err, svcs)
	}
	slices, err := c.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=web"})
	if err != nil || len(slices.Items) != 1 || slices.Items[0].Endpoints[0].Addresses[0] != "10.244.1.5" {
		t.Fatalf("list endpointslices: %v %+v", err, slices)
	}
	nodes, err := c.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: "topology.kubernetes.io/zone=z1"})
	if err != nil || len(nodes.Items) != 1 || nodes.Items[0].Name != "node-a" {
		t.Fatalf("list nodes: %v %+v", err, nodes)
	}
}

// alive reports whether /proc/<pid> exists (a reaped process has none).
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	_, err := os.Stat("/proc/" + strconv.Itoa(pid))
	return err == nil
}

// TestProxyAndCompaction: a client through a Proxy is cut off and
// reconnected while the server keeps serving others; after CompactEtcd, a
// server without watch cache answers a watch from an older resource
// version with 410 Gone, and logs etcd's compaction error.
func TestProxyAndCompaction(t *testing.T) {
	s := apiserver.Start(t, apiserver.WithArgs("--watch-cache=false"))
	p := s.StartProxy(t)
	ctx := context.Background()
	direct := s.Client()
	viaProxy, err := kubernetes.NewForConfig(p.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := viaProxy.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); err != nil {
		t.Fatalf("through the proxy: %v", err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", p.Kubeconfig())
	if err != nil || cfg.Host != p.URL {
		t.Fatalf("proxy kubeconfig: %v, host %q", err, cfg.Host)
	}

	p.Cut()
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, err = viaProxy.CoreV1().Namespaces().Get(short, "default", metav1.GetOptions{})
	cancel()
	if err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("through a cut proxy: %v, want connection refused", err)
	}
	ns, err := direct.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("directly while the proxy is cut: %v", err)
	}
	p.Heal(t)
	if _, err := viaProxy.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); err != nil {
		t.Fatalf("through the healed proxy: %v", err)
	}

	old := ns.ResourceVersion
	if _, err := direct.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "later"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rev := s.CompactEtcd(t)
	t.Logf("compacted at revision %d; watching from %s", rev, old)
	w, err := direct.CoreV1().Namespaces().Watch(ctx, metav1.ListOptions{ResourceVersion: old})
	if err == nil {
		select {
		case e := <-w.ResultChan():
			err = apierrors.FromObject(e.Object)
			if e.Type != watch.Error {
				err = fmt.Errorf("first event %s, want an error", e.Type)
			}
		case <-time.After(10 * time.Second):
			err = errors.New("no event")
		}
		w.Stop()
	}
	if !apierrors.IsResourceExpired(err) && !apierrors.IsGone(err) {
		t.Fatalf("watch from a compacted resource version: %v, want 410 Gone", err)
	}
	log, _ := os.ReadFile(filepath.Join(s.LogDir(), "kube-apiserver.log"))
	if !strings.Contains(string(log), "mvcc: required revision has been compacted") {
		t.Error("kube-apiserver's log does not show the compaction error")
	}
}
