// Package iptables will program a proxy.State with iptables-restore
// payloads (legacy and nft variants). Not implemented yet: see issue
// "iptables backend".
package iptables
