package main

import (
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"github.com/svcproxy/svcproxy/proxy"
)

// runExplain says what the rules do with one packet: which Service it
// matches, which endpoints it can reach (with weights), whether it is
// masqueraded, or why it is rejected or dropped.
func runExplain(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("explain", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	var m modelFlags
	m.register(fs, true)
	var src, dst string
	var fromNode, fromPod bool
	fs.StringVar(&src, "src", "", "source address of the packet")
	fs.StringVar(&dst, "dst", "", "destination HOST:PORT[/PROTO]: an address, or a Service name (name.namespace[.svc.cluster.local]); PROTO tcp (default), udp or sctp")
	fs.BoolVar(&fromNode, "from-node", false, "the packet is sent by the node itself")
	fs.BoolVar(&fromPod, "from-pod", false, "the packet is sent by a pod (also assumed for sources in --cluster-cidr)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	st, _, err := m.load(append(m.files, fs.Args()...), stderr)
	if err != nil {
		fmt.Fprintf(stderr, "svcproxy explain: %v\n", err)
		return 2
	}
	host, port, proto, err := parseDst(dst)
	if err != nil {
		fmt.Fprintf(stderr, "svcproxy explain: --dst: %v\n", err)
		return 2
	}
	srcIP, err := netip.ParseAddr(src)
	if err != nil {
		fmt.Fprintf(stderr, "svcproxy explain: --src: %v\n", err)
		return 2
	}
	dstIP, err := netip.ParseAddr(host)
	if err != nil {
		ip, msg := resolveName(st, host, srcIP)
		if !ip.IsValid() {
			fmt.Fprint(stdout, msg)
			return 0
		}
		fmt.Fprintf(stdout, "- %s resolves to %s\n", host, ip)
		dstIP = ip
	}
	e := st.Explain(proxy.Packet{Src: srcIP.Unmap(), Dst: netip.AddrPortFrom(dstIP.Unmap(), port), Protocol: proto, FromNode: fromNode, FromPod: fromPod})
	fmt.Fprint(stdout, e)
	return 0
}

func parseDst(s string) (host string, port uint16, proto proxy.Protocol, err error) {
	proto = proxy.TCP
	if i := strings.LastIndex(s, "/"); i >= 0 {
		switch p := proxy.Protocol(strings.ToUpper(s[i+1:])); p {
		case proxy.TCP, proxy.UDP, proxy.SCTP:
			proto = p
		default:
			return "", 0, "", fmt.Errorf("unknown protocol %q", s[i+1:])
		}
		s = s[:i]
	}
	h, p, ok := strings.Cut(s, ":")
	if ap, err := netip.ParseAddrPort(s); err == nil { // also [v6]:port
		return ap.Addr().String(), ap.Port(), proto, nil
	}
	if !ok {
		return "", 0, "", fmt.Errorf("%q: want HOST:PORT[/PROTO]", s)
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 {
		return "", 0, "", fmt.Errorf("%q: bad port", p)
	}
	return h, uint16(n), proto, nil
}

// resolveName maps a Service DNS name to its ClusterIP (in the source's
// family), or explains why there is none (ExternalName: DNS only).
func resolveName(st *proxy.State, host string, src netip.Addr) (netip.Addr, string) {
	parts := strings.Split(strings.TrimSuffix(host, "."), ".")
	if len(parts) < 2 {
		return netip.Addr{}, fmt.Sprintf("- %s is not a Service name (name.namespace[.svc.cluster.local])\nverdict: not proxied\n", host)
	}
	ns, name := parts[1], parts[0]
	for _, e := range st.ExternalNames {
		if e.Namespace == ns && e.Name == name {
			return netip.Addr{}, fmt.Sprintf("- %s/%s is an ExternalName Service: DNS only (a CNAME to %s); no rules, nothing is proxied\nverdict: not proxied\n", ns, name, e.ExternalName)
		}
	}
	fam := st.Family(proxy.IPv4)
	if src.Is6() && !src.Is4In6() {
		fam = st.Family(proxy.IPv6)
	}
	for _, sp := range fam.Services {
		if sp.Key.Namespace == ns && sp.Key.Name == name {
			return sp.ClusterIP, ""
		}
	}
	return netip.Addr{}, fmt.Sprintf("- no Service %s/%s with rules in %s\nverdict: not proxied\n", ns, name, fam.Family)
}
