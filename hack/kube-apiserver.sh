#!/usr/bin/env bash
# hack/kube-apiserver.sh — build (once) and cache a real kube-apiserver for
# integration tests, and make sure etcd is installed.
#
# Usage: hack/kube-apiserver.sh
#
# Prints the absolute path of the kube-apiserver binary on stdout; all logs go
# to stderr. Idempotent: when the cached binary exists and its recorded build
# recipe matches, it exits in milliseconds without running go.
#
# No prebuilt binaries are downloaded. kube-apiserver is compiled from source
# fetched through the Go module proxy: a throwaway module (under the cache
# dir) requires k8s.io/kubernetes and replaces every staging module that
# k8s.io/kubernetes requires at v0.0.0 (k8s.io/api, k8s.io/client-go, ...) by
# the published staging release (v1.X.Y -> v0.X.Y). A cold build takes ~8
# minutes on 2 cores and uses ~625 MB of module cache and ~3 GB of Go build
# cache (the default GOMODCACHE/GOCACHE, so later rebuilds are fast).
#
# etcd comes from Debian's etcd-server package (/usr/bin/etcd), installed with
# apt when missing and running as root. The package's own service is kept
# from starting (policy-rc.d); tests run the binary directly.
#
# Environment:
#   SVCPROXY_CACHE       cache dir (default /var/cache/svcproxy); persists
#                        across runs on one machine, a fresh CI machine builds.
#   KUBE_VERSION         k8s.io/kubernetes version (default v1.36.3).
#   SVCPROXY_SKIP_ETCD=1 do not check/install etcd.
#   GO                   go command (default: go on PATH, else /usr/local/go/bin/go).
#
# Exit status: 0 and the path on stdout on success; non-zero with a message on
# stderr otherwise (go/proxy unavailable, build failure, apt failure).
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.36.3}"
CACHE="${SVCPROXY_CACHE:-/var/cache/svcproxy}"
ETCD_BIN=/usr/bin/etcd

log() { printf 'kube-apiserver.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

case "$KUBE_VERSION" in
v1.*.*) ;;
*) die "KUBE_VERSION must look like v1.X.Y, got '$KUBE_VERSION'" ;;
esac
# Staging modules are published as v0.X.Y for Kubernetes v1.X.Y.
STAGING_VERSION="v0.${KUBE_VERSION#v1.}"

GOOS_GOARCH="$(uname -s | tr '[:upper:]' '[:lower:]')/$(uname -m | sed 's/x86_64/amd64/;s/aarch64/arm64/')"
# RECIPE identifies how the binary was built; bump "recipe=N" whenever the
# build steps below change so cached binaries are rebuilt.
RECIPE="recipe=1 k8s.io/kubernetes@${KUBE_VERSION} staging=${STAGING_VERSION} ${GOOS_GOARCH} cgo=0"
DIR="${CACHE}/kube-apiserver-${KUBE_VERSION}"
BIN="${DIR}/kube-apiserver"
STAMP="${DIR}/kube-apiserver.version"

cached() {
	[[ -x "$BIN" && -f "$STAMP" ]] && [[ "$(<"$STAMP")" == "$RECIPE" ]]
}

etcd_ok() {
	[[ "${SVCPROXY_SKIP_ETCD:-}" == 1 || -x "$ETCD_BIN" ]]
}

# Fast path: nothing to do, no lock, no go invocation. Without root a
# missing etcd cannot be installed: say so, and leave it to the caller.
if cached && { etcd_ok || [[ "$(id -u)" != 0 ]]; }; then
	etcd_ok || log "warning: $ETCD_BIN missing and not root; install Debian package etcd-server (apt-get install etcd-server)"
	printf '%s\n' "$BIN"
	exit 0
fi

if ! mkdir -p "$DIR" 2>/dev/null || [[ ! -w "$DIR" ]]; then
	die "cache dir $DIR is not writable (run as root once, or set SVCPROXY_CACHE to a writable dir)"
fi
command -v flock >/dev/null || die "flock (util-linux) not found"

# Serialise concurrent invocations: the second one waits, then finds the
# binary built by the first.
exec 9>"${CACHE}/.kube-apiserver.lock" || die "cannot open lock file ${CACHE}/.kube-apiserver.lock"
if ! flock -n 9; then
	log "another invocation holds ${CACHE}/.kube-apiserver.lock; waiting (up to 30m)"
	flock -w 1800 9 || die "timed out waiting for ${CACHE}/.kube-apiserver.lock"
fi

install_etcd() {
	etcd_ok && return 0
	if [[ "$(id -u)" != 0 ]]; then
		log "warning: $ETCD_BIN missing and not root; install Debian package etcd-server (apt-get install etcd-server)"
		return 0
	fi
	command -v apt-get >/dev/null || die "$ETCD_BIN missing and apt-get not available"
	log "installing etcd-server with apt"
	# Keep the package's service from starting a default etcd instance (on
	# 127.0.0.1:2379) on machines with an init system: policy-rc.d exit 101
	# forbids invoke-rc.d/deb-systemd-invoke from starting services.
	local policy=/usr/sbin/policy-rc.d created_policy=0
	if [[ ! -e "$policy" ]]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 755 "$policy"
		created_policy=1
	fi
	local rc=0
	{
		DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -qq &&
			DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends etcd-server
	} >&2 || rc=$?
	if [[ $created_policy == 1 ]]; then rm -f "$policy"; fi
	[[ $rc == 0 ]] || die "apt-get install etcd-server failed (exit $rc)"
	# The package enables etcd.service for the next boot; disable it (works
	# without a running systemd too) and stop it if systemd did start it.
	if command -v systemctl >/dev/null; then
		systemctl disable etcd >/dev/null 2>&1 || true
		if [[ -d /run/systemd/system ]]; then systemctl stop etcd >/dev/null 2>&1 || true; fi
	fi
	[[ -x "$ETCD_BIN" ]] || die "etcd-server installed but $ETCD_BIN is missing"
	log "etcd: $("$ETCD_BIN" --version 2>/dev/null | head -n1)"
}

build() {
	cached && return 0

	local gocmd="${GO:-}"
	if [[ -z "$gocmd" ]]; then
		if command -v go >/dev/null; then gocmd=go
		elif [[ -x /usr/local/go/bin/go ]]; then gocmd=/usr/local/go/bin/go
		else die "go not found (install Go or set GO=/path/to/go)"
		fi
	fi

	# Never switch toolchains or pick up a workspace behind our back; keep the
	# caller's GOFLAGS (e.g. -buildvcs=false) but resolve modules freely.
	export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0
	export GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod"

	log "building kube-apiserver ${KUBE_VERSION} into ${DIR} with $("$gocmd" version) (cold: ~8 min on 2 cores, ~3.5 GB of Go caches)"
	local start=$SECONDS

	# 1. The module proxy must serve k8s.io/kubernetes; fail early and clearly.
	local dl gomod
	if ! dl="$(cd / && "$gocmd" mod download -json "k8s.io/kubernetes@${KUBE_VERSION}" 2>&1)"; then
		log "$dl"
		die "cannot download k8s.io/kubernetes@${KUBE_VERSION} via the Go module proxy (GOPROXY=$("$gocmd" env GOPROXY)); check network/GOPROXY"
	fi
	gomod="$(printf '%s\n' "$dl" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
	[[ -f "$gomod" ]] || die "go mod download gave no GoMod file for k8s.io/kubernetes@${KUBE_VERSION}: $dl"

	# 2. Staging modules required at v0.0.0 (replaced by ./staging/... in
	#    kubernetes' own go.mod; those replaces don't apply to dependents).
	local staging
	staging="$(sed -nE 's#^(require[[:space:]]+)?[[:space:]]*(k8s\.io/[^[:space:]]+)[[:space:]]+v0\.0\.0([[:space:]].*)?$#\2#p' "$gomod" | sort -u)"
	[[ -n "$staging" ]] || die "found no staging modules (k8s.io/* v0.0.0) in $gomod"

	# 3. Throwaway module.
	local mod="${DIR}/build"
	rm -rf "$mod"
	mkdir -p "$mod"
	local goversion
	goversion="$(sed -nE 's/^go[[:space:]]+([0-9.]+).*/\1/p' "$gomod" | head -n1)"
	{
		printf '// Generated by hack/kube-apiserver.sh; throwaway module to build kube-apiserver.\n'
		printf 'module svcproxy.local/kube-apiserver-build\n\ngo %s\n\n' "${goversion:-1.26.0}"
		printf 'require k8s.io/kubernetes %s\n\nreplace (\n' "$KUBE_VERSION"
		local m
		for m in $staging; do printf '\t%s => %s %s\n' "$m" "$m" "$STAGING_VERSION"; done
		printf ')\n'
	} >"$mod/go.mod"
	log "throwaway module $mod/go.mod replaces $(wc -w <<<"$staging") staging modules with ${STAGING_VERSION}"

	# 4. Build. Version info as in Kubernetes' own builds (hack/lib/version.sh),
	#    so /version reports the real version instead of v0.0.0-master.
	local minor="${KUBE_VERSION#v1.}"
	minor="${minor%%.*}"
	local pkg=k8s.io/component-base/version
	local ldflags="-s -w -X ${pkg}.gitVersion=${KUBE_VERSION} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor} -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=1970-01-01T00:00:00Z"
	local tmp="${BIN}.tmp.$$"
	if ! (cd "$mod" && "$gocmd" build -trimpath -ldflags "$ldflags" -o "$tmp" k8s.io/kubernetes/cmd/kube-apiserver) >&2; then
		rm -f "$tmp"
		die "go build k8s.io/kubernetes/cmd/kube-apiserver failed (module $mod)"
	fi
	"$tmp" --version >&2 || { rm -f "$tmp"; die "built binary does not run"; }

	# 5. Publish atomically: binary first, then the stamp that marks it valid.
	mv -f "$tmp" "$BIN"
	printf '%s\n' "$RECIPE" >"${STAMP}.tmp.$$"
	mv -f "${STAMP}.tmp.$$" "$STAMP"
	log "built $BIN in $((SECONDS - start))s"
}

install_etcd
build
printf '%s\n' "$BIN"
