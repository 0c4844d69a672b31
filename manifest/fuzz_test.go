package manifest

import (
	"reflect"
	"testing"
)

// FuzzDecode checks that Decode does not panic on arbitrary input and is
// deterministic: decoding the same bytes twice gives equal objects and
// problems.
func FuzzDecode(f *testing.F) {
	f.Add([]byte("apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports:\n  - port: 80\n    targetPort: http\n"))
	f.Add([]byte("---\n# comment\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s}\naddressType: IPv4\nendpoints:\n- addresses: [10.0.0.1]\n---\nkind: Node\n"))
	f.Add([]byte(`{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Node","metadata":{"name":"n"}},null,{"apiVersion":"apps/v1","kind":"Deployment"}]}`))
	f.Add([]byte("apiVersion: v1\nkind: ServiceList\nitems:\n- metadata: {name: a}\n--- bad\nlabels: [unclosed\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		o1, p1 := Decode("fuzz.yaml", data)
		o2, p2 := Decode("fuzz.yaml", data)
		if !reflect.DeepEqual(o1, o2) {
			t.Errorf("objects differ between runs:\n%v\n%v", names(o1), names(o2))
		}
		if !reflect.DeepEqual(p1, p2) {
			t.Errorf("problems differ between runs:\n%q\n%q", p1, p2)
		}
		for _, p := range p1 {
			if p.File != "fuzz.yaml" || p.Reason == "" {
				t.Errorf("bad problem %#v", p)
			}
		}
		for _, s := range o1.Services {
			if s == nil || s.Kind != "Service" {
				t.Errorf("bad service %#v", s)
			}
		}
	})
}
