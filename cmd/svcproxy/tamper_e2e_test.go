package main

import (
	"net/netip"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/svcproxy/svcproxy/dptest"
	"github.com/svcproxy/svcproxy/sandbox"
)

// metricValue reads one unlabelled sample from the daemon's /metrics
// (-1 when it is not there).
func metricValue(t *testing.T, ns *sandbox.NS, addr, name string) float64 {
	t.Helper()
	code, body, err := httpInNS(ns, "http://"+addr+"/metrics")
	if err != nil || code != 200 {
		t.Fatalf("/metrics: %d %v", code, err)
	}
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return v
}

// TestTamperingIsRepairedAndCounted: the daemon's periodic full syncs
// (--sync-period) count nothing on an untouched node; when someone breaks
// svcproxy's rules, traffic to a Service stops, the next full sync repairs
// it, and svcproxy_sync_proxy_rules_repairs_total counts it once — in
// nftables mode and in both iptables variants.
func TestTamperingIsRepairedAndCounted(t *testing.T) {
	bin := buildBinary(t)
	for _, c := range []struct {
		name   string
		args   []string
		tamper []string
	}{
		{"nftables", []string{"--proxy-mode", "nftables"}, []string{"nft", "flush", "table", "ip", "svcproxy"}},
		{"iptables-legacy", []string{"--proxy-mode", "iptables", "--iptables-mode", "legacy"},
			[]string{"iptables-legacy", "-t", "nat", "-F", "SVCP-SERVICES"}},
		{"iptables-nft", []string{"--proxy-mode", "iptables", "--iptables-mode", "nft"},
			[]string{"iptables-nft", "-t", "nat", "-F", "SVCP-SERVICES"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			env := dptest.NewEnv(t)
			sandbox.Require(t, c.tamper[0])
			const metrics = "127.0.0.1:10249"
			startDaemon(t, bin, env.Node, append([]string{"--manifests", manifestDir(t), "--hostname-override", "node-a",
				"--cluster-cidr", "10.244.0.0/16", "--min-sync-period", "0", "--sync-period", "1s",
				"--healthz-bind-address", "", "--metrics-bind-address", metrics}, c.args...)...)
			web := func() error {
				got, err := answers(env, "10.96.0.10:80", 10)
				if err != nil || len(got) == 0 {
					return errorf("answers %v, %v", got, err)
				}
				return nil
			}
			eventually(t, "traffic", web)
			repairs := func() float64 { return metricValue(t, env.Node, metrics, "svcproxy_sync_proxy_rules_repairs_total") }
			// Periodic full syncs, done or (nftables) found unnecessary by
			// the kernel's ruleset generation.
			fullSyncs := func() float64 {
				skipped := metricValue(t, env.Node, metrics, "svcproxy_sync_full_proxy_rules_skipped_total")
				return metricValue(t, env.Node, metrics, "kubeproxy_sync_full_proxy_rules_duration_seconds_count") + max(skipped, 0)
			}

			// Untouched: full syncs run (or are skipped) and count nothing.
			start := fullSyncs()
			eventually(t, "three full syncs", func() error {
				if n := fullSyncs(); n < start+3 {
					return errorf("%v full syncs", n)
				}
				return nil
			})
			if n := repairs(); n != 0 {
				t.Fatalf("repairs_total %v on an untouched node (want 0; -1: not exported)", n)
			}

			env.Node.MustRun(t, c.tamper...)
			broken := time.Now()
			// Usually seen broken: unless the next full sync came first.
			_, err := env.Request(env.Client, "tcp", netip.MustParseAddrPort("10.96.0.10:80"), 300*time.Millisecond)
			eventually(t, "repaired and counted", func() error {
				if n := repairs(); n != 1 {
					return errorf("repairs_total %v", n)
				}
				return web()
			})
			t.Logf("request right after the tampering: %v; repaired and counted within %v", err,
				time.Since(broken).Round(100*time.Millisecond))

			// Later full syncs find nothing more.
			start = fullSyncs()
			eventually(t, "three more full syncs", func() error {
				if n := fullSyncs(); n < start+3 {
					return errorf("%v full syncs", n)
				}
				return nil
			})
			if n := repairs(); n != 1 {
				t.Errorf("repairs_total %v after more untouched full syncs, want 1", n)
			}
		})
	}
}
