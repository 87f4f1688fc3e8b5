#!/usr/bin/env bash
# Stop what scripts/setup.sh and scripts/demo.sh started (and nothing else).
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
for pidfile in "$here"/.local/run/*.pid; do
  [ -e "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    echo "stop: $(basename "$pidfile" .pid) (pid $pid)"
    # PostgreSQL's SIGTERM waits for every client to leave; SIGINT is its fast shutdown.
    if [ "$(basename "$pidfile")" = postgres.pid ]; then kill -INT "$pid" 2>/dev/null; else kill "$pid" 2>/dev/null; fi
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$pidfile"
done
