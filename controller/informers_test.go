package controller

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/svcproxy/svcproxy/apiserver"
	"github.com/svcproxy/svcproxy/proxy"
	"github.com/svcproxy/svcproxy/sandbox"
)

// objects creates, through c, the objects the informer test watches.
type objects struct {
	t *testing.T
	c kubernetes.Interface
}

func (o objects) service(name string) {
	o.t.Helper()
	if _, err := o.c.CoreV1().Services("t").Create(context.Background(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}},
	}, metav1.CreateOptions{}); err != nil {
		o.t.Fatal(err)
	}
}

func (o objects) slice(svc, addr string) {
	o.t.Helper()
	ctx := context.Background()
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: svc + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{addr}}},
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	api := o.c.DiscoveryV1().EndpointSlices("t")
	if old, err := api.Get(ctx, sl.Name, metav1.GetOptions{}); err == nil {
		sl.ResourceVersion = old.ResourceVersion
		if _, err := api.Update(ctx, sl, metav1.UpdateOptions{}); err != nil {
			o.t.Fatal(err)
		}
		return
	}
	if _, err := api.Create(ctx, sl, metav1.CreateOptions{}); err != nil {
		o.t.Fatal(err)
	}
}

func (o objects) nodeZone(zone string) {
	o.t.Helper()
	ctx := context.Background()
	n, err := o.c.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
	if err != nil {
		n = &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}}
	}
	n.Labels = map[string]string{corev1.LabelTopologyZone: zone}
	if n.ResourceVersion == "" {
		_, err = o.c.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
	} else {
		_, err = o.c.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
	}
	if err != nil {
		o.t.Fatal(err)
	}
}

// view summarises what a source holds: the test's services and slice
// addresses, the node's zone.
func view(in proxy.Inputs) string {
	var parts []string
	for _, s := range in.Services {
		if s.Namespace == "t" {
			parts = append(parts, "svc "+s.Name)
		}
	}
	for _, s := range in.EndpointSlices {
		if s.Namespace == "t" {
			parts = append(parts, fmt.Sprintf("slice %s %s", s.Name, s.Endpoints[0].Addresses[0]))
		}
	}
	for _, n := range in.Nodes {
		parts = append(parts, "node "+n.Name+" "+n.Labels[corev1.LabelTopologyZone])
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

// TestInformerSourceRelistsAfterExpiredWatch: a real kube-apiserver, and an
// InformerSource reaching it through a proxy that the test cuts. While
// cut, a Service is deleted and another created, an EndpointSlice and the
// Node change; then the API server loses the history the source would
// resume its watches from — etcd compacted with no watch cache, or the API
// server restarted (its new watch cache starts after the changes). On
// reconnection every watch is answered with 410 Gone and every informer
// relists. The source keeps its old view throughout the partition and
// converges to the new one after; WatchStats counts one expiry and one more
// list per resource, and, for the compaction, kube-apiserver's log shows
// the compacted-revision error it answered with.
func TestInformerSourceRelistsAfterExpiredWatch(t *testing.T) {
	sandbox.Require(t)
	apiserver.Require(t)
	for _, v := range []struct {
		name    string
		opts    []apiserver.Option
		disrupt func(t *testing.T, s *apiserver.Server)
		logged  string // in kube-apiserver's log afterwards
	}{
		{"etcd-compaction", []apiserver.Option{apiserver.WithArgs("--watch-cache=false")},
			func(t *testing.T, s *apiserver.Server) { t.Logf("etcd compacted at revision %d", s.CompactEtcd(t)) },
			"mvcc: required revision has been compacted"},
		{"apiserver-restart", nil, func(t *testing.T, s *apiserver.Server) { s.Restart(t) }, ""},
	} {
		t.Run(v.name, func(t *testing.T) {
			start := time.Now()
			ns := sandbox.New(t, "api")
			srv := apiserver.StartInNetNS(t, ns, v.opts...)
			p := srv.StartProxy(t)
			o := objects{t: t, c: srv.Client()}
			if _, err := o.c.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "t"}}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			o.nodeZone("z1")
			o.service("web")
			o.slice("web", "10.244.1.11")
			o.service("gone")
			o.slice("gone", "10.244.1.13")

			client, err := kubernetes.NewForConfig(p.RESTConfig())
			if err != nil {
				t.Fatal(err)
			}
			src := NewInformerSource(client, "node-a", 0)
			var notified atomic.Int64
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if err := src.Start(ctx, func(string) { notified.Add(1) }); err != nil {
				t.Fatal(err)
			}
			syncCtx, syncCancel := context.WithTimeout(ctx, 30*time.Second)
			defer syncCancel()
			if !src.WaitForSync(syncCtx) {
				t.Fatal("no first complete view")
			}
			before := "node node-a z1, slice gone-1 10.244.1.13, slice web-1 10.244.1.11, svc gone, svc web"
			if got := view(src.Inputs()); got != before {
				t.Fatalf("first view: %s", got)
			}
			for kind, st := range src.WatchStats() {
				if st != (WatchStats{Lists: 1}) {
					t.Fatalf("%s after the first list: %+v", kind, st)
				}
			}

			// A watch cut within a second of its start, with no event, is
			// "very short": client-go relists for it, with no 410. Cut an
			// established watch.
			time.Sleep(1500 * time.Millisecond)
			p.Cut()
			cutAt := time.Now()
			if err := o.c.CoreV1().Services("t").Delete(context.Background(), "gone", metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			o.service("fresh")
			o.slice("fresh", "10.244.1.14")
			o.slice("web", "10.244.1.12")
			o.nodeZone("z2")
			n := notified.Load()
			time.Sleep(time.Second)
			if got := view(src.Inputs()); got != before || notified.Load() != n {
				t.Fatalf("the view changed while cut off: %s", got)
			}
			v.disrupt(t, srv)
			p.Heal(t)
			healedAt := time.Now()

			after := "node node-a z2, slice fresh-1 10.244.1.14, slice gone-1 10.244.1.13, slice web-1 10.244.1.12, svc fresh, svc web"
			deadline := time.Now().Add(90 * time.Second)
			for {
				got, stats := view(src.Inputs()), src.WatchStats()
				done := got == after
				for _, st := range stats {
					done = done && st.Expired >= 1 && st.Lists >= 2
				}
				if done {
					t.Logf("converged %v after healing (partition %v); stats %+v; %v in all",
						time.Since(healedAt).Round(100*time.Millisecond), healedAt.Sub(cutAt).Round(100*time.Millisecond),
						stats, time.Since(start).Round(100*time.Millisecond))
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("after healing: %s\nwant %s\nstats %+v", got, after, stats)
				}
				time.Sleep(200 * time.Millisecond)
			}
			if notified.Load() == n {
				t.Error("the relist notified no change")
			}
			if v.logged != "" {
				log, err := os.ReadFile(filepath.Join(srv.LogDir(), "kube-apiserver.log"))
				if err != nil || !strings.Contains(string(log), v.logged) {
					t.Errorf("kube-apiserver's log does not show %q (%v)", v.logged, err)
				}
			}
		})
	}
}
