"""The scripts stop only what they started: a cluster that was already running stays up, a recorded PID
that is another process now is left alone, and a Prefect server started on its own port tells its UI
that port (real PostgreSQL cluster, real Prefect server, real registry)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from devkit.registry import free_port
from tasks.core.project import PROJECT_ROOT

pytestmark = pytest.mark.integration


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """Another checkout of the project: its own scripts and .local, this one's venv."""
    root = tmp_path / "checkout"
    shutil.copytree(PROJECT_ROOT / "scripts", root / "scripts")
    (root / ".venv").symlink_to(PROJECT_ROOT / ".venv")
    return root


def script(root: Path, name: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(root / "scripts" / name)], capture_output=True, text=True, timeout=300,
                          check=False, env={**os.environ, **env})


def cluster_online() -> bool:
    listed = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, check=True).stdout
    return any(line.split()[1:2] == ["fma"] and line.split()[3] == "online" for line in listed.splitlines())


def test_stop_leaves_a_cluster_that_postgres_sh_found_running(checkout: Path) -> None:
    """postgres.sh of a second checkout finds the cluster running and records nothing; its stop.sh stops nothing."""
    assert cluster_online(), "scripts/setup.sh starts the cluster this test relies on"
    assert script(checkout, "postgres.sh").returncode == 0
    assert not (checkout / ".local/run/postgres.pid").exists()
    stopped = script(checkout, "stop.sh")
    assert stopped.returncode == 0 and "postgres" not in stopped.stdout
    assert cluster_online()


def test_stop_leaves_a_recorded_pid_that_is_another_process_now(checkout: Path) -> None:
    """A PID file whose process started at another time (the number was reused) gets no signal."""
    other = subprocess.Popen(["sleep", "120"])
    try:
        run_dir = checkout / ".local/run"
        run_dir.mkdir(parents=True)
        (run_dir / "registry.pid").write_text(f"{other.pid} 1\n")  # started at tick 1: not this process
        stopped = script(checkout, "stop.sh")
        assert "another process now; left alone" in stopped.stdout
        assert other.poll() is None
        assert not (run_dir / "registry.pid").exists()
    finally:
        other.kill()
        other.wait()


def test_services_on_other_ports_tell_the_ui_their_own_api_and_stop_stops_them(checkout: Path) -> None:
    """A Prefect server the scripts start on a non-default port serves /ui-settings with that port's API URL;
    stop.sh then stops exactly the server and the registry it started."""
    prefect_port, registry_port = free_port(), free_port()
    started = script(checkout, "services.sh", FMA_DEMO_PREFECT_PORT=str(prefect_port),
                     FMA_DEMO_REGISTRY_PORT=str(registry_port))
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        settings = requests.get(f"http://127.0.0.1:{prefect_port}/ui-settings", timeout=10).json()
        assert settings["api_url"] == f"http://127.0.0.1:{prefect_port}/api"
    finally:
        stopped = script(checkout, "stop.sh")
    assert {line.split()[1] for line in stopped.stdout.splitlines() if line.startswith("stop: ")} == {
        "registry", "prefect"}
    for url in (f"http://127.0.0.1:{prefect_port}/api/health", f"http://127.0.0.1:{registry_port}/v2/"):
        with pytest.raises(requests.ConnectionError):
            requests.get(url, timeout=5)
