package iptables

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"

	goipt "github.com/coreos/go-iptables/iptables"

	"github.com/svcproxy/svcproxy/proxy"
)

// Mode selects the iptables variant: the legacy x_tables kernel interface
// or the nf_tables one (iptables-nft). Both take the same rules.
type Mode int

const (
	// ModeAuto picks the variant the node already uses (see Backend).
	ModeAuto Mode = iota
	// ModeLegacy uses iptables-legacy-restore, iptables-legacy-save and
	// iptables-legacy (and the ip6 variants).
	ModeLegacy
	// ModeNFT uses iptables-nft-restore, iptables-nft-save and iptables-nft
	// (and the ip6 variants).
	ModeNFT
)

func (m Mode) String() string {
	switch m {
	case ModeLegacy:
		return "legacy"
	case ModeNFT:
		return "nft"
	}
	return "auto"
}

// ParseMode parses "auto", "legacy" or "nft".
func ParseMode(s string) (Mode, error) {
	for _, m := range []Mode{ModeAuto, ModeLegacy, ModeNFT} {
		if s == m.String() {
			return m, nil
		}
	}
	return ModeAuto, fmt.Errorf("iptables mode %q: want auto, legacy or nft", s)
}

// command is the name of a tool of mode m for family f: tool is "" (the
// iptables command itself), "-save" or "-restore".
func command(m Mode, f proxy.Family, tool string) string {
	base := "iptables"
	if f == proxy.IPv6 {
		base = "ip6tables"
	}
	return base + "-" + m.String() + tool
}

// run runs an iptables tool in the backend's network namespace (through
// `ip netns exec`), feeding it stdin, and returns its standard output.
func (b *Backend) run(ctx context.Context, stdin string, name string, args ...string) (string, error) {
	argv := append([]string{name}, args...)
	if b.netns != "" {
		argv = append([]string{"ip", "netns", "exec", b.netns}, argv...)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	err := cmd.Run()
	if cmd.ProcessState != nil {
		b.toolCPU += cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	if err != nil {
		var msg []string // stderr on one line
		for _, l := range strings.Split(errb.String(), "\n") {
			if l = strings.TrimSpace(l); l != "" {
				msg = append(msg, l)
			}
		}
		return out.String(), fmt.Errorf("%s: %w: %s", name, err, strings.Join(msg, " "))
	}
	return out.String(), nil
}

var failedLine = regexp.MustCompile(`\bline (\d+)\b`)

// restore applies payload with `iptables-restore --noflush -w`: one
// transaction per table in it.
func (b *Backend) restore(ctx context.Context, m Mode, f proxy.Family, payload string) error {
	_, err := b.run(ctx, payload, command(m, f, "-restore"), "--noflush", "-w")
	if err != nil {
		// Name the line iptables-restore refused.
		if sm := failedLine.FindStringSubmatch(err.Error()); sm != nil {
			n, _ := strconv.Atoi(sm[1])
			if lines := strings.Split(payload, "\n"); n >= 1 && n <= len(lines) {
				err = fmt.Errorf("%w (line %d: %q)", err, n, lines[n-1])
			}
		}
	}
	return err
}

func (b *Backend) save(ctx context.Context, m Mode, f proxy.Family) (string, error) {
	return b.run(ctx, "", command(m, f, "-save"))
}

// probe returns go-iptables handles for both families of mode m, or an
// error when its tools are missing or too old for --random-fully.
func probe(m Mode) (map[proxy.Family]*goipt.IPTables, error) {
	out := map[proxy.Family]*goipt.IPTables{}
	for f, proto := range map[proxy.Family]goipt.Protocol{proxy.IPv4: goipt.ProtocolIPv4, proxy.IPv6: goipt.ProtocolIPv6} {
		ipt, err := goipt.New(goipt.IPFamily(proto), goipt.Path(command(m, f, "")))
		if err != nil {
			return nil, fmt.Errorf("iptables %s mode: %w", m, err)
		}
		if !ipt.HasRandomFully() {
			v1, v2, v3 := ipt.GetIptablesVersion()
			return nil, fmt.Errorf("iptables %s mode: %s is v%d.%d.%d, older than 1.6.2 (no --random-fully)", m, command(m, f, ""), v1, v2, v3)
		}
		out[f] = ipt
	}
	return out, nil
}

// detect picks the variant for ModeAuto, among those whose tools work: the
// one holding svcproxy's chains (a previous run), else the one kubelet or
// kube-proxy use (KUBE-IPTABLES-HINT / KUBE-KUBELET-CANARY chains), else
// the one with more rules (kube-proxy's iptables-wrapper heuristic), nft on
// a tie.
func (b *Backend) detect(ctx context.Context) (Mode, map[proxy.Family]*goipt.IPTables, error) {
	type candidate struct {
		m          Mode
		ipt        map[proxy.Family]*goipt.IPTables
		ours, hint bool
		rules      int
	}
	var cands []candidate
	var errs []string
	for _, m := range []Mode{ModeNFT, ModeLegacy} {
		ipt, err := probe(m)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		c := candidate{m: m, ipt: ipt}
		for _, f := range []proxy.Family{proxy.IPv4, proxy.IPv6} {
			out, serr := b.save(ctx, m, f)
			if serr != nil {
				err = serr
				break
			}
			for _, line := range strings.Split(out, "\n") {
				switch {
				case strings.HasPrefix(line, ":"+chainPrefix):
					c.ours = true
				case strings.HasPrefix(line, ":KUBE-IPTABLES-HINT "), strings.HasPrefix(line, ":KUBE-KUBELET-CANARY "):
					c.hint = true
				case strings.HasPrefix(line, "-A "):
					c.rules++
				}
			}
		}
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		cands = append(cands, c)
	}
	if len(cands) == 0 {
		return ModeAuto, nil, fmt.Errorf("no usable iptables variant: %s", strings.Join(errs, "; "))
	}
	best := cands[0]
	for _, c := range cands[1:] {
		better := false
		switch {
		case c.ours != best.ours:
			better = c.ours
		case c.hint != best.hint:
			better = c.hint
		default:
			better = c.rules > best.rules
		}
		if better {
			best = c
		}
	}
	return best.m, best.ipt, nil
}
