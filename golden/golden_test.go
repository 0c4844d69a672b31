package golden_test

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/svcproxy/svcproxy/golden"
	"github.com/svcproxy/svcproxy/iptables"
	"github.com/svcproxy/svcproxy/manifest"
	"github.com/svcproxy/svcproxy/nft"
	"github.com/svcproxy/svcproxy/proxy"
)

const dir = "../testdata/golden"

func load(t *testing.T) []golden.Case {
	t.Helper()
	cases, err := golden.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	return cases
}

// TestGolden: for every case, the manifests decode cleanly, and the
// model's problems and both backends' rendering equal the expected
// sections. With SVCPROXY_UPDATE_GOLDEN=1 (`make golden`) the expected
// sections are rewritten from the current code instead.
func TestGolden(t *testing.T) {
	for _, c := range load(t) {
		t.Run(c.Name, func(t *testing.T) {
			if strings.TrimSpace(c.Comment) == "" {
				t.Error("no comment header saying what the case covers")
			}
			st, mprobs := c.State()
			for _, p := range mprobs {
				t.Errorf("manifest problem: %s", p)
			}
			if t.Failed() {
				return
			}
			got := c
			got.Problems = golden.FormatProblems(st.Problems)
			got.NFT = nft.Render(st)
			got.IPTables = iptables.Render(st)
			if golden.Update() {
				if string(golden.Format(got)) != string(golden.Format(c)) {
					if err := golden.Write(filepath.Join(dir, c.Name+".txtar"), got); err != nil {
						t.Fatal(err)
					}
					t.Logf("rewrote %s.txtar", c.Name)
				}
				return
			}
			for _, s := range []struct{ name, want, got string }{
				{golden.SectionProblems, c.Problems, got.Problems},
				{golden.SectionNFT, c.NFT, got.NFT},
				{golden.SectionIPTables, c.IPTables, got.IPTables},
			} {
				if d := golden.Diff(s.want, s.got); d != "" {
					t.Errorf("section %q differs (want: the file, got: the current code; `make golden` rewrites it):\n%s", s.name, d)
				}
			}
		})
	}
}

// TestFormatRoundTrip: writing a case back changes no byte of its file,
// so that `make golden` on an up-to-date tree is a no-op.
func TestFormatRoundTrip(t *testing.T) {
	for _, c := range load(t) {
		data, err := os.ReadFile(filepath.Join(dir, c.Name+".txtar"))
		if err != nil {
			t.Fatal(err)
		}
		if out := golden.Format(c); string(out) != string(data) {
			t.Errorf("%s: Format(Parse(file)) differs from the file:\n%s", c.Name, golden.Diff(string(data), string(out)))
		}
	}
}

// TestCoverage: the cases together exercise every behaviour the golden
// suite promises to show. Each item is checked on what Build made of the
// case (or on its config and problems), not on the file's text, so a case
// whose manifests do not do what its name says does not count.
func TestCoverage(t *testing.T) {
	cases := load(t)
	if len(cases) < 25 {
		t.Errorf("%d golden cases, want at least 25", len(cases))
	}

	type view struct {
		c     golden.Case
		objs  *manifest.Objects
		st    *proxy.State
		ports []*proxy.ServicePort
	}
	var views []view
	for _, c := range cases {
		st, _ := c.State()
		objs, _ := manifest.Decode(c.ManifestFile(), c.Manifests)
		v := view{c: c, objs: objs, st: st}
		for _, fs := range st.Families() {
			v.ports = append(v.ports, fs.Services...)
		}
		views = append(views, v)
	}
	anyPort := func(f func(v view, sp *proxy.ServicePort) bool) func(view) bool {
		return func(v view) bool {
			return slices.ContainsFunc(v.ports, func(sp *proxy.ServicePort) bool { return f(v, sp) })
		}
	}
	// programmed reports whether Build made rules for the Service.
	programmed := func(v view, svc *corev1.Service) bool {
		return slices.ContainsFunc(v.ports, func(sp *proxy.ServicePort) bool {
			return sp.Key.Namespace == svc.Namespace && sp.Key.Name == svc.Name
		})
	}
	// anyService: some Service of the manifests satisfies f.
	anyService := func(f func(v view, svc *corev1.Service) bool) func(view) bool {
		return func(v view) bool {
			return slices.ContainsFunc(v.objs.Services, func(svc *corev1.Service) bool { return f(v, svc) })
		}
	}
	// lbIngress: some Service has a load-balancer ingress IP with the given
	// ipMode (nil: unset), and that IP is (or is not) programmed.
	lbIngress := func(mode *corev1.LoadBalancerIPMode, wantProgrammed bool) func(view) bool {
		return anyService(func(v view, svc *corev1.Service) bool {
			for _, ing := range svc.Status.LoadBalancer.Ingress {
				if ing.IP == "" || (mode == nil) != (ing.IPMode == nil) || (mode != nil && *mode != *ing.IPMode) {
					continue
				}
				ip, err := netip.ParseAddr(ing.IP)
				if err != nil {
					continue
				}
				isLB := slices.ContainsFunc(v.ports, func(sp *proxy.ServicePort) bool { return slices.Contains(sp.LoadBalancerIPs, ip) })
				if isLB == wantProgrammed {
					return true
				}
			}
			return false
		})
	}
	vip, proxyMode := corev1.LoadBalancerIPModeVIP, corev1.LoadBalancerIPModeProxy
	problemHas := func(s string) func(view) bool {
		return func(v view) bool {
			return slices.ContainsFunc(v.st.Problems, func(p proxy.Problem) bool { return strings.Contains(p.String(), s) })
		}
	}
	hostPrefix := func(ip netip.Addr) netip.Prefix { return netip.PrefixFrom(ip, ip.BitLen()) }
	// Key set of a family, to tell dual-stack from single-stack Services.
	keysOf := func(fs *proxy.FamilyState) map[[2]string]bool {
		m := map[[2]string]bool{}
		for _, sp := range fs.Services {
			m[[2]string{sp.Key.Namespace, sp.Key.Name}] = true
		}
		return m
	}

	checks := []struct {
		what string
		ok   func(view) bool
	}{
		{"ClusterIP Service", anyPort(func(_ view, sp *proxy.ServicePort) bool {
			return !sp.ExternallyAccessible() && sp.InternalVerdict() == proxy.Forward
		})},
		{"NodePort", anyPort(func(_ view, sp *proxy.ServicePort) bool { return sp.NodePort != 0 })},
		{"LoadBalancer ipMode unset (programmed)", lbIngress(nil, true)},
		{"LoadBalancer ipMode VIP (programmed)", lbIngress(&vip, true)},
		{"LoadBalancer ipMode Proxy (not programmed)", lbIngress(&proxyMode, false)},
		{"externalIPs", anyPort(func(_ view, sp *proxy.ServicePort) bool { return len(sp.ExternalIPs) > 0 })},
		{"ExternalName", func(v view) bool { return len(v.st.ExternalNames) > 0 }},
		{"headless (no rules)", anyService(func(v view, svc *corev1.Service) bool {
			return svc.Spec.ClusterIP == corev1.ClusterIPNone && !programmed(v, svc)
		})},
		{"service-proxy-name label (no rules)", anyService(func(v view, svc *corev1.Service) bool {
			_, ok := svc.Labels[proxy.LabelServiceProxyName]
			return ok && svc.Spec.ClusterIP != corev1.ClusterIPNone && !programmed(v, svc)
		})},
		{"dual-stack", func(v view) bool {
			k6 := keysOf(v.st.IPv6)
			for k := range keysOf(v.st.IPv4) {
				if k6[k] {
					return true
				}
			}
			return false
		}},
		{"IPv6-only", func(v view) bool { return len(v.st.IPv6.Services) > 0 && len(v.st.IPv4.Services) == 0 }},
		{"TCP", anyPort(func(_ view, sp *proxy.ServicePort) bool { return sp.Key.Protocol == proxy.TCP })},
		{"UDP", anyPort(func(_ view, sp *proxy.ServicePort) bool { return sp.Key.Protocol == proxy.UDP })},
		{"SCTP", anyPort(func(_ view, sp *proxy.ServicePort) bool { return sp.Key.Protocol == proxy.SCTP })},
		{"session affinity, default timeout", anyPort(func(_ view, sp *proxy.ServicePort) bool { return sp.AffinitySeconds == proxy.DefaultAffinitySeconds })},
		{"session affinity, custom timeout", anyPort(func(_ view, sp *proxy.ServicePort) bool {
			return sp.AffinitySeconds > 0 && sp.AffinitySeconds != proxy.DefaultAffinitySeconds
		})},
		{"loadBalancerSourceRanges", anyPort(func(_ view, sp *proxy.ServicePort) bool {
			return len(sp.SourceRanges) > 0 && !slices.Contains(sp.SourceRanges, hostPrefix(sp.LoadBalancerIPs[0]))
		})},
		{"loadBalancerSourceRanges holding the node IP", anyPort(func(_ view, sp *proxy.ServicePort) bool {
			return len(sp.SourceRanges) > 0 && slices.Contains(sp.SourceRanges, hostPrefix(sp.LoadBalancerIPs[0]))
		})},
		{"internalTrafficPolicy Local, forwarding", anyPort(func(_ view, sp *proxy.ServicePort) bool {
			return sp.InternalPolicyLocal && sp.InternalVerdict() == proxy.Forward
		})},
		{"externalTrafficPolicy Local with local endpoints", anyPort(func(_ view, sp *proxy.ServicePort) bool {
			return sp.ExternalPolicyLocal && sp.ExternalVerdict() == proxy.Forward
		})},
		{"externalTrafficPolicy Local without local endpoints (drop)", anyPort(func(_ view, sp *proxy.ServicePort) bool {
			return sp.ExternalPolicyLocal && sp.ExternalVerdict() == proxy.Drop
		})},
		{"healthCheckNodePort", anyPort(func(_ view, sp *proxy.ServicePort) bool { return sp.HealthCheckNodePort != 0 })},
		{"topology hints by zone", anyPort(func(_ view, sp *proxy.ServicePort) bool { return sp.Topology == "Zone" })},
		{"topology hints by node", anyPort(func(_ view, sp *proxy.ServicePort) bool { return sp.Topology == "Node" })},
		{"terminating fallback, cluster", anyPort(func(_ view, sp *proxy.ServicePort) bool {
			return len(sp.ClusterEndpoints) > 0 && !sp.ClusterEndpoints[0].Ready && sp.ClusterEndpoints[0].Terminating
		})},
		{"terminating fallback, local", anyPort(func(_ view, sp *proxy.ServicePort) bool {
			return len(sp.LocalEndpoints) > 0 && !sp.LocalEndpoints[0].Ready && sp.LocalEndpoints[0].Terminating
		})},
		{"no endpoint: reject", anyPort(func(_ view, sp *proxy.ServicePort) bool {
			return sp.InternalVerdict() == proxy.Reject && sp.ExternallyAccessible()
		})},
		{"no local endpoint: internal drop", anyPort(func(_ view, sp *proxy.ServicePort) bool { return sp.InternalVerdict() == proxy.Drop })},
		{"masqueradeAll", func(v view) bool { return v.st.IPv4.MasqueradeAll && len(v.ports) > 0 }},
		{"cluster CIDR detection on", func(v view) bool { return len(v.st.IPv4.ClusterCIDRs) > 0 && len(v.st.IPv4.Services) > 0 }},
		{"cluster CIDR detection off", func(v view) bool {
			return len(v.st.IPv4.ClusterCIDRs) == 0 && !v.st.IPv4.MasqueradeAll && len(v.st.IPv4.Services) > 0
		}},
		{"nodeport-addresses unset (all local)", func(v view) bool {
			return v.st.IPv4.NodePorts.AllLocal && anyPort(func(_ view, sp *proxy.ServicePort) bool { return sp.NodePort != 0 })(v)
		}},
		{"nodeport-addresses primary", func(v view) bool {
			return v.c.Config.NodePortAddresses.Primary && len(v.st.IPv4.NodePorts.Addresses) == 1
		}},
		{"nodeport-addresses CIDRs", func(v view) bool {
			return len(v.c.Config.NodePortAddresses.CIDRs) > 0 && len(v.st.IPv4.NodePorts.Addresses) > 0
		}},
		{"nodeport-addresses matching none", func(v view) bool {
			np := v.st.IPv4.NodePorts
			return !np.AllLocal && len(np.Addresses) == 0
		}},
		{"multiple ports", func(v view) bool {
			n := map[[2]string]int{}
			for _, sp := range v.ports {
				n[[2]string{sp.Key.Namespace, sp.Key.Name}]++
			}
			for _, c := range n {
				if c >= 3 {
					return true
				}
			}
			return false
		}},
		{"named port matching (one port, several target ports)", anyPort(func(_ view, sp *proxy.ServicePort) bool {
			ports := map[uint16]bool{}
			for _, e := range sp.ClusterEndpoints {
				ports[e.Port] = true
			}
			return len(ports) > 1
		})},
		{"conflicting destinations", problemHas("is already used by")},
		{"bad input: invalid IP", problemHas("invalid IP")},
		{"bad input: port out of range", problemHas("is out of range 1-65535")},
		{"bad input: unknown protocol", problemHas("unknown protocol")},
		{"bad input: wrong-family endpoint", problemHas("is not an ipv4 address")},
		{"bad input: slice without service-name label", problemHas("belongs to no Service")},
	}
	for _, ch := range checks {
		var in []string
		for _, v := range views {
			if ch.ok(v) {
				in = append(in, v.c.Name)
			}
		}
		if len(in) == 0 {
			t.Errorf("no golden case covers: %s", ch.what)
		} else {
			t.Logf("%-55s %s", ch.what, strings.Join(in, ", "))
		}
	}
}
