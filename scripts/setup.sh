#!/usr/bin/env bash
# Install and start what fma-release needs on a fresh Debian 12 machine:
# Debian packages (Docker engine, Distribution registry, busybox, git, qemu-user-static),
# a Python venv with the project, the pinned Go tools (ko, cosign, syft) in .local/bin,
# Kubernetes' kube-apiserver, etcd and kube-controller-manager built from source in .local/kube/bin
# (scripts/kube.sh), and a running dockerd.
# Idempotent: what is installed or running already is left as it is.
# Records the PIDs of what it starts in .local/run/; scripts/stop.sh stops
# only those.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
run_dir="$here/.local/run"
mkdir -p "$run_dir"
say() { printf 'setup: %s\n' "$*"; }

# 1. Debian packages.
need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v docker-registry >/dev/null || need+=(docker-registry)
# A static /bin/busybox is copied into FROM-scratch images (Debian's plain busybox is dynamic).
{ ldd /bin/busybox 2>&1 || true; } | grep -q "not a dynamic" || need+=(busybox-static)
command -v curl >/dev/null || need+=(curl)
command -v git >/dev/null || need+=(git)
command -v htpasswd >/dev/null || need+=(apache2-utils)
command -v openssl >/dev/null || need+=(openssl)
# A second dockerd (benchmark, two-engine tests) gets a bridge of its own, made with ip.
command -v ip >/dev/null || need+=(iproute2)
# Headless Chromium renders the Prefect UI for the UI test's screenshot (tests/integration/test_triggers.py).
command -v chromium >/dev/null || need+=(chromium)
# systemd-analyze checks the service units (deploy/systemd; docs/operations.md).
command -v systemd-analyze >/dev/null || need+=(systemd)
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# 2. arm64 builds (multi-platform images): qemu through binfmt_misc, and an arm64 busybox for the tests.
bash "$here/scripts/multiarch.sh" || say "arm64 builds are not available here (see above); linux/amd64 images still build"

# 3. The project in a venv.
py=${PYTHON:-python3}
if [ ! -x "$here/.venv/bin/python" ]; then
  say "creating .venv"
  "$py" -m venv "$here/.venv"
fi
if ! "$here/.venv/bin/python" -c "import flows, tasks, devkit, prefect, docker, helm_python, ruamel.yaml, pytest, hypothesis" 2>/dev/null \
   || [ "$here/pyproject.toml" -nt "$here/.venv/.installed" ]; then
  say "installing the project and its test tools into .venv"
  "$here/.venv/bin/python" -m pip install -q --disable-pip-version-check -e "$here[test]" 2>&1 \
    | grep -v "^WARNING: Location" || true
  "$here/.venv/bin/python" -c "import flows, tasks, devkit, prefect, docker, helm_python"
  touch "$here/.venv/.installed"
fi
# The project's own modules compiled once, here: every process then loads them from __pycache__. A shell that
# sets PYTHONDONTWRITEBYTECODE (as CI's may) keeps Python from writing what it compiles, so each fma-release
# process, and each test's, compiled flows/ and tasks/ again: 0.4-0.7 s of CPU per process.
"$here/.venv/bin/python" -m compileall -q -j 0 "$here/flows" "$here/tasks" "$here/devkit" "$here/bench" >/dev/null

# 3b. The unprivileged user builds run as (docs/security.md): the source's code never runs as root.
build_user=${FMA_BUILD_USER:-fma-build}
if [ "$(id -u)" = 0 ] && ! id -u "$build_user" >/dev/null 2>&1; then
  say "creating the build user $build_user (home /var/lib/$build_user)"
  useradd --system --user-group --create-home --home-dir "/var/lib/$build_user" --shell /usr/sbin/nologin "$build_user"
  chmod 700 "/var/lib/$build_user"
fi

# 4. The pinned Go tools (scripts/tools.versions) in .local/bin, built with the machine's Go.
bash "$here/scripts/tools.sh"

# 4b. Kubernetes built from source (kube-apiserver, etcd, kube-controller-manager) for the proof on a real API
#     server; minutes once per machine, a copy from ~/.cache/fma-release/kube after that. Without it the proof
#     says it cannot run.
bash "$here/scripts/kube.sh" || say "Kubernetes could not be built (see above): the proof on a Kubernetes API server will not run here"

# 5. PostgreSQL for a Prefect server on it (docs/scale.md; the postgres tests).
bash "$here/scripts/postgres.sh"

# 6. dockerd.
sock=/var/run/docker.sock
engine_up() { curl -sf --max-time 2 --unix-socket "$sock" http://localhost/_ping >/dev/null 2>&1; }
if ! engine_up; then
  say "starting dockerd"
  nohup dockerd --host "unix://$sock" >"$run_dir/dockerd.log" 2>&1 &
  . "$here/scripts/lib/pids.sh"
  record_pid dockerd $!
  for _ in $(seq 1 100); do engine_up && break; sleep 0.1; done
  engine_up || { say "dockerd did not start: see $run_dir/dockerd.log"; exit 1; }
fi
say "ready: dockerd $(docker version --format '{{.Server.Version}}' 2>/dev/null || echo up), $(git --version), .venv, the Go tools in .local/bin"
