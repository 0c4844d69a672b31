// Package iptables programs a proxy.State with iptables-restore payloads,
// in the legacy or the nft variant of iptables: the same packet behaviour
// as the nftables backend (package nft), in kube-proxy's iptables layout
// with svcproxy's own chain prefix, SVCP-.
//
// The layout is described in layout.go; per family it is
//
//	nat     SVCP-SERVICES, SVCP-NODEPORTS (dispatch), SVCP-MARK-MASQ,
//	        SVCP-POSTROUTING, and per service port SVCP-SVC-*, SVCP-SVL-*,
//	        SVCP-HPN-* (hairpin), SVCP-EXT-*, and, with session affinity,
//	        SVCP-SEP-* (one per endpoint)
//	filter  SVCP-INPUT, SVCP-FORWARD, SVCP-OUTPUT (per hook), SVCP-FIREWALL,
//	        SVCP-SERVICES, SVCP-NODEPORTS (reject / drop), and per service
//	        port SVCP-FW-* (load-balancer source ranges)
//
// plus one jump from each of nat PREROUTING, OUTPUT, POSTROUTING and filter
// INPUT, FORWARD, OUTPUT, inserted at position 1 when missing.
//
// Render prints what iptables-save prints for all of that (see Canonical
// for the exact form). The legacy and nft variants of iptables 1.8.9 print
// every rule svcproxy writes identically, so Render does not depend on the
// mode; the kernel tests compare both variants' listings with it.
package iptables
