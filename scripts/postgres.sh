#!/usr/bin/env bash
# A PostgreSQL cluster of the project's own for the Prefect server (docs/scale.md): Debian's
# postgresql package, a cluster "fma" on 127.0.0.1:${FMA_PG_PORT:-5433} started with pg_ctlcluster
# (no systemd here), a role that may create databases (each test server makes its own), and a
# database "prefect" for a team's server. Idempotent. Only when this script started the cluster does
# its PID go to .local/run/postgres.pid (so scripts/stop.sh stops it): a cluster that was already
# running (another checkout's, a team's) is left alone. Prints the connection URL's base on the last line.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/scripts/lib/pids.sh"
run_dir="$here/.local/run"
mkdir -p "$run_dir"
say() { printf 'postgres: %s\n' "$*"; }
port=${FMA_PG_PORT:-5433}
user=${FMA_PG_USER:-fma}
password=${FMA_PG_PASSWORD:-fma}
cluster=fma

if ! command -v pg_ctlcluster >/dev/null || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  say "installing postgresql"
  export DEBIAN_FRONTEND=noninteractive
  # The package would create and start a cluster "main" of its own; only ours is wanted.
  mkdir -p /etc/postgresql-common
  grep -qs '^create_main_cluster' /etc/postgresql-common/createcluster.conf \
    || echo 'create_main_cluster = false' >>/etc/postgresql-common/createcluster.conf
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi
version=$(ls /usr/lib/postgresql | sort -V | tail -1)

if ! pg_lsclusters -h | awk -v c="$cluster" '$2 == c' | grep -q .; then
  say "creating cluster $version/$cluster on port $port"
  pg_createcluster "$version" "$cluster" --port "$port" -- --auth-local=peer --auth-host=scram-sha-256 >/dev/null
  # Many test servers at once each hold a pool of connections.
  pg_conftool "$version" "$cluster" set max_connections 300
fi
if ! pg_lsclusters -h | awk -v c="$cluster" '$2 == c && $4 == "online"' | grep -q .; then
  say "starting cluster $version/$cluster"
  pg_ctlcluster "$version" "$cluster" start
  pidfile=/var/run/postgresql/$version-$cluster.pid
  [ -f "$pidfile" ] && record_pid postgres "$(head -1 "$pidfile")"
fi

psql_() { runuser -u postgres -- psql -p "$port" -v ON_ERROR_STOP=1 -qtA "$@"; }
if [ "$(psql_ -c "select 1 from pg_roles where rolname = '$user'")" != 1 ]; then
  psql_ -c "create role $user login createdb password '$password'"
fi
if [ "$(psql_ -c "select 1 from pg_database where datname = 'prefect'")" != 1 ]; then
  psql_ -c "create database prefect owner $user"
fi
say "ready: postgresql+asyncpg://$user:***@127.0.0.1:$port/prefect"
