package main

import (
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/svcproxy/svcproxy/manifest"
	"github.com/svcproxy/svcproxy/proxy"
)

// stringList is a repeatable flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// modelFlags are the flags that shape proxy.Config, with kube-proxy's names.
type modelFlags struct {
	files             stringList
	node              string
	clusterCIDR       string
	masqueradeAll     bool
	nodePortAddresses stringList
	strict            bool
}

func (m *modelFlags) register(fs *flag.FlagSet) {
	fs.Var(&m.files, "f", "manifest file or directory (repeatable)")
	fs.StringVar(&m.node, "node", "", "name of the node to compute the state for (kube-proxy --hostname-override)")
	fs.StringVar(&m.clusterCIDR, "cluster-cidr", "", "comma-separated pod CIDRs, at most one used per family (kube-proxy --cluster-cidr)")
	fs.BoolVar(&m.masqueradeAll, "masquerade-all", false, "masquerade all traffic to ClusterIPs")
	fs.Var(&m.nodePortAddresses, "nodeport-addresses", `"primary" or comma-separated CIDRs of node addresses that accept NodePorts`)
	fs.BoolVar(&m.strict, "strict", false, "exit 1 when the manifests have problems")
}

// load reads the manifests and builds the State. Problems go to stderr;
// the returned count lets --strict fail on them.
func (m *modelFlags) load(stderr io.Writer) (*proxy.State, int, error) {
	if len(m.files) == 0 {
		return nil, 0, fmt.Errorf("no manifests: give -f FILE_OR_DIR")
	}
	cidrs, err := proxy.ParseCIDRs(m.clusterCIDR)
	if err != nil {
		return nil, 0, fmt.Errorf("--cluster-cidr: %w", err)
	}
	npa, err := proxy.ParseNodePortAddresses(m.nodePortAddresses)
	if err != nil {
		return nil, 0, err
	}
	objs, mprobs, err := manifest.Load(m.files...)
	if err != nil {
		return nil, 0, err
	}
	for _, p := range mprobs {
		fmt.Fprintf(stderr, "problem: %s\n", p)
	}
	st := proxy.Build(
		proxy.Inputs{Services: objs.Services, EndpointSlices: objs.EndpointSlices, Nodes: objs.Nodes},
		proxy.Config{NodeName: m.node, ClusterCIDRs: cidrs, MasqueradeAll: m.masqueradeAll, NodePortAddresses: npa},
	)
	for _, p := range st.Problems {
		fmt.Fprintf(stderr, "problem: %s\n", p)
	}
	return st, len(mprobs) + len(st.Problems), nil
}

func runState(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("state", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var m modelFlags
	m.register(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	m.files = append(m.files, fs.Args()...)
	st, problems, err := m.load(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "svcproxy state: %v\n", err)
		return 2
	}
	st.Problems = nil // already reported on stderr
	fmt.Fprint(stdout, st.Dump())
	if m.strict && problems > 0 {
		return 1
	}
	return 0
}
