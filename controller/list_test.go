package controller

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
)

// answering serves one response to every request.
func answering(t *testing.T, status int, contentType string, body []byte) rest.Interface {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(status)
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	c, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	return c.CoreV1().RESTClient()
}

type tagged struct {
	runtime.Object
	n int
}

// streamList decodes what the typed client decodes, item by item, but for
// the metadata the caches do not keep, and hands each to keep in order.
func TestStreamListDecodesEveryItem(t *testing.T) {
	svcs, _ := servedCluster(50, 2)
	c := answering(t, http.StatusOK, "application/vnd.kubernetes.protobuf", encode(t, svcs))
	var kept []*corev1.Service
	obj, err := streamList(context.Background(), c, "services", "ServiceList", metav1.ListOptions{}, serviceMeta, func(s *corev1.Service) runtime.Object {
		kept = append(kept, s)
		return tagged{s, len(kept)}
	})
	if err != nil {
		t.Fatal(err)
	}
	l := obj.(*metav1.List)
	if l.ResourceVersion != svcs.ResourceVersion || len(l.Items) != len(svcs.Items) || len(kept) != len(svcs.Items) {
		t.Fatalf("list at %q with %d items (%d kept), want %q with %d", l.ResourceVersion, len(l.Items), len(kept), svcs.ResourceVersion, len(svcs.Items))
	}
	for i := range svcs.Items {
		want := svcs.Items[i].DeepCopy()
		want.TypeMeta = metav1.TypeMeta{}  // list items carry none
		serviceMeta.trim(&want.ObjectMeta) // the rest is not decoded
		if !reflect.DeepEqual(kept[i], want) {
			t.Fatalf("item %d:\n%+v\nwant\n%+v", i, kept[i], want)
		}
		if it, ok := l.Items[i].Object.(tagged); !ok || it.n != i+1 || it.Object != kept[i] {
			t.Fatalf("item %d of the list is %#v, not keep's result", i, l.Items[i].Object)
		}
	}
}

// streamedList streams protobuf lists, transforming and wrapping each
// item, and leaves any other answer to the typed client's List.
func TestStreamedListFallsBackToTheTypedList(t *testing.T) {
	svcs, _ := servedCluster(5, 1)
	for _, c := range []struct {
		contentType string
		body        []byte
		streamed    bool
	}{
		{"application/vnd.kubernetes.protobuf", encode(t, svcs), true},
		{"application/json", []byte(runtime.EncodeOrDie(jsonCodec, svcs)), false},
	} {
		rc := answering(t, http.StatusOK, c.contentType, c.body)
		typed := kubernetes.New(rc).CoreV1().Services("")
		transformed := 0
		list := streamedList(rc, "services", "ServiceList", serviceMeta, func(*corev1.Service) { transformed++ },
			func(s *corev1.Service) runtime.Object { return tagged{s, transformed} }, listOf(typed.List))
		obj, err := list(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		switch l := obj.(type) {
		case *metav1.List:
			if !c.streamed || transformed != len(svcs.Items) || len(l.Items) != len(svcs.Items) {
				t.Errorf("%s: streamed %d items, %d transformed", c.contentType, len(l.Items), transformed)
			}
			if _, ok := l.Items[0].Object.(tagged); !ok {
				t.Errorf("%s: item %T, not wrapped", c.contentType, l.Items[0].Object)
			}
		case *corev1.ServiceList:
			if c.streamed || transformed != 0 || len(l.Items) != len(svcs.Items) {
				t.Errorf("%s: typed list of %d items, %d transformed", c.contentType, len(l.Items), transformed)
			}
		default:
			t.Errorf("%s: a %T", c.contentType, obj)
		}
	}
}

// Anything but a whole protobuf list of the expected kind is an error, and
// the API server's errors keep their meaning (the reflector relists on
// 410 Gone).
func TestStreamListErrors(t *testing.T) {
	svcs, _ := servedCluster(3, 1)
	whole := encode(t, svcs)
	gone, _ := runtime.Encode(protobufCodec, &metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status: metav1.StatusFailure, Reason: metav1.StatusReasonExpired, Code: http.StatusGone, Message: "too old resource version"})
	for _, c := range []struct {
		name        string
		status      int
		contentType string
		body        []byte
		is          func(error) bool
	}{
		{"json", http.StatusOK, "application/json", []byte(`{"kind":"ServiceList","apiVersion":"v1","metadata":{},"items":[]}`),
			func(err error) bool { return errors.Is(err, errNotProtobuf) }},
		{"truncated", http.StatusOK, "application/vnd.kubernetes.protobuf", whole[:len(whole)-10],
			func(err error) bool { return errors.Is(err, io.ErrUnexpectedEOF) }},
		{"empty", http.StatusOK, "application/vnd.kubernetes.protobuf", protobufMagic, nil},
		{"another kind", http.StatusOK, "application/vnd.kubernetes.protobuf", encode(t, &corev1.NodeList{}), nil},
		{"gone", http.StatusGone, "application/vnd.kubernetes.protobuf", gone, apierrors.IsResourceExpired},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := streamList(context.Background(), answering(t, c.status, c.contentType, c.body), "services", "ServiceList",
				metav1.ListOptions{}, serviceMeta, func(s *corev1.Service) runtime.Object { return s })
			if err == nil || (c.is != nil && !c.is(err)) {
				t.Errorf("err = %v", err)
			}
		})
	}
}

// The informers list through streamList: every object reaches the caches
// transformed and unwrapped, whether the API server answers in one list,
// in pages, or in JSON (the typed client's List then).
func TestInformersListStreamed(t *testing.T) {
	svcs, sls := servedCluster(7, 3)
	for _, mode := range []string{"whole", "pages", "json"} {
		t.Run(mode, func(t *testing.T) {
			lists := map[string]runtime.Object{"/api/v1/services": svcs, "/apis/discovery.k8s.io/v1/endpointslices": sls,
				"/api/v1/nodes": &corev1.NodeList{ListMeta: metav1.ListMeta{ResourceVersion: "1"}}}
			var mu sync.Mutex
			requests := map[string]int{}
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				q := r.URL.Query()
				if q.Get("watch") == "true" || q.Get("sendInitialEvents") == "true" {
					w.WriteHeader(http.StatusBadRequest) // no WatchList; watches fail and are retried
					return
				}
				list, ok := lists[r.URL.Path]
				if !ok {
					http.NotFound(w, r)
					return
				}
				mu.Lock()
				requests[r.URL.Path]++
				mu.Unlock()
				if mode == "json" {
					w.Header().Set("Content-Type", "application/json")
					w.Write([]byte(runtime.EncodeOrDie(jsonCodec, list)))
					return
				}
				if mode == "pages" {
					list = page(t, list, q.Get("continue"))
				}
				w.Header().Set("Content-Type", "application/vnd.kubernetes.protobuf")
				w.Write(encode(t, list))
			}))
			defer srv.Close()
			c, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL})
			if err != nil {
				t.Fatal(err)
			}
			s, stop := syncedSource(t, c)
			defer stop()
			in := s.Inputs()
			if len(in.Services) != len(svcs.Items) || len(in.EndpointSlices) != len(sls.Items) {
				t.Fatalf("%d services and %d slices in the caches, want %d and %d", len(in.Services), len(in.EndpointSlices), len(svcs.Items), len(sls.Items))
			}
			// One request per list (per page), two in JSON: streamList's,
			// then the typed client's.
			mu.Lock()
			want := map[string]int{"whole": 1, "pages": (len(svcs.Items) + 1) / 2, "json": 2}[mode]
			if n := requests["/api/v1/services"]; n != want {
				t.Errorf("%d list requests for services, want %d", n, want)
			}
			mu.Unlock()
			for _, o := range in.Services {
				if o.ManagedFields != nil || o.Namespace == "" {
					t.Fatalf("service %s not transformed: %+v", o.Name, o.ObjectMeta)
				}
			}
			for _, o := range in.EndpointSlices {
				if o.ManagedFields != nil || o.UID != "" || o.Labels[discoveryv1.LabelServiceName] == "" {
					t.Fatalf("slice %s not transformed: %+v", o.Name, o.ObjectMeta)
				}
			}
		})
	}
}

// jsonCodec encodes as the API server does in JSON, kind included.
var jsonCodec = scheme.Codecs.LegacyCodec(corev1.SchemeGroupVersion, discoveryv1.SchemeGroupVersion)

// page is the page of list after token ("" for the first), two items
// long, with the token of the next one.
func page(t *testing.T, list runtime.Object, token string) runtime.Object {
	t.Helper()
	from, _ := strconv.Atoi(token)
	v := reflect.ValueOf(list).Elem()
	items := v.FieldByName("Items")
	to := min(from+2, items.Len())
	out := reflect.New(v.Type())
	out.Elem().FieldByName("Items").Set(items.Slice(from, to))
	lm := out.Elem().FieldByName("ListMeta").Addr().Interface().(*metav1.ListMeta)
	lm.ResourceVersion = "100000000"
	if to < items.Len() {
		lm.Continue = fmt.Sprint(to)
	}
	return out.Interface().(runtime.Object)
}

// Inputs makes a list again only for a store that changed: a sync after an
// EndpointSlice change reuses the list of Services.
func TestInputsListAgainOnlyWhatChanged(t *testing.T) {
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "t", Name: "web-1", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.1"}}},
	}
	c := fake.NewClientset(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "t", Name: "web"}}, sl.DeepCopy())
	s, stop := syncedSource(t, c)
	defer stop()
	a, b := s.Inputs(), s.Inputs()
	if len(a.Services) != 1 || len(a.EndpointSlices) != 1 {
		t.Fatalf("%d services, %d slices", len(a.Services), len(a.EndpointSlices))
	}
	if &a.Services[0] != &b.Services[0] || &a.EndpointSlices[0] != &b.EndpointSlices[0] {
		t.Error("lists made again with no change")
	}
	sl.Endpoints[0].Addresses[0] = "10.0.0.2"
	sl.ResourceVersion = "2" // the fake keeps none; an update without a new one looks like a resync
	if _, err := c.DiscoveryV1().EndpointSlices("t").Update(context.Background(), sl, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for s.Inputs().EndpointSlices[0].Endpoints[0].Addresses[0] != "10.0.0.2" {
		if time.Now().After(deadline) {
			t.Fatal("the slice's change never reached Inputs")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := s.Inputs(); &got.Services[0] != &a.Services[0] {
		t.Error("the list of Services was made again after a slice changed")
	}
}

// Decoding an object with its metadata cut down (withTrimmedMeta), then
// transforming it, gives what decoding it whole and transforming it gives:
// random objects with every field set, labels and annotations included.
func TestTrimmedMetaDecodesToTheTransformed(t *testing.T) {
	s := &InformerSource{}
	for seed := range int64(100) {
		in, _ := randomInputs(seed)
		for _, svc := range in.Services {
			sameTransformed(t, svc, serviceMeta, s.transformService)
		}
		for _, sl := range in.EndpointSlices {
			sameTransformed(t, sl, sliceMeta, s.transformEndpointSlice)
		}
	}
}

type marshaler interface {
	Marshal() ([]byte, error)
	Unmarshal([]byte) error
}

// sameTransformed fails unless obj's encoding, decoded with its metadata
// cut down to keep and transformed, equals it decoded whole and
// transformed.
func sameTransformed[T any, P interface {
	*T
	marshaler
}](t *testing.T, obj P, keep metaKeep, transform func(any) (any, error)) {
	t.Helper()
	data, err := obj.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	trimmed, err := withTrimmedMeta(nil, data, keep)
	if err != nil {
		t.Fatal(err)
	}
	if len(trimmed) >= len(data) {
		t.Errorf("nothing cut from %d bytes", len(data))
	}
	whole, cut := P(new(T)), P(new(T))
	if err := whole.Unmarshal(data); err != nil {
		t.Fatal(err)
	}
	if err := cut.Unmarshal(trimmed); err != nil {
		t.Fatal(err)
	}
	want, _ := transform(whole)
	got, _ := transform(cut)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%T decoded from its cut-down metadata:\n%+v\nwant\n%+v", obj, got, want)
	}
}
