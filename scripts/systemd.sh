#!/usr/bin/env bash
# Install fma-release's services as systemd units: the Prefect server, a worker of the work pool
# (or `fma-release serve`), and the webhook receiver. They restart on failure and start at boot.
#   bash scripts/systemd.sh [--dest DIR] [--etc DIR] [--state DIR] [--enable]
# Renders deploy/systemd/*.service for this checkout into DIR (default /etc/systemd/system), puts
# the example settings files into the settings directory (default /etc/fma-release, mode 0600, never
# over an existing file), checks the units with systemd-analyze verify, and with --enable (where
# systemd runs) reloads systemd and enables and starts the server, the worker and the webhook.
# docs/operations.md says what each unit reads and where the state and the logs are.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dest=/etc/systemd/system etc=/etc/fma-release state=/var/lib/fma-release enable=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dest) dest=$2; shift 2 ;;
    --etc) etc=$2; shift 2 ;;
    --state) state=$2; shift 2 ;;
    --enable) enable=1; shift ;;
    *) echo "systemd: unknown option $1: use --dest DIR, --etc DIR, --state DIR or --enable" >&2; exit 2 ;;
  esac
done
say() { printf 'systemd: %s\n' "$*"; }
[ -x "$here/.venv/bin/fma-release" ] || { say "no .venv in $here: run bash scripts/setup.sh first"; exit 1; }
for dir in "$dest" "$etc" "$state"; do
  case "$dir" in /*) ;; *) say "$dir is not an absolute path: give absolute paths"; exit 2 ;; esac
done
mkdir -p "$dest" "$etc" "$state"
render() { sed -e "s#@HOME@#$here#g" -e "s#@ETC@#$etc#g" -e "s#@STATE@#$state#g" "$1"; }
units=()
for unit in "$here"/deploy/systemd/*.service; do
  name=$(basename "$unit")
  render "$unit" >"$dest/$name"
  units+=("$dest/$name")
done
for example in "$here"/deploy/systemd/*.env.example; do
  target="$etc/$(basename "$example" .example)"
  if [ ! -e "$target" ]; then
    (umask 077; render "$example" >"$target")
    say "wrote $target (commented examples: set what your release needs)"
  fi
done
systemd-analyze verify "${units[@]}"
say "units in $dest: $(cd "$dest" && ls fma-*.service | tr '\n' ' ')(checked with systemd-analyze verify)"
if [ "$enable" = 1 ]; then
  [ -d /run/systemd/system ] || { say "systemd is not running on this machine: nothing enabled"; exit 1; }
  systemctl daemon-reload
  systemctl enable --now fma-prefect-server.service fma-worker.service fma-webhook.service
  say "enabled and started: fma-prefect-server, fma-worker, fma-webhook (journalctl -u fma-worker -f)"
else
  say "to start them at boot: systemctl daemon-reload && systemctl enable --now fma-prefect-server fma-worker fma-webhook"
fi
