package main

import (
	"fmt"
	"io"

	"github.com/spf13/pflag"

	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/manifest"
	"github.com/svcproxy/svcproxy/nft"
	"github.com/svcproxy/svcproxy/proxy"
	"github.com/svcproxy/svcproxy/textdiff"
)

// modelFlags are the flags that shape proxy.Config, with kube-proxy's names.
type modelFlags struct {
	files             []string
	node              string
	clusterCIDR       string
	masqueradeAll     bool
	nodePortAddresses []string
	strict            bool
	proxyMode         string
}

func (m *modelFlags) register(fs *pflag.FlagSet, withMode bool) {
	fs.StringArrayVarP(&m.files, "filename", "f", nil, "manifest file or directory (repeatable)")
	fs.StringVar(&m.node, "node", "", "name of the node to compute the rules for (kube-proxy --hostname-override)")
	fs.StringVar(&m.clusterCIDR, "cluster-cidr", "", "comma-separated pod CIDRs, the first of each family used (kube-proxy --cluster-cidr)")
	fs.BoolVar(&m.masqueradeAll, "masquerade-all", false, "masquerade all traffic to ClusterIPs")
	fs.StringSliceVar(&m.nodePortAddresses, "nodeport-addresses", nil, `"primary" or CIDRs of node addresses that accept NodePorts`)
	fs.BoolVar(&m.strict, "strict", false, "exit 1 when the manifests have problems")
	if withMode {
		fs.StringVar(&m.proxyMode, "proxy-mode", "iptables", "rules of which backend: iptables or nftables")
	}
}

// load reads manifests and builds the State. Problems go to stderr, each
// naming the object (or file and document) and the field.
func (m *modelFlags) load(files []string, stderr io.Writer) (*proxy.State, int, error) {
	if len(files) == 0 {
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
	objs, mprobs, err := manifest.Load(files...)
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

// render is the canonical rules text of the chosen backend.
func (m *modelFlags) render(st *proxy.State) (string, error) {
	switch m.proxyMode {
	case "nftables":
		return nft.Render(st), nil
	case "iptables", "":
		return iptables.Render(st), nil
	}
	return "", fmt.Errorf("--proxy-mode %q: want iptables or nftables", m.proxyMode)
}

func parseModel(name string, args []string, stderr io.Writer, withMode bool) (*modelFlags, []string, bool) {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	var m modelFlags
	m.register(fs, withMode)
	if err := fs.Parse(args); err != nil {
		return nil, nil, false
	}
	return &m, fs.Args(), true
}

func runState(args []string, stdout, stderr io.Writer) int {
	m, rest, ok := parseModel("state", args, stderr, false)
	if !ok {
		return 2
	}
	st, problems, err := m.load(append(m.files, rest...), stderr)
	if err != nil {
		fmt.Fprintf(stderr, "svcproxy state: %v\n", err)
		return 2
	}
	st.Problems = nil // already reported on stderr
	fmt.Fprint(stdout, st.Dump())
	return strictExit(m.strict, problems)
}

// runRender prints the rules for manifests: no kernel, no root.
func runRender(args []string, stdout, stderr io.Writer) int {
	m, rest, ok := parseModel("render", args, stderr, true)
	if !ok {
		return 2
	}
	st, problems, err := m.load(append(m.files, rest...), stderr)
	if err != nil {
		fmt.Fprintf(stderr, "svcproxy render: %v\n", err)
		return 2
	}
	text, err := m.render(st)
	if err != nil {
		fmt.Fprintf(stderr, "svcproxy render: %v\n", err)
		return 2
	}
	fmt.Fprint(stdout, text)
	return strictExit(m.strict, problems)
}

// runDiff prints a unified diff of the rules of two sets of manifests:
// exit 0 when equal, 1 when different, 2 on error.
func runDiff(args []string, stdout, stderr io.Writer) int {
	m, rest, ok := parseModel("diff", args, stderr, true)
	if !ok {
		return 2
	}
	if len(rest) != 2 || len(m.files) > 0 {
		fmt.Fprintln(stderr, "usage: svcproxy diff [--proxy-mode=iptables|nftables] [model flags] OLD NEW (each a file or directory)")
		return 2
	}
	var texts [2]string
	problems := 0
	for i, path := range rest {
		st, n, err := m.load([]string{path}, stderr)
		if err != nil {
			fmt.Fprintf(stderr, "svcproxy diff: %s: %v\n", path, err)
			return 2
		}
		problems += n
		if texts[i], err = m.render(st); err != nil {
			fmt.Fprintf(stderr, "svcproxy diff: %v\n", err)
			return 2
		}
	}
	if m.strict && problems > 0 {
		return 2
	}
	if texts[0] == texts[1] {
		return 0
	}
	fmt.Fprint(stdout, textdiff.Unified(rest[0], rest[1], texts[0], texts[1]))
	return 1
}

func strictExit(strict bool, problems int) int {
	if strict && problems > 0 {
		return 1
	}
	return 0
}
