// Package manifest reads Services, EndpointSlices and Nodes from YAML and
// JSON manifest files.
//
// A manifest file is a stream of YAML documents separated by "---" lines. A
// JSON file holds one JSON object; being valid YAML, it is read as a
// one-document YAML stream (several concatenated JSON objects are reported as
// malformed). Each document is decoded with a Kubernetes codec into a typed
// object. Documents of kind List (v1), ServiceList, EndpointSliceList and
// NodeList are expanded into their items.
//
// Decoding is lenient per document: a document that cannot be used (malformed
// YAML or JSON, missing or unknown apiVersion/kind, wrong field types, too
// large) is reported as a [Problem] and skipped, and the remaining documents
// of the file are still decoded. Only I/O failures are returned as errors.
//
// # Document numbering
//
// Documents are numbered from 0 in the order they appear in the file, as
// returned by k8s.io/apimachinery/pkg/util/yaml.YAMLReader. In the usual
// layouts that is the obvious count: a "---" line at the start of the file
// does not add a document, and a "---" line between two documents ends the
// first. (YAMLReader keeps a "---" line that would start an empty document as
// the first line of the next one, so a run of several "---" lines yields some
// empty documents.) Empty documents and those holding only comments (or
// decoding to YAML null) keep their number but are skipped silently. Items
// of a list are numbered "D.items[I]", e.g. "3.items[2]"; nested lists extend
// the path.
//
// Line numbers in YAML syntax errors count from the start of the document, not
// of the file.
package manifest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/yaml"
)

// Size limits. They are variables only so tests can lower them.
var (
	// maxFileBytes bounds the size of one file (or one Decode input).
	maxFileBytes int64 = 256 << 20
	// maxDocBytes bounds the size of one YAML document.
	maxDocBytes int64 = 64 << 20
)

const (
	// docSlack is how far past maxDocBytes the YAML reader may read before it
	// is stopped: room for bufio read-ahead and separator lines, so that a
	// document of exactly maxDocBytes is still read completely and rejected
	// (or accepted) by an exact length check.
	docSlack = 64 << 10
	// maxListDepth bounds how deeply v1 Lists may nest inside each other.
	maxListDepth = 8
	// maxReasonBytes bounds the length of an error message or kind quoted in
	// a Problem's Reason.
	maxReasonBytes = 512
)

// Objects holds decoded objects in input order: files in the order they were
// loaded, documents and list items in the order they appear in each file.
type Objects struct {
	Services       []*corev1.Service
	EndpointSlices []*discoveryv1.EndpointSlice
	Nodes          []*corev1.Node
}

// Append adds the objects of other after those of o. other may be nil; o must
// not be.
func (o *Objects) Append(other *Objects) {
	if other == nil {
		return
	}
	o.Services = append(o.Services, other.Services...)
	o.EndpointSlices = append(o.EndpointSlices, other.EndpointSlices...)
	o.Nodes = append(o.Nodes, other.Nodes...)
}

// Problem describes input that was skipped.
type Problem struct {
	// File is the path (for Load) or name (for Decode) of the input.
	File string
	// Doc is the document index, e.g. "2" or "3.items[1]"; empty when the
	// problem concerns the whole file.
	Doc string
	// Reason says what was wrong and what was skipped.
	Reason string
}

// String formats p as "FILE: document DOC: REASON", or "FILE: REASON" when
// Doc is empty.
func (p Problem) String() string {
	if p.Doc == "" {
		return p.File + ": " + p.Reason
	}
	return p.File + ": document " + p.Doc + ": " + p.Reason
}

var (
	serviceGVK       = corev1.SchemeGroupVersion.WithKind("Service")
	nodeGVK          = corev1.SchemeGroupVersion.WithKind("Node")
	endpointSliceGVK = discoveryv1.SchemeGroupVersion.WithKind("EndpointSlice")
)

// decoder decodes exactly the kinds this package handles; every other kind
// fails with a not-registered error and is reported as unknown.
var decoder = func() runtime.Decoder {
	s := runtime.NewScheme()
	s.AddKnownTypes(corev1.SchemeGroupVersion,
		&corev1.Service{}, &corev1.ServiceList{},
		&corev1.Node{}, &corev1.NodeList{},
		&corev1.List{},
	)
	s.AddKnownTypes(discoveryv1.SchemeGroupVersion,
		&discoveryv1.EndpointSlice{}, &discoveryv1.EndpointSliceList{},
	)
	return serializer.NewCodecFactory(s).UniversalDeserializer()
}()

// Load reads manifests from each path in turn. A path naming a file is read
// whatever its extension. A path naming a directory is walked recursively and
// every *.yaml, *.yml and *.json file in it is read, in filepath.WalkDir
// order (each directory's entries sorted by name). Below the given directory,
// entries whose name starts with "." are ignored, as are files with other
// extensions; symbolic links to files are followed, symbolic links to
// directories are not.
//
// Load returns an error, and no objects or problems, if a path does not exist
// or a directory or file cannot be read. A file larger than 256 MiB is
// reported as a Problem and not read. Decoding problems never cause an error;
// see Decode.
func Load(paths ...string) (*Objects, []Problem, error) {
	objs := &Objects{}
	var problems []Problem
	for _, p := range paths {
		files, err := listFiles(p)
		if err != nil {
			return nil, nil, err
		}
		for _, f := range files {
			o, ps, err := loadFile(f)
			if err != nil {
				return nil, nil, err
			}
			objs.Append(o)
			problems = append(problems, ps...)
		}
	}
	return objs, problems, nil
}

// listFiles returns the files Load reads for path.
func listFiles(path string) ([]string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return []string{path}, nil
	}
	var files []string
	err = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == path {
			return nil
		}
		if strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() || !isManifestName(d.Name()) {
			return nil
		}
		switch mode := d.Type(); {
		case mode.IsRegular():
		case mode&fs.ModeSymlink != 0:
			fi, err := os.Stat(p)
			if err != nil {
				return err
			}
			if !fi.Mode().IsRegular() {
				return nil
			}
		default:
			return nil
		}
		files = append(files, p)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return files, nil
}

func isManifestName(name string) bool {
	switch filepath.Ext(name) {
	case ".yaml", ".yml", ".json":
		return true
	}
	return false
}

func loadFile(path string) (*Objects, []Problem, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	if fi.IsDir() {
		return nil, nil, fmt.Errorf("read %s: is a directory", path)
	}
	if fi.Mode().IsRegular() && fi.Size() > maxFileBytes {
		return &Objects{}, []Problem{fileTooLarge(path)}, nil
	}
	// Not every file reports its size; bound the read regardless.
	data, err := io.ReadAll(io.LimitReader(f, maxFileBytes+1))
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", path, err)
	}
	o, ps := Decode(path, data)
	return o, ps, nil
}

func fileTooLarge(name string) Problem {
	return Problem{File: name, Reason: fmt.Sprintf("file too large (more than %d bytes): skipped", maxFileBytes)}
}

// errDocTooLarge stops the YAML reader when a document outgrows its window.
var errDocTooLarge = errors.New("document too large")

// windowReader reads from r, a reader over data, but fails with
// errDocTooLarge instead of reading at or past offset end.
type windowReader struct {
	r    *bytes.Reader
	size int64
	end  int64
}

func (w *windowReader) offset() int64 { return w.size - int64(w.r.Len()) }

func (w *windowReader) Read(p []byte) (int, error) {
	left := w.end - w.offset()
	if left <= 0 {
		return 0, errDocTooLarge
	}
	if int64(len(p)) > left {
		p = p[:left]
	}
	return w.r.Read(p)
}

// Decode decodes the documents in data, a manifest file's content; name is
// used as Problem.File. It never fails as a whole: input it cannot use is
// reported as Problems, in input order, and skipped.
//
//   - Empty and comment-only documents are skipped without a Problem.
//   - Malformed documents, documents without apiVersion or kind, documents of
//     kinds other than Service, EndpointSlice, Node and the list kinds, and
//     list items that are null, are skipped with a Problem; the following
//     documents are still decoded.
//   - A line starting with "---" followed by anything but a comment is
//     reported; the document it ends is skipped.
//   - A document larger than 64 MiB is skipped with a Problem. If it is so
//     large that the reader has to stop inside it (after 64 MiB plus 64 KiB,
//     counting the separator lines around it), the rest of the file is
//     skipped as well, and the Problem says so. The YAML reader never buffers
//     more than that for one document.
//   - Input larger than 256 MiB is skipped entirely with one Problem with an
//     empty Doc.
//
// Decoded objects have their TypeMeta (apiVersion and kind) set, including
// items of typed lists. Decode is safe for concurrent use.
func Decode(name string, data []byte) (*Objects, []Problem) {
	d := &decodeState{name: name, objs: &Objects{}}
	if int64(len(data)) > maxFileBytes {
		return d.objs, []Problem{fileTooLarge(name)}
	}
	win := &windowReader{r: bytes.NewReader(data), size: int64(len(data))}
	br := bufio.NewReader(win)
	yr := yaml.NewYAMLReader(br)
	for i := 0; ; i++ {
		start := win.offset() - int64(br.Buffered())
		win.end = start + maxDocBytes + docSlack
		doc, err := yr.Read()
		idx := fmt.Sprint(i)
		if err == io.EOF {
			break
		}
		if errors.Is(err, errDocTooLarge) {
			d.problem(idx, fmt.Sprintf("document too large (more than %d bytes): skipped with the rest of the file", maxDocBytes))
			break
		}
		var syntaxErr yaml.YAMLSyntaxError
		if errors.As(err, &syntaxErr) {
			d.problem(idx, clip(err)+": skipped")
			continue
		}
		if err != nil {
			// Not expected from an in-memory reader.
			d.problem(idx, "reading document: "+clip(err)+": skipped with the rest of the file")
			break
		}
		if int64(len(doc)) > maxDocBytes {
			d.problem(idx, fmt.Sprintf("document too large (more than %d bytes): skipped", maxDocBytes))
			continue
		}
		d.document(idx, doc)
	}
	return d.objs, d.problems
}

type decodeState struct {
	name     string
	objs     *Objects
	problems []Problem
}

func (d *decodeState) problem(doc, reason string) {
	d.problems = append(d.problems, Problem{File: d.name, Doc: doc, Reason: reason})
}

// document decodes one YAML or JSON document.
func (d *decodeState) document(idx string, doc []byte) {
	js, err := yaml.ToJSON(doc)
	if err != nil {
		d.problem(idx, "invalid YAML: "+clip(err)+": skipped")
		return
	}
	js = bytes.TrimSpace(js)
	if len(js) == 0 || bytes.Equal(js, []byte("null")) {
		return
	}
	if js[0] != '{' {
		d.problem(idx, "not an object: skipped")
		return
	}
	d.object(idx, js, 0)
}

// object decodes one JSON-encoded object; depth counts enclosing v1 Lists.
func (d *decodeState) object(idx string, js []byte, depth int) {
	obj, gvk, err := decoder.Decode(js, nil, nil)
	if err != nil {
		d.problem(idx, decodeReason(gvk, err))
		return
	}
	switch o := obj.(type) {
	case *corev1.Service:
		d.addService(o)
	case *corev1.Node:
		d.addNode(o)
	case *discoveryv1.EndpointSlice:
		d.addEndpointSlice(o)
	case *corev1.ServiceList:
		for i := range o.Items {
			d.addService(&o.Items[i])
		}
	case *corev1.NodeList:
		for i := range o.Items {
			d.addNode(&o.Items[i])
		}
	case *discoveryv1.EndpointSliceList:
		for i := range o.Items {
			d.addEndpointSlice(&o.Items[i])
		}
	case *corev1.List:
		if depth >= maxListDepth {
			d.problem(idx, fmt.Sprintf("lists nested more than %d deep: skipped", maxListDepth))
			return
		}
		for i, item := range o.Items {
			itemIdx := fmt.Sprintf("%s.items[%d]", idx, i)
			raw := bytes.TrimSpace(item.Raw)
			if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
				d.problem(itemIdx, "null list item: skipped")
				continue
			}
			d.object(itemIdx, raw, depth+1)
		}
	default:
		// Unreachable: the scheme holds only the types above.
		d.problem(idx, fmt.Sprintf("unsupported type %T: skipped", obj))
	}
}

func decodeReason(gvk *schema.GroupVersionKind, err error) string {
	switch {
	case runtime.IsMissingVersion(err):
		return "missing apiVersion: skipped"
	case runtime.IsMissingKind(err):
		return "missing kind: skipped"
	case runtime.IsNotRegisteredError(err) && gvk != nil:
		return fmt.Sprintf("unknown kind %q: skipped", clipString(gvk.String()))
	case gvk != nil && gvk.Kind != "":
		return fmt.Sprintf("cannot decode %s: %s: skipped", gvk.Kind, clip(err))
	default:
		return "cannot decode: " + clip(err) + ": skipped"
	}
}

func (d *decodeState) addService(s *corev1.Service) {
	s.APIVersion, s.Kind = serviceGVK.ToAPIVersionAndKind()
	d.objs.Services = append(d.objs.Services, s)
}

func (d *decodeState) addNode(n *corev1.Node) {
	n.APIVersion, n.Kind = nodeGVK.ToAPIVersionAndKind()
	d.objs.Nodes = append(d.objs.Nodes, n)
}

func (d *decodeState) addEndpointSlice(e *discoveryv1.EndpointSlice) {
	e.APIVersion, e.Kind = endpointSliceGVK.ToAPIVersionAndKind()
	d.objs.EndpointSlices = append(d.objs.EndpointSlices, e)
}

// clip returns err's message shortened by clipString. Decoder errors may
// quote input, which is untrusted and may be large.
func clip(err error) string { return clipString(err.Error()) }

// clipString shortens s to at most maxReasonBytes bytes plus an ellipsis,
// cutting at a rune boundary, and replaces invalid UTF-8.
func clipString(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= maxReasonBytes {
		return s
	}
	cut := maxReasonBytes
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
