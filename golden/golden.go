// Package golden reads and writes the golden cases in testdata/golden: the
// rules each backend renders for a small set of manifests, kept as
// reviewable text next to the input they come from.
//
// A case is a txtar archive (the format of golang.org/x/tools/txtar):
//
//	# What the case covers: a free-form comment header.
//	-- config --
//	node: node-a
//	cluster-cidr: 10.244.0.0/16,fd00:10:244::/56
//	masquerade-all: false
//	nodeport-addresses: primary
//	-- manifests.yaml --
//	apiVersion: v1
//	kind: Service
//	...
//	-- problems --
//	Service t/bad: spec.ports[0].port: 70000 is out of range 1-65535: port skipped
//	-- nftables --
//	table ip svcproxy {
//	...
//	-- iptables --
//	*filter
//	...
//
// The config section is optional, as is each of its keys: node defaults to
// "node-a", the others to their zero value (no cluster CIDR, no
// masquerade-all, NodePorts on all local addresses). The node's addresses
// and labels come from a Node object in the manifests, as they do for
// `svcproxy render`. The problems, nftables and iptables sections are the
// expected output: proxy.State problems (one String per line), nft.Render
// and iptables.Render. `make golden` (SVCPROXY_UPDATE_GOLDEN=1) rewrites
// them from the current code with Write, which keeps the header, the config
// and the manifests byte for byte.
package golden

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/svcproxy/svcproxy/manifest"
	"github.com/svcproxy/svcproxy/proxy"
)

// UpdateEnv is the environment variable that makes the golden tests
// rewrite their expected output instead of comparing (`make golden`).
const UpdateEnv = "SVCPROXY_UPDATE_GOLDEN"

// DefaultNode is the node a case is rendered for when its config does not
// name one.
const DefaultNode = "node-a"

// Section names, in the order Write puts them.
const (
	SectionConfig    = "config"
	SectionManifests = "manifests.yaml"
	SectionProblems  = "problems"
	SectionNFT       = "nftables"
	SectionIPTables  = "iptables"
)

var sectionOrder = []string{SectionConfig, SectionManifests, SectionProblems, SectionNFT, SectionIPTables}

// Case is one golden case.
type Case struct {
	// Name is the file name without the .txtar extension.
	Name string
	// Comment is the header: everything before the first section.
	Comment string
	// Config is the parsed config section.
	Config proxy.Config
	// Manifests is the manifests.yaml section, as it is in the file.
	Manifests []byte
	// Problems, NFT and IPTables are the expected outputs: the State's
	// problems (one String per line, "" for none), nft.Render and
	// iptables.Render.
	Problems, NFT, IPTables string

	// rawConfig is the config section as it is in the file; hasConfig says
	// whether the file has one. Write keeps them as they are.
	rawConfig []byte
	hasConfig bool
}

// Update reports whether the golden tests should rewrite the expected
// sections from the current code (SVCPROXY_UPDATE_GOLDEN=1).
func Update() bool { return os.Getenv(UpdateEnv) == "1" }

// Load reads every *.txtar file in dir, sorted by name.
func Load(dir string) ([]Case, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.txtar"))
	if err != nil {
		return nil, err
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("no golden cases (*.txtar) in %s", dir)
	}
	slices.Sort(paths)
	var out []Case
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		c, err := Parse(strings.TrimSuffix(filepath.Base(p), ".txtar"), data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// Parse parses the content of one case file.
func Parse(name string, data []byte) (Case, error) {
	c := Case{Name: name}
	comment, files := parseArchive(data)
	c.Comment = string(comment)
	seen := map[string]bool{}
	for _, f := range files {
		if !slices.Contains(sectionOrder, f.name) {
			return Case{}, fmt.Errorf("unknown section %q (want %s)", f.name, strings.Join(sectionOrder, ", "))
		}
		if seen[f.name] {
			return Case{}, fmt.Errorf("section %q appears twice", f.name)
		}
		seen[f.name] = true
		switch f.name {
		case SectionConfig:
			c.rawConfig, c.hasConfig = f.data, true
		case SectionManifests:
			c.Manifests = f.data
		case SectionProblems:
			c.Problems = string(f.data)
		case SectionNFT:
			c.NFT = string(f.data)
		case SectionIPTables:
			c.IPTables = string(f.data)
		}
	}
	if !seen[SectionManifests] {
		return Case{}, fmt.Errorf("no %q section", SectionManifests)
	}
	cfg, err := ParseConfig(c.rawConfig)
	if err != nil {
		return Case{}, fmt.Errorf("section %q: %w", SectionConfig, err)
	}
	c.Config = cfg
	return c, nil
}

// ParseConfig parses a config section: "key: value" lines; blank lines and
// lines starting with "#" are ignored. Keys: node, cluster-cidr (comma
// separated), masquerade-all (true/false), nodeport-addresses ("primary"
// or comma-separated CIDRs).
func ParseConfig(data []byte) (proxy.Config, error) {
	cfg := proxy.Config{NodeName: DefaultNode}
	seen := map[string]bool{}
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, value, ok := strings.Cut(line, ":")
		if !ok {
			return proxy.Config{}, fmt.Errorf("line %d: %q is not \"key: value\"", i+1, line)
		}
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		if seen[key] {
			return proxy.Config{}, fmt.Errorf("line %d: %s given twice", i+1, key)
		}
		seen[key] = true
		var err error
		switch key {
		case "node":
			cfg.NodeName = value
		case "cluster-cidr":
			cfg.ClusterCIDRs, err = proxy.ParseCIDRs(value)
		case "masquerade-all":
			cfg.MasqueradeAll, err = strconv.ParseBool(value)
		case "nodeport-addresses":
			cfg.NodePortAddresses, err = proxy.ParseNodePortAddresses([]string{value})
		default:
			err = fmt.Errorf("unknown key (want node, cluster-cidr, masquerade-all, nodeport-addresses)")
		}
		if err != nil {
			return proxy.Config{}, fmt.Errorf("line %d: %s: %w", i+1, key, err)
		}
	}
	return cfg, nil
}

// FormatConfig prints cfg as a config section ParseConfig reads back (the
// fields a config section can set; others are ignored).
func FormatConfig(cfg proxy.Config) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "node: %s\n", cfg.NodeName)
	if len(cfg.ClusterCIDRs) > 0 {
		var s []string
		for _, p := range cfg.ClusterCIDRs {
			s = append(s, p.String())
		}
		fmt.Fprintf(&b, "cluster-cidr: %s\n", strings.Join(s, ","))
	}
	if cfg.MasqueradeAll {
		b.WriteString("masquerade-all: true\n")
	}
	switch npa := cfg.NodePortAddresses; {
	case npa.Primary:
		b.WriteString("nodeport-addresses: primary\n")
	case len(npa.CIDRs) > 0:
		var s []string
		for _, p := range npa.CIDRs {
			s = append(s, p.String())
		}
		fmt.Fprintf(&b, "nodeport-addresses: %s\n", strings.Join(s, ","))
	}
	return b.Bytes()
}

// ManifestFile is the name manifest problems of a case are reported
// under: "NAME/manifests.yaml".
func (c Case) ManifestFile() string { return c.Name + "/" + SectionManifests }

// State decodes the case's manifests and builds the State for its config.
// The manifest problems are returned separately; a valid case has none.
func (c Case) State() (*proxy.State, []manifest.Problem) {
	objs, probs := manifest.Decode(c.ManifestFile(), c.Manifests)
	st := proxy.Build(proxy.Inputs{Services: objs.Services, EndpointSlices: objs.EndpointSlices, Nodes: objs.Nodes}, c.Config)
	return st, probs
}

// FormatProblems prints problems as the problems section holds them: one
// String per line, "" for none.
func FormatProblems(ps []proxy.Problem) string {
	var b strings.Builder
	for _, p := range ps {
		b.WriteString(p.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// Format returns the file content of c: the header, the config section
// (as it was read, or printed from Config for a case made in code), the
// manifests, then the expected sections.
func Format(c Case) []byte {
	files := []archiveFile{}
	switch {
	case c.hasConfig:
		files = append(files, archiveFile{SectionConfig, c.rawConfig})
	case !isDefaultConfig(c.Config):
		files = append(files, archiveFile{SectionConfig, FormatConfig(c.Config)})
	}
	files = append(files,
		archiveFile{SectionManifests, c.Manifests},
		archiveFile{SectionProblems, []byte(c.Problems)},
		archiveFile{SectionNFT, []byte(c.NFT)},
		archiveFile{SectionIPTables, []byte(c.IPTables)},
	)
	return formatArchive([]byte(c.Comment), files)
}

func isDefaultConfig(cfg proxy.Config) bool {
	return cfg.NodeName == DefaultNode && len(cfg.ClusterCIDRs) == 0 && !cfg.MasqueradeAll &&
		!cfg.NodePortAddresses.Primary && len(cfg.NodePortAddresses.CIDRs) == 0
}

// Write writes c to path (atomically: a temporary file renamed over it),
// with the expected sections as c holds them and the header, config and
// manifests unchanged.
func Write(path string, c Case) error {
	data := Format(c)
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return nil
}
