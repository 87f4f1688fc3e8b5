#!/usr/bin/env bash
# Stop what this checkout's scripts started (setup.sh: dockerd; postgres.sh: the cluster; services.sh and
# demo.sh: the registry and the Prefect server), and nothing else: each .local/run/NAME.pid holds the PID
# and the kernel's start time of a process a script started, and a PID whose process is not that one any
# more (it ended, and the number was reused) is forgotten without a signal. A service that was already
# running when a script looked (another checkout's, a team's) was never recorded, so it is left alone.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/scripts/lib/pids.sh"
for pidfile in "$here"/.local/run/*.pid; do
  [ -e "$pidfile" ] || continue
  name=$(basename "$pidfile" .pid)
  read -r pid recorded <"$pidfile" || true
  if [ -n "${pid:-}" ] && kill -0 "$pid" 2>/dev/null; then
    now=$(process_start "$pid" || true)
    if [ -n "${recorded:-}" ] && [ "$now" != "$recorded" ]; then
      echo "stop: $name: pid $pid is another process now; left alone"
    elif [ -z "${recorded:-}" ]; then
      echo "stop: $name: pid $pid was recorded without its start time (an older script); left alone"
    else
      echo "stop: $name (pid $pid)"
      # PostgreSQL's SIGTERM waits for every client to leave; SIGINT is its fast shutdown.
      if [ "$name" = postgres ]; then kill -INT "$pid" 2>/dev/null; else kill "$pid" 2>/dev/null; fi
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
  fi
  rm -f "$pidfile"
done
