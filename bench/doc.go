// Package bench holds benchmarks that span packages: each backend's Render
// (nft.Render, iptables.Render) of a synthetic cluster (package scale) at
// 1k, 10k and 50k services × 10 endpoints. `make bench` runs them with the
// model's (proxy/) and the backends' real-kernel benchmarks (nft/,
// iptables/); docs/bench.md lists the commands and how to select scales.
package bench
