package controller

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
)

// A typed client's List reads the whole response, decodes every item into
// one list, and client-go's reflector then copies each item into an object
// of its own before the informer's transform trims it: at the initial list
// of 50k EndpointSlices, the response, the decoded list and the copies are
// all alive at once (the daemon's peak), and the objects the caches keep
// end up scattered among the list's garbage, which stays as fragmentation.
// streamList decodes the items one at a time as the response arrives and
// transforms each at once; only what the caches keep accumulates. Of each
// item's metadata it decodes only what the transform keeps (metaKeep):
// managedFields, owner references, other labels and annotations (in real
// clusters often most of an object) cost no allocation at all.

// protobufMagic starts the API server's protobuf responses, followed by a
// runtime.Unknown: 1 typeMeta, 2 raw (the list), 3 contentEncoding, 4
// contentType. A list is 1 metadata (ListMeta), 2 items (repeated).
var protobufMagic = []byte("k8s\x00")

// errNotProtobuf: the API server answered in another encoding (JSON).
var errNotProtobuf = errors.New("not a protobuf response")

// protoObject is a generated API type, which decodes itself from protobuf.
type protoObject[T any] interface {
	*T
	runtime.Object
	Unmarshal([]byte) error
}

// streamList lists resource in all namespaces, as a typed client's List
// does, each item decoded on its own, its metadata cut down to meta, and
// passed to keep, whose result is the returned list's item (a *metav1.List, whose items the reflector
// takes as they are). kind is the list's kind (e.g. "ServiceList"). It
// returns errNotProtobuf if the response is in another encoding.
func streamList[T any, P protoObject[T]](ctx context.Context, c rest.Interface, resource, kind string,
	o metav1.ListOptions, meta metaKeep, keep func(P) runtime.Object) (runtime.Object, error) {
	var timeout time.Duration
	if o.TimeoutSeconds != nil {
		timeout = time.Duration(*o.TimeoutSeconds) * time.Second
	}
	body, err := c.Get().UseProtobufAsDefault().Resource(resource).
		VersionedParams(&o, scheme.ParameterCodec).Timeout(timeout).Stream(ctx)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	r := &pbReader{r: bufio.NewReaderSize(body, 64<<10)}
	if magic, err := r.r.Peek(len(protobufMagic)); err != nil || !bytes.Equal(magic, protobufMagic) {
		return nil, errNotProtobuf
	}
	r.r.Discard(len(protobufMagic))
	list := &metav1.List{}
	// One item's encoding at a time, and the same with its metadata cut
	// down: Unmarshal copies what it keeps.
	var buf, trimmed []byte
	seenKind := false
	for {
		field, wire, err := r.tag()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		switch {
		case field == 1 && wire == 2: // typeMeta
			var tm runtime.TypeMeta
			if buf, err = r.bytes(buf, -1); err != nil {
				return nil, err
			}
			if err := tm.Unmarshal(buf); err != nil {
				return nil, err
			}
			if tm.Kind != kind {
				return nil, fmt.Errorf("listing %s: got a %q, want a %q", resource, tm.Kind, kind)
			}
			seenKind = true
		case field == 2 && wire == 2: // raw: the list
			if !seenKind {
				return nil, fmt.Errorf("listing %s: no kind before the list", resource)
			}
			n, err := r.uvarint()
			if err != nil {
				return nil, err
			}
			for end := r.n + int64(n); r.n < end; {
				field, wire, err := r.tag()
				if err != nil {
					return nil, noEOF(err)
				}
				switch {
				case field == 1 && wire == 2:
					if buf, err = r.bytes(buf, end-r.n); err != nil {
						return nil, err
					}
					if err := list.ListMeta.Unmarshal(buf); err != nil {
						return nil, err
					}
				case field == 2 && wire == 2:
					if buf, err = r.bytes(buf, end-r.n); err != nil {
						return nil, err
					}
					if trimmed, err = withTrimmedMeta(trimmed[:0], buf, meta); err != nil {
						return nil, err
					}
					obj := P(new(T))
					if err := obj.Unmarshal(trimmed); err != nil {
						return nil, err
					}
					list.Items = append(list.Items, runtime.RawExtension{Object: keep(obj)})
				default:
					if err := r.skip(wire); err != nil {
						return nil, err
					}
				}
				if r.n > end {
					return nil, fmt.Errorf("listing %s: malformed list", resource)
				}
			}
		case field == 3 && wire == 2: // contentEncoding: none is ever set
			if buf, err = r.bytes(buf, -1); err != nil {
				return nil, err
			}
			if len(buf) > 0 {
				return nil, fmt.Errorf("listing %s: content encoding %q", resource, buf)
			}
		default:
			if err := r.skip(wire); err != nil {
				return nil, err
			}
		}
	}
	if !seenKind {
		return nil, fmt.Errorf("listing %s: empty response", resource)
	}
	return list, nil
}

// pbReader reads protobuf's wire format from a stream, counting bytes.
type pbReader struct {
	r *bufio.Reader
	n int64 // bytes read so far
}

func (p *pbReader) ReadByte() (byte, error) {
	b, err := p.r.ReadByte()
	if err == nil {
		p.n++
	}
	return b, err
}

func (p *pbReader) uvarint() (uint64, error) {
	v, err := binary.ReadUvarint(p)
	return v, noEOF(err)
}

// tag reads a field's key; io.EOF only at a clean end of the stream.
func (p *pbReader) tag() (field uint64, wire byte, err error) {
	start := p.n
	v, err := binary.ReadUvarint(p)
	if err != nil {
		if err == io.EOF && p.n == start {
			return 0, 0, io.EOF
		}
		return 0, 0, noEOF(err)
	}
	return v >> 3, byte(v & 7), nil
}

// bytes reads a length-delimited value into buf (reused) and returns it;
// limit, if not negative, is how many bytes may be left to read.
func (p *pbReader) bytes(buf []byte, limit int64) ([]byte, error) {
	n, err := p.uvarint()
	if err != nil {
		return nil, err
	}
	if n > 1<<31 || (limit >= 0 && int64(n) > limit) {
		return nil, fmt.Errorf("protobuf: field of %d bytes overruns its message", n)
	}
	if uint64(cap(buf)) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(p.r, buf); err != nil {
		return nil, noEOF(err)
	}
	p.n += int64(n)
	return buf, nil
}

// skip reads past a value of the given wire type.
func (p *pbReader) skip(wire byte) error {
	var n uint64
	switch wire {
	case 0:
		_, err := p.uvarint()
		return err
	case 1:
		n = 8
	case 2:
		var err error
		if n, err = p.uvarint(); err != nil {
			return err
		}
	case 5:
		n = 4
	default:
		return fmt.Errorf("protobuf: unexpected wire type %d", wire)
	}
	d, err := p.r.Discard(int(min(n, 1<<31)))
	p.n += int64(d)
	return noEOF(err)
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// streamedList is the list function of an informer whose objects are
// transformed by transform as they are listed, each then wrapped by wrap
// so that the informer's transform knows it is done (see listedService).
// It falls back to list where streamList cannot be used: a fake clientset
// has no REST client, and a server may answer in JSON.
func streamedList[T any, P protoObject[T]](c rest.Interface, resource, kind string, meta metaKeep, transform func(P), wrap func(P) runtime.Object,
	list func(context.Context, metav1.ListOptions) (runtime.Object, error)) func(context.Context, metav1.ListOptions) (runtime.Object, error) {
	return func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
		if rc, ok := c.(*rest.RESTClient); ok && rc != nil {
			l, err := streamList(ctx, rc, resource, kind, o, meta, func(obj P) runtime.Object {
				transform(obj)
				return wrap(obj)
			})
			if !errors.Is(err, errNotProtobuf) {
				return l, err
			}
		}
		return list(ctx, o)
	}
}

// ObjectMeta's fields (k8s.io/apimachinery/pkg/apis/meta/v1).
const (
	metaName, metaNamespace, metaUID, metaResourceVersion, metaCreated, metaLabels, metaAnnotations = 1, 3, 5, 6, 8, 11, 12
)

// withTrimmedMeta appends obj, an encoded object whose field 1 is its
// metadata, to dst with the metadata cut down to keep.
func withTrimmedMeta(dst, obj []byte, keep metaKeep) ([]byte, error) {
	for len(obj) > 0 {
		f, err := nextField(obj)
		if err != nil {
			return nil, err
		}
		obj = obj[len(f.whole):]
		if f.num != 1 || f.wire != 2 {
			dst = append(dst, f.whole...)
			continue
		}
		size := 0 // of the metadata kept: a first pass, then the copy
		for pass := range 2 {
			if pass == 1 {
				dst = binary.AppendUvarint(append(dst, f.whole[0]), uint64(size))
			}
			for meta := f.value; len(meta) > 0; {
				m, err := nextField(meta)
				if err != nil {
					return nil, err
				}
				meta = meta[len(m.whole):]
				if ok, err := keep.has(m); err != nil {
					return nil, err
				} else if ok && pass == 0 {
					size += len(m.whole)
				} else if ok {
					dst = append(dst, m.whole...)
				}
			}
		}
	}
	return dst, nil
}

// has says whether metadata field f is kept.
func (keep metaKeep) has(f field) (bool, error) {
	switch f.num {
	case metaName, metaNamespace, metaResourceVersion, metaCreated:
		return true, nil
	case metaUID:
		return keep.uid, nil
	case metaLabels, metaAnnotations:
		keys := keep.labels
		if f.num == metaAnnotations {
			keys = keep.annotations
		}
		k, err := mapEntryKey(f.value)
		return slices.ContainsFunc(keys, func(s string) bool { return s == string(k) }), err
	}
	return false, nil
}

// mapEntryKey is the key (field 1) of an encoded map entry.
func mapEntryKey(entry []byte) ([]byte, error) {
	for len(entry) > 0 {
		f, err := nextField(entry)
		if err != nil {
			return nil, err
		}
		if f.num == 1 && f.wire == 2 {
			return f.value, nil
		}
		entry = entry[len(f.whole):]
	}
	return nil, nil
}

// field is one field of an encoded message: whole is all its bytes, value
// the value of a length-delimited one.
type field struct {
	num          uint64
	wire         byte
	whole, value []byte
}

func nextField(b []byte) (field, error) {
	key, n := binary.Uvarint(b)
	if n <= 0 {
		return field{}, errMalformed
	}
	f := field{num: key >> 3, wire: byte(key & 7)}
	switch f.wire {
	case 0:
		_, m := binary.Uvarint(b[n:])
		if m <= 0 {
			return field{}, errMalformed
		}
		n += m
	case 1:
		n += 8
	case 2:
		l, m := binary.Uvarint(b[n:])
		if m <= 0 || l > uint64(len(b)-n-m) {
			return field{}, errMalformed
		}
		f.value = b[n+m : n+m+int(l)]
		n += m + int(l)
	case 5:
		n += 4
	default:
		return field{}, errMalformed
	}
	if n > len(b) {
		return field{}, errMalformed
	}
	f.whole = b[:n]
	return f, nil
}

var errMalformed = errors.New("protobuf: malformed message")
