# svcproxy — see README.md. Every target works on a fresh machine: Go is
# expected at /usr/local/go; `deps` installs the netfilter tools.

export PATH := /usr/local/go/bin:$(PATH)
export GOFLAGS ?= -buildvcs=false

GO      ?= go
BIN     := bin/svcproxy
PKGS    := ./...

.PHONY: all build test bench bench-go bench-latency golden demo lint deps apiserver clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/svcproxy

# deps installs nftables, iptables and conntrack with apt when any is
# missing (needs root). Without root it only reports what is missing.
deps:
	@missing=""; \
	for t in nft:nftables iptables-legacy:iptables iptables-nft:iptables conntrack:conntrack ip:iproute2; do \
		command -v $${t%%:*} >/dev/null 2>&1 || missing="$$missing $${t##*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" != 0 ]; then echo "deps: missing$$missing (run as root to install)"; exit 0; fi; \
		echo "deps: installing$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

# apiserver builds (once; cached in /var/cache/svcproxy) the real
# kube-apiserver the integration tests run against, and installs etcd.
apiserver:
	hack/kube-apiserver.sh >/dev/null

# test runs the whole suite. Under CI=true, tests that need root, network
# namespaces, netfilter tools or an API server fail instead of skipping.
test: deps lint apiserver
	$(GO) test -count=1 -timeout 30m $(PKGS)

# bench runs every benchmark (docs/bench.md): bench-go, then bench-latency.
# Neither is part of `make test`. Needs root for the real-kernel parts.
bench: bench-go bench-latency

# bench-go runs the Go benchmarks: the model build (proxy/), each backend's
# Render (bench/), and each backend's cold and one-change sync into a real
# network namespace (nft/, iptables/), at BENCH_SCALES services × 10
# endpoints ('|'-separated; 50000 adds minutes per backend), plus
# proxy's BenchmarkDiff. The pattern selects sub-benchmarks named
# services=<one of BENCH_SCALES> under up to two levels of variants named
# by words (nftables, legacy, remove, ...).
BENCH_SCALES ?= 1000|10000
BENCH_PKGS   ?= ./proxy ./bench ./nft ./iptables
BENCHTIME    ?= 1s
bench_n       = ^services=($(BENCH_SCALES))$$
bench_w       = ^[a-zA-Z_-]+$$
bench-go: deps
	$(GO) test -run '^$$' -benchtime $(BENCHTIME) -benchmem -timeout 4h \
		-bench '^BenchmarkDiff$$|.*/$(bench_n)|.*/$(bench_w)/$(bench_n)|.*/$(bench_w)/$(bench_w)/$(bench_n)' $(BENCH_PKGS)

# bench-latency runs cmd/svcproxy-bench: event-to-kernel latency through a
# real kube-apiserver, with the real daemon in a network namespace, at
# BENCH_LATENCY_SERVICES services × 10 endpoints, for each of
# BENCH_LATENCY_MODES (nftables, iptables-legacy, iptables-nft).
# BENCH_LATENCY_ARGS adds flags (e.g. --iterations 50; see --help).
BENCH_LATENCY_SERVICES ?= 10000
BENCH_LATENCY_MODES    ?= nftables,iptables-legacy
BENCH_LATENCY_ARGS     ?=
bench-latency: deps apiserver build
	$(GO) build -o bin/svcproxy-bench ./cmd/svcproxy-bench
	./bin/svcproxy-bench --svcproxy $(BIN) --services $(BENCH_LATENCY_SERVICES) \
		--modes $(BENCH_LATENCY_MODES) $(BENCH_LATENCY_ARGS)

# golden regenerates golden files from the current code (tests named
# *Golden* rewrite their expected output when SVCPROXY_UPDATE_GOLDEN=1).
golden:
	SVCPROXY_UPDATE_GOLDEN=1 $(GO) test -count=1 ./... -run Golden

# demo runs svcproxy on examples/demo in a sandbox of network namespaces
# (needs root): traffic, a live edit, the rules; removes all it created.
demo: deps build
	$(GO) build -o bin/svcproxy-demo ./cmd/svcproxy-demo
	./bin/svcproxy-demo --svcproxy $(BIN) --manifests examples/demo

clean:
	rm -rf bin
