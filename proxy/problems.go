package proxy

import (
	"fmt"
	"strings"
)

// Problem is a piece of input the model skipped: the object, the field, and
// why. Build records problems instead of failing, so that one malformed
// object never stops the others from being programmed.
type Problem struct {
	Kind      string // "Service", "EndpointSlice", "Node" or "Config"
	Namespace string
	Name      string
	Field     string // JSON path of the offending field, e.g. "spec.ports[1].port"
	Message   string // what was wrong and what was skipped
}

// Object is "Kind namespace/name" (or "Kind name" when not namespaced).
func (p Problem) Object() string {
	if p.Namespace == "" {
		return p.Kind + " " + p.Name
	}
	return p.Kind + " " + p.Namespace + "/" + p.Name
}

// String is "Kind namespace/name: field: message".
func (p Problem) String() string {
	if p.Field == "" {
		return p.Object() + ": " + p.Message
	}
	return p.Object() + ": " + p.Field + ": " + p.Message
}

func compareProblems(a, b Problem) int {
	for _, c := range [][2]string{{a.Kind, b.Kind}, {a.Namespace, b.Namespace}, {a.Name, b.Name}, {a.Field, b.Field}, {a.Message, b.Message}} {
		if r := strings.Compare(c[0], c[1]); r != 0 {
			return r
		}
	}
	return 0
}

// maxProblemsPerObject bounds what one hostile object (a slice with 100k
// bad endpoints) can add to the State; the rest are summarised.
const maxProblemsPerObject = 20

// problems collects Problems, at most maxProblemsPerObject per object.
type problems struct {
	list    []Problem
	counts  map[string]int
	dropped map[string]Problem // first dropped problem of each object, for the summary
}

func (ps *problems) add(kind, namespace, name, field, format string, args ...any) {
	p := Problem{Kind: kind, Namespace: namespace, Name: name, Field: field, Message: fmt.Sprintf(format, args...)}
	if ps.counts == nil {
		ps.counts = map[string]int{}
		ps.dropped = map[string]Problem{}
	}
	obj := p.Object()
	ps.counts[obj]++
	if ps.counts[obj] <= maxProblemsPerObject {
		ps.list = append(ps.list, p)
		return
	}
	if _, ok := ps.dropped[obj]; !ok {
		ps.dropped[obj] = p
	}
}

// merge adds o's problems as if each had been added to ps in o's order.
func (ps *problems) merge(o *problems) {
	listed := map[string]int{}
	for _, p := range o.list {
		ps.add(p.Kind, p.Namespace, p.Name, p.Field, "%s", p.Message)
		listed[p.Object()]++
	}
	for obj, n := range o.counts {
		if extra := n - listed[obj]; extra > 0 {
			ps.counts[obj] += extra
			if _, ok := ps.dropped[obj]; !ok {
				ps.dropped[obj] = o.dropped[obj]
			}
		}
	}
}

// result returns the problems, with one summary per object that had more
// than maxProblemsPerObject.
func (ps *problems) result() []Problem {
	for obj, p := range ps.dropped {
		p.Field = ""
		p.Message = fmt.Sprintf("%d more problems not listed", ps.counts[obj]-maxProblemsPerObject)
		ps.list = append(ps.list, p)
	}
	return ps.list
}

// objectProblems records problems about one object.
type objectProblems struct {
	ps             *problems
	kind, ns, name string
}

func (o objectProblems) add(field, format string, args ...any) {
	o.ps.add(o.kind, o.ns, o.name, field, format, args...)
}
