#!/usr/bin/env bash
# Enable linux/arm64 builds on an amd64 machine without systemd (called by scripts/setup.sh):
# mount binfmt_misc, install Debian's qemu-user-static, register qemu-aarch64 from its
# /usr/lib/binfmt.d file, and fetch an arm64 static busybox for the tests to
# .local/arm64/bin/busybox. Idempotent; prints one clear line and exits 1 when it cannot.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
say() { printf 'setup: %s\n' "$*"; }
binfmt=/proc/sys/fs/binfmt_misc

if [ "$(uname -m)" = aarch64 ]; then
  say "arm64 machine: linux/arm64 builds run natively"
else
  if [ ! -e "$binfmt/register" ]; then
    mount -t binfmt_misc binfmt_misc "$binfmt" 2>/dev/null \
      || { say "cannot mount binfmt_misc at $binfmt (a container without the privilege?): no linux/arm64 builds"; exit 1; }
  fi
  conf=/usr/lib/binfmt.d/qemu-aarch64.conf
  if [ ! -f "$conf" ]; then
    say "installing qemu-user-static"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends qemu-user-static >/dev/null \
      || { say "cannot install qemu-user-static: no linux/arm64 builds"; exit 1; }
  fi
  if [ ! -e "$binfmt/qemu-aarch64" ]; then
    # The file is one registration line (":name:type:offset:magic:mask:interpreter:flags").
    grep -v '^#' "$conf" | grep . >"$binfmt/register" \
      || { say "cannot register qemu-aarch64 in $binfmt: no linux/arm64 builds"; exit 1; }
  fi
  grep -qx enabled "$binfmt/qemu-aarch64" || { say "qemu-aarch64 is registered but disabled in $binfmt"; exit 1; }
  say "linux/arm64 builds run under qemu ($(sed -n 's/^interpreter //p' "$binfmt/qemu-aarch64"))"
fi

# An arm64 static busybox for the multi-platform tests (their base image holds it).
busybox="$here/.local/arm64/bin/busybox"
if [ ! -x "$busybox" ]; then
  say "fetching busybox-static:arm64"
  dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  chmod 777 "$tmp"  # apt downloads as the _apt user
  (cd "$tmp" && { apt-get download -qq busybox-static:arm64 2>/dev/null \
      || { apt-get update -qq && apt-get download -qq busybox-static:arm64; }; }) \
    || { say "cannot download busybox-static:arm64 from the Debian mirror"; exit 1; }
  dpkg-deb -x "$tmp"/busybox-static_*_arm64.deb "$tmp/root"
  mkdir -p "$(dirname "$busybox")"
  cp "$tmp/root/bin/busybox" "$busybox"
fi
say "arm64 busybox: $busybox"
