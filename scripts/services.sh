#!/usr/bin/env bash
# Start (if not running) the long-lived local parts of a demo: a Distribution
# registry on 127.0.0.1:5000 and a Prefect server with its UI on 127.0.0.1:4200.
# PIDs go to .local/run/ (only of what this script started) so that scripts/stop.sh stops exactly these.
# The server's UI is told its own API URL (PREFECT_UI_API_URL; FMA_PUBLIC_API_URL when a team reaches
# it through another address, docs/scale.md), so the UI and the links the CLI prints show this server.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/scripts/lib/pids.sh"
run_dir="$here/.local/run"
mkdir -p "$run_dir" "$here/.local/registry" "$here/.local/prefect"
REGISTRY_PORT=${FMA_DEMO_REGISTRY_PORT:-5000}
PREFECT_PORT=${FMA_DEMO_PREFECT_PORT:-4200}
say() { printf 'services: %s\n' "$*"; }

wait_for() {  # url seconds
  for _ in $(seq 1 $(( $2 * 10 ))); do curl -sf --max-time 2 "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
  return 1
}

if ! curl -sf --max-time 2 "http://127.0.0.1:$REGISTRY_PORT/v2/" >/dev/null 2>&1; then
  say "starting docker-registry on 127.0.0.1:$REGISTRY_PORT"
  cat >"$here/.local/registry/config.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $here/.local/registry/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$REGISTRY_PORT
YAML
  nohup docker-registry serve "$here/.local/registry/config.yml" >"$run_dir/registry.log" 2>&1 &
  record_pid registry $!
  wait_for "http://127.0.0.1:$REGISTRY_PORT/v2/" 15 || { say "registry did not start: see $run_dir/registry.log"; exit 1; }
fi

if ! curl -sf --max-time 2 "http://127.0.0.1:$PREFECT_PORT/api/health" >/dev/null 2>&1; then
  say "starting the Prefect server on 127.0.0.1:$PREFECT_PORT (first start creates its database: ~15 s)"
  PREFECT_HOME="$here/.local/prefect" PREFECT_SERVER_ANALYTICS_ENABLED=false \
    PREFECT_UI_API_URL="${FMA_PUBLIC_API_URL:-http://127.0.0.1:$PREFECT_PORT/api}" \
    nohup "$here/.venv/bin/prefect" server start --host 127.0.0.1 --port "$PREFECT_PORT" \
    >"$run_dir/prefect.log" 2>&1 &
  record_pid prefect $!
  wait_for "http://127.0.0.1:$PREFECT_PORT/api/health" 120 || { say "Prefect did not start: see $run_dir/prefect.log"; exit 1; }
fi
say "registry http://127.0.0.1:$REGISTRY_PORT, Prefect UI http://127.0.0.1:$PREFECT_PORT"
