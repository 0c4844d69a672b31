package manifest

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// names lists objects as "kind/name" in Objects order.
func names(o *Objects) []string {
	var out []string
	for _, s := range o.Services {
		out = append(out, "Service/"+s.Name)
	}
	for _, e := range o.EndpointSlices {
		out = append(out, "EndpointSlice/"+e.Name)
	}
	for _, n := range o.Nodes {
		out = append(out, "Node/"+n.Name)
	}
	return out
}

// wantProblem matches a Problem: File and Doc exactly, Reason by substring.
type wantProblem struct {
	file, doc, reason string
}

func checkProblems(t *testing.T, got []Problem, want []wantProblem) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d problems %q, want %d", len(got), got, len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.File != w.file || g.Doc != w.doc || !strings.Contains(g.Reason, w.reason) {
			t.Errorf("problem %d = %q, want file %q doc %q reason containing %q", i, g, w.file, w.doc, w.reason)
		}
	}
}

func TestLoad(t *testing.T) {
	tests := []struct {
		name     string
		paths    []string
		want     []string
		problems []wantProblem
	}{
		{
			name:  "multi-document YAML",
			paths: []string{"testdata/multi.yaml"},
			want:  []string{"Service/web", "EndpointSlice/web-abc12", "Node/node-a"},
		},
		{
			name:  "JSON file",
			paths: []string{"testdata/service.json"},
			want:  []string{"Service/api"},
		},
		{
			name:  "lists with mixed items",
			paths: []string{"testdata/list.yaml"},
			want: []string{
				"Service/list-svc", "Service/typed-1", "Service/typed-2",
				"EndpointSlice/list-svc-1", "EndpointSlice/typed-slice",
				"Node/list-node", "Node/typed-node",
			},
			problems: []wantProblem{
				{"testdata/list.yaml", "0.items[2]", `unknown kind "/v1, Kind=ConfigMap": skipped`},
			},
		},
		{
			name:  "directory with nested dirs, hidden and non-manifest files",
			paths: []string{"testdata/dir"},
			want:  []string{"Service/dir-a", "Service/dir-sub-d", "Service/dir-z", "EndpointSlice/dir-b", "Node/dir-c"},
		},
		{
			name:  "unknown kinds skipped, others loaded",
			paths: []string{"testdata/unknown.yaml"},
			want:  []string{"Service/before", "Node/after"},
			problems: []wantProblem{
				{"testdata/unknown.yaml", "1", `unknown kind "apps/v1, Kind=Deployment": skipped`},
				{"testdata/unknown.yaml", "2", `unknown kind "example.com/v1, Kind=Widget": skipped`},
			},
		},
		{
			name:  "malformed document in the middle",
			paths: []string{"testdata/malformed.yaml"},
			want:  []string{"Service/first", "Service/third"},
			problems: []wantProblem{
				{"testdata/malformed.yaml", "1", "invalid YAML: "},
			},
		},
		{
			name:  "empty documents",
			paths: []string{"testdata/empty.yaml"},
			want:  []string{"Node/lonely"},
		},
		{
			name:  "several paths keep order",
			paths: []string{"testdata/service.json", "testdata/multi.yaml", "testdata/unknown.yaml"},
			want:  []string{"Service/api", "Service/web", "Service/before", "EndpointSlice/web-abc12", "Node/node-a", "Node/after"},
			problems: []wantProblem{
				{"testdata/unknown.yaml", "1", "Deployment"},
				{"testdata/unknown.yaml", "2", "Widget"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, problems, err := Load(tt.paths...)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if got := names(objs); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("objects = %q, want %q", got, tt.want)
			}
			checkProblems(t, problems, tt.problems)
		})
	}
}

func TestLoadDecodesFields(t *testing.T) {
	objs, _, err := Load("testdata/multi.yaml", "testdata/service.json")
	if err != nil {
		t.Fatal(err)
	}
	web := objs.Services[0]
	if web.Namespace != "default" || web.Spec.Ports[0].Port != 80 || web.Spec.Ports[0].TargetPort.IntValue() != 8080 {
		t.Errorf("web service decoded wrongly: %+v", web.Spec)
	}
	if web.APIVersion != "v1" || web.Kind != "Service" {
		t.Errorf("web TypeMeta = %+v", web.TypeMeta)
	}
	es := objs.EndpointSlices[0]
	if es.AddressType != "IPv4" || es.Endpoints[0].Addresses[0] != "10.0.0.1" || !*es.Endpoints[0].Conditions.Ready {
		t.Errorf("endpoint slice decoded wrongly: %+v", es)
	}
	if es.APIVersion != "discovery.k8s.io/v1" || es.Kind != "EndpointSlice" {
		t.Errorf("slice TypeMeta = %+v", es.TypeMeta)
	}
	if api := objs.Services[1]; api.Spec.ClusterIP != "10.96.0.20" || api.Spec.Ports[0].TargetPort.StrVal != "grpc" {
		t.Errorf("api service decoded wrongly: %+v", api.Spec)
	}

	lists, _, err := Load("testdata/list.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range lists.Services {
		if s.APIVersion != "v1" || s.Kind != "Service" {
			t.Errorf("service %s TypeMeta = %+v", s.Name, s.TypeMeta)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name  string
		paths []string
	}{
		{"missing file", []string{"testdata/does-not-exist.yaml"}},
		{"missing after existing", []string{"testdata/multi.yaml", filepath.Join(dir, "nope")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, problems, err := Load(tt.paths...)
			if !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("Load error = %v, want ErrNotExist", err)
			}
			if objs != nil || problems != nil {
				t.Errorf("Load returned objects %v and problems %v with an error", objs, problems)
			}
		})
	}
}

func TestLoadNoPaths(t *testing.T) {
	objs, problems, err := Load()
	if err != nil || len(problems) != 0 || len(names(objs)) != 0 {
		t.Errorf("Load() = %v, %v, %v; want empty", names(objs), problems, err)
	}
}

func TestLoadSymlinks(t *testing.T) {
	// The layout of a ConfigMap volume: visible names are symlinks into a
	// hidden directory.
	dir := t.TempDir()
	data := filepath.Join(dir, "..data")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("testdata/service.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "svc.json"), src, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join("..data", "svc.json"), filepath.Join(dir, "svc.json")); err != nil {
		t.Skipf("symlinks unsupported: %v", err)
	}
	if err := os.Symlink("..data", filepath.Join(dir, "linked-dir.yaml")); err != nil {
		t.Fatal(err)
	}
	objs, problems, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(objs), []string{"Service/api"}; !reflect.DeepEqual(got, want) || len(problems) != 0 {
		t.Errorf("Load = %q, %q; want %q, no problems", got, problems, want)
	}
}

func TestDecode(t *testing.T) {
	const svc = "apiVersion: v1\nkind: Service\nmetadata:\n  name: %s\n"
	tests := []struct {
		name     string
		in       string
		want     []string
		problems []wantProblem
	}{
		{name: "empty input", in: ""},
		{name: "only separators and comments", in: "---\n# c\n---\n---\n\n"},
		{name: "null document", in: "null\n---\n~\n"},
		{
			name: "missing kind and apiVersion",
			in:   "apiVersion: v1\nmetadata: {name: a}\n---\nkind: Service\n---\n{}\n",
			problems: []wantProblem{
				{"in.yaml", "0", "missing kind: skipped"},
				{"in.yaml", "1", "missing apiVersion: skipped"},
				{"in.yaml", "2", "missing"},
			},
		},
		{
			name: "wrong field type",
			in:   "apiVersion: v1\nkind: Service\nspec:\n  ports: 12\n---\n" + strings.Replace(svc, "%s", "ok", 1),
			want: []string{"Service/ok"},
			problems: []wantProblem{
				{"in.yaml", "0", "cannot decode Service: "},
			},
		},
		{
			name: "scalar and sequence documents",
			in:   "hello\n---\n- a\n- b\n",
			problems: []wantProblem{
				{"in.yaml", "0", "not an object: skipped"},
				{"in.yaml", "1", "not an object: skipped"},
			},
		},
		{
			name: "numbering around separator runs",
			in:   "---\n" + strings.Replace(svc, "%s", "a", 1) + "---\n---\nkind: Foo\n---\n---\n---\nkind: Bar\n",
			want: []string{"Service/a"},
			problems: []wantProblem{
				{"in.yaml", "1", "missing apiVersion"},
				{"in.yaml", "3", "missing apiVersion"}, // document 2 is an empty "---"
			},
		},
		{
			name: "bad separator",
			in:   strings.Replace(svc, "%s", "lost", 1) + "--- garbage\n" + strings.Replace(svc, "%s", "kept", 1),
			want: []string{"Service/kept"},
			problems: []wantProblem{
				{"in.yaml", "0", "invalid Yaml document separator: garbage: skipped"},
			},
		},
		{
			name: "null and nested list items",
			in: `{"apiVersion":"v1","kind":"List","items":[null,
				{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Node","metadata":{"name":"deep"}},{"kind":"Node"}]}]}`,
			want: []string{"Node/deep"},
			problems: []wantProblem{
				{"in.yaml", "0.items[0]", "null list item: skipped"},
				{"in.yaml", "0.items[1].items[1]", "missing apiVersion"},
			},
		},
		{
			name: "too deeply nested lists",
			in: strings.Repeat(`{"apiVersion":"v1","kind":"List","items":[`, maxListDepth+1) +
				strings.Repeat(`]}`, maxListDepth+1),
			problems: []wantProblem{
				{"in.yaml", "0" + strings.Repeat(".items[0]", maxListDepth), "nested more than"},
			},
		},
		{
			name: "unsupported version of a supported kind",
			in:   "apiVersion: discovery.k8s.io/v1beta1\nkind: EndpointSlice\n",
			problems: []wantProblem{
				{"in.yaml", "0", `unknown kind "discovery.k8s.io/v1beta1, Kind=EndpointSlice"`},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, problems := Decode("in.yaml", []byte(tt.in))
			if got := names(objs); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("objects = %q, want %q", got, tt.want)
			}
			checkProblems(t, problems, tt.problems)
		})
	}
}

func TestProblemString(t *testing.T) {
	tests := []struct {
		p    Problem
		want string
	}{
		{Problem{"a/b.yaml", "2", `unknown kind "apps/v1, Kind=Deployment": skipped`}, `a/b.yaml: document 2: unknown kind "apps/v1, Kind=Deployment": skipped`},
		{Problem{"c.json", "", "file too large"}, "c.json: file too large"},
	}
	for _, tt := range tests {
		if got := tt.p.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
	}
}

func TestAppend(t *testing.T) {
	a, _ := Decode("a", []byte("apiVersion: v1\nkind: Node\nmetadata: {name: n1}\n"))
	b, _ := Decode("b", []byte("apiVersion: v1\nkind: Node\nmetadata: {name: n2}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: s}\n"))
	a.Append(b)
	a.Append(nil)
	if got, want := names(a), []string{"Service/s", "Node/n1", "Node/n2"}; !reflect.DeepEqual(got, want) {
		t.Errorf("after Append: %q, want %q", got, want)
	}
}

// bigDoc returns a Service document of at least size bytes, made of many
// short lines.
func bigDoc(name string, size int) []byte {
	var b strings.Builder
	b.Grow(size + 1024)
	b.WriteString("apiVersion: v1\nkind: Service\nmetadata:\n  name: " + name + "\n  annotations:\n    big: |\n")
	line := "      " + strings.Repeat("x", 120) + "\n"
	for b.Len() < size {
		b.WriteString(line)
	}
	return []byte(b.String())
}

func TestDocumentTooLarge(t *testing.T) {
	if testing.Short() {
		t.Skip("reads 64 MiB documents")
	}
	small := "---\napiVersion: v1\nkind: Node\nmetadata: {name: after}\n"
	tests := []struct {
		name     string
		size     int
		want     []string
		problems []wantProblem
	}{
		{
			// Read completely, rejected by length; the next document loads.
			name:     "just over the limit",
			size:     int(maxDocBytes) + 1,
			want:     []string{"Service/before", "Node/after"},
			problems: []wantProblem{{"big.yaml", "1", "document too large (more than 67108864 bytes): skipped"}},
		},
		{
			// The reader stops inside the document; the rest of the file is lost.
			name:     "far over the limit",
			size:     int(maxDocBytes) + 1<<20,
			want:     []string{"Service/before"},
			problems: []wantProblem{{"big.yaml", "1", "skipped with the rest of the file"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := "apiVersion: v1\nkind: Service\nmetadata: {name: before}\n---\n" + string(bigDoc("big", tt.size)) + small
			objs, problems := Decode("big.yaml", []byte(in))
			if got := names(objs); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("objects = %q, want %q", got, tt.want)
			}
			checkProblems(t, problems, tt.problems)
		})
	}

}

// TestDocumentLimitBoundary checks the exact boundary with a lowered limit,
// so that the accepted document stays cheap to decode.
func TestDocumentLimitBoundary(t *testing.T) {
	defer func(old int64) { maxDocBytes = old }(maxDocBytes)
	maxDocBytes = 1 << 20
	exact := bigDoc("exact", int(maxDocBytes)-200)
	exact = append(exact, "    pad: "+strings.Repeat("y", int(maxDocBytes)-len(exact)-len("    pad: \n"))+"\n"...)
	if int64(len(exact)) != maxDocBytes {
		t.Fatalf("built %d bytes, want %d", len(exact), maxDocBytes)
	}
	tests := []struct {
		name     string
		in       []byte
		want     []string
		problems []wantProblem
	}{
		{name: "exactly the limit", in: exact, want: []string{"Service/exact"}},
		{
			name:     "one byte over",
			in:       append([]byte("#\n"), exact...),
			problems: []wantProblem{{"in.yaml", "0", "document too large (more than 1048576 bytes): skipped"}},
		},
		{
			name:     "past the reader's window",
			in:       append(append([]byte{}, exact...), "    more: "+strings.Repeat("z", docSlack)+"\n---\n"+string(exact)...),
			problems: []wantProblem{{"in.yaml", "0", "skipped with the rest of the file"}},
		},
		{
			name: "runs of separators do not accumulate",
			in:   append([]byte(strings.Repeat("---\n", int(maxDocBytes)/4+2)), exact...),
			want: []string{"Service/exact"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, problems := Decode("in.yaml", tt.in)
			if got := names(objs); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("objects = %q, want %q", got, tt.want)
			}
			checkProblems(t, problems, tt.problems)
		})
	}
}

func TestFileTooLarge(t *testing.T) {
	// Decode only checks the length; the pages of this slice are never touched.
	huge := make([]byte, maxFileBytes+1)
	objs, problems := Decode("huge.yaml", huge)
	if len(names(objs)) != 0 {
		t.Errorf("got objects from oversized input")
	}
	checkProblems(t, problems, []wantProblem{{"huge.yaml", "", "file too large"}})

	// A sparse file, so nothing large is written or read.
	path := filepath.Join(t.TempDir(), "huge.yaml")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(maxFileBytes + 1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	objs, problems, err = Load(path, "testdata/service.json")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(objs), []string{"Service/api"}; !reflect.DeepEqual(got, want) {
		t.Errorf("objects = %q, want %q", got, want)
	}
	checkProblems(t, problems, []wantProblem{{path, "", "file too large (more than 268435456 bytes): skipped"}})
}

func TestClipString(t *testing.T) {
	long := strings.Repeat("é", maxReasonBytes) // 2 bytes per rune
	tests := []struct{ in, want string }{
		{"short", "short"},
		{long[:maxReasonBytes], long[:maxReasonBytes]},
		{long, long[:maxReasonBytes] + "…"},
		{"x" + long, "x" + long[:maxReasonBytes-2] + "…"}, // no cut inside a rune
		{"bad \xff byte", "bad \uFFFD byte"},
	}
	for _, tt := range tests {
		if got := clipString(tt.in); got != tt.want {
			t.Errorf("clipString(%.20q...) = %.20q... (%d bytes), want %d bytes", tt.in, got, len(got), len(tt.want))
		}
	}
}
