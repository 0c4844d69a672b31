package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/svcproxy/svcproxy/apiserver"
	"github.com/svcproxy/svcproxy/sandbox"
)

// Direct setup (--setup direct, the default).
//
// kube-apiserver 1.36 allocates a ClusterIP by creating an IPAddress
// object, and after each one it counts every IPAddress in its informer
// cache twice, for two gauges (ipallocator.(*Allocator).Used, called for
// setAllocated and through Free for setAvailable, whether metrics are on or
// not). Creating N Services costs O(N²): at 5k Services, 61 % of the API
// server's CPU was Used; at 50k the setup took ~80 minutes. No flag turns
// it off (MultiCIDRServiceAllocator and DisableAllocatorDualWrite are
// locked on).
//
// So the Services are stored the way the API server would store them,
// without its allocator: each is first created with dryRun=All (admission,
// defaulting, validation, uid, creationTimestamp and managedFields, as in a
// real create, with the ClusterIP and NodePorts given here instead of
// allocated), then written to etcd in one transaction with the IPAddress
// object the allocator would have created, so that later allocations (the
// probe Services) avoid those addresses. The API server's watch cache picks
// them up from etcd like any other write. LoadBalancer statuses and
// EndpointSlices go through the API as before. What the daemon sees is the
// same as with --setup api: the same objects with the same fields, served
// by the same API server. Two differences, invisible to the daemon: the
// NodePort allocator's bitmap learns the ports only at its next repair
// pass (the probe Services need none), and the IPAddress objects carry no
// managedFields.

// serviceCIDR is the API server's --service-cluster-ip-range, parsed.
var serviceCIDR = netip.MustParsePrefix(apiserver.ServiceClusterIPRange)

// clusterIPs returns n distinct addresses drawn at random, with a fixed
// seed, from the part of the service range the API server's allocator
// draws from (it keeps the lowest 256 for addresses users ask for).
func clusterIPs(n int) ([]string, error) {
	base := binary.BigEndian.Uint32(serviceCIDR.Addr().AsSlice())
	size := uint32(1) << (32 - serviceCIDR.Bits())
	const low = 257 // network address, and the allocator's static band
	if uint32(n) > size-low-1 {
		return nil, fmt.Errorf("%d Services do not fit in %s", n, serviceCIDR)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	seen := make(map[uint32]bool, n)
	out := make([]string, 0, n)
	for len(out) < n {
		off := low + rng.Uint32N(size-low-1) // not the broadcast address
		if seen[off] {
			continue
		}
		seen[off] = true
		var a [4]byte
		binary.BigEndian.PutUint32(a[:], base+off)
		out = append(out, netip.AddrFrom4(a).String())
	}
	return out, nil
}

// etcdClient writes to the API server's etcd through etcd's JSON gateway
// (/v3/kv/txn), from inside the namespace etcd runs in.
type etcdClient struct {
	url    string
	client *http.Client
}

// newEtcdClient finds the API server's etcd from the command line it was
// started with (the first line of its log; package apiserver does not
// export the address).
func newEtcdClient(srv *apiserver.Server, ns *sandbox.NS, conns int) (*etcdClient, error) {
	data, err := os.ReadFile(filepath.Join(srv.LogDir(), "kube-apiserver.log"))
	if err != nil {
		return nil, err
	}
	line, _, _ := strings.Cut(string(data), "\n")
	var url string
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, "--etcd-servers="); ok {
			url, _, _ = strings.Cut(v, ",")
		}
	}
	if url == "" {
		return nil, fmt.Errorf("no --etcd-servers in the API server's command line: %.200s", line)
	}
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := ns.Do(func() error {
			var err error
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	return &etcdClient{url: url, client: &http.Client{Timeout: 30 * time.Second,
		Transport: &http.Transport{DialContext: dial, MaxIdleConnsPerHost: conns}}}, nil
}

type etcdKV struct {
	key   string
	value []byte
}

// create writes kvs in one transaction that fails unless none of the keys
// exists.
func (e *etcdClient) create(ctx context.Context, kvs []etcdKV) error {
	type compare struct {
		Key            []byte `json:"key"`
		Target         string `json:"target"`
		Result         string `json:"result"`
		CreateRevision int64  `json:"create_revision"`
	}
	type put struct {
		Key   []byte `json:"key"`
		Value []byte `json:"value"`
	}
	type op struct {
		Put put `json:"request_put"`
	}
	var txn struct {
		Compare []compare `json:"compare"`
		Success []op      `json:"success"`
	}
	for _, kv := range kvs {
		txn.Compare = append(txn.Compare, compare{Key: []byte(kv.key), Target: "CREATE", Result: "EQUAL"})
		txn.Success = append(txn.Success, op{put{Key: []byte(kv.key), Value: kv.value}})
	}
	body, err := json.Marshal(txn) // []byte marshals as base64, as the gateway wants
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url+"/v3/kv/txn", bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var res struct {
		Succeeded bool `json:"succeeded"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(out, &res) != nil {
		return fmt.Errorf("etcd txn: %s: %.300s", resp.Status, out)
	}
	if !res.Succeeded {
		return fmt.Errorf("etcd txn: a key already exists (first %s)", kvs[0].key)
	}
	return nil
}

// storageCodec encodes objects as the API server stores them in etcd:
// protobuf behind the "k8s\0" magic, in a runtime.Unknown naming the
// version and kind (no encryption at rest on the test API server).
var storageCodec = protobuf.NewSerializer(scheme.Scheme, scheme.Scheme)

func storageBytes(obj runtime.Object, gvk schema.GroupVersionKind) ([]byte, error) {
	// The storage layer stores no resource version (etcd's revision is it).
	if m, ok := obj.(metav1.Object); ok {
		m.SetResourceVersion("")
		m.SetSelfLink("")
	}
	obj.GetObjectKind().SetGroupVersionKind(gvk)
	defer obj.GetObjectKind().SetGroupVersionKind(schema.GroupVersionKind{})
	var buf bytes.Buffer
	if err := storageCodec.Encode(obj, &buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Keys under the API server's default --etcd-prefix.
func serviceKey(ns, name string) string { return "/registry/services/specs/" + ns + "/" + name }
func ipAddressKey(ip string) string     { return "/registry/ipaddresses/" + ip }

// unmanageAllocated removes from the creator's managedFields entry the
// fields the allocator would have set (spec.clusterIP, a port's nodePort,
// spec.healthCheckNodePort): given here, they were recorded as the
// client's, which a plain create, where the API server allocates them,
// does not do. The entry then has the bytes it would have had.
func unmanageAllocated(svc *corev1.Service) error {
	for i := range svc.ManagedFields {
		mf := &svc.ManagedFields[i]
		if mf.Subresource != "" || mf.FieldsV1 == nil {
			continue
		}
		var f map[string]any
		if err := json.Unmarshal(mf.FieldsV1.Raw, &f); err != nil {
			return err
		}
		spec, _ := f["f:spec"].(map[string]any)
		delete(spec, "f:clusterIP")
		delete(spec, "f:healthCheckNodePort")
		ports, _ := spec["f:ports"].(map[string]any)
		for _, p := range ports {
			if p, ok := p.(map[string]any); ok {
				delete(p, "f:nodePort")
			}
		}
		raw, err := json.Marshal(f) // keys sorted, as the API server writes them
		if err != nil {
			return err
		}
		mf.FieldsV1.Raw = raw
	}
	return nil
}

// serviceRecords returns the etcd records of a Service as the API server's
// dry run returned it, and of the IPAddress its ClusterIP needs.
func serviceRecords(svc *corev1.Service) ([]etcdKV, error) {
	if err := unmanageAllocated(svc); err != nil {
		return nil, err
	}
	sv, err := storageBytes(svc, corev1.SchemeGroupVersion.WithKind("Service"))
	if err != nil {
		return nil, err
	}
	// What the allocator's createIPAddress writes.
	ip := &networkingv1.IPAddress{
		ObjectMeta: metav1.ObjectMeta{
			Name:              svc.Spec.ClusterIP,
			UID:               uuid.NewUUID(),
			CreationTimestamp: metav1.Now(),
			Labels: map[string]string{
				networkingv1.LabelIPAddressFamily: string(corev1.IPv4Protocol),
				networkingv1.LabelManagedBy:       "ipallocator.k8s.io",
			},
		},
		Spec: networkingv1.IPAddressSpec{ParentRef: &networkingv1.ParentReference{
			Resource: "services", Namespace: svc.Namespace, Name: svc.Name}},
	}
	iv, err := storageBytes(ip, networkingv1.SchemeGroupVersion.WithKind("IPAddress"))
	if err != nil {
		return nil, err
	}
	return []etcdKV{{ipAddressKey(ip.Name), iv}, {serviceKey(svc.Namespace, svc.Name), sv}}, nil
}
