// Package nft programs a proxy.State into the kernel as nftables rules,
// over netlink (github.com/google/nftables, and batches of its own for full
// syncs: rawtx.go), and renders the same rules as canonical text. See
// Backend, and docs/architecture.md for the layout.
package nft
