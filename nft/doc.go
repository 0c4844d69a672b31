// Package nft will program a proxy.State into the kernel as nftables rules
// (github.com/google/nftables over netlink, one atomic transaction per
// sync). Not implemented yet: see issue "nftables backend".
package nft
