"""Test session set-up: a real Prefect server, and Helm kept out of $HOME.

Prefect reads its settings when it is imported, so the server is started and
``PREFECT_API_URL`` set in ``pytest_configure``, before any test module is
collected. An already configured ``PREFECT_API_URL`` is used as it is.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

_state: dict[str, object] = {}


def _unit_only(config: pytest.Config) -> bool:
    args = [str(a) for a in config.args]
    return bool(args) and all("tests/unit" in a or a.startswith("unit") for a in args)


def pytest_configure(config: pytest.Config) -> None:
    home = Path(tempfile.mkdtemp(prefix="fma-release-tests-"))
    _state["home"] = home
    for var in ("HELM_CONFIG_HOME", "HELM_CACHE_HOME", "HELM_DATA_HOME"):
        os.environ[var] = str(home / "helm" / var.lower())
    os.environ["PREFECT_HOME"] = str(home / "prefect")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    if os.environ.get("PREFECT_API_URL") or _unit_only(config):
        return
    from devkit.registry import free_port

    port = free_port()
    prefect = Path(sys.executable).with_name("prefect")
    log = (home / "prefect-server.log").open("wb")
    proc = subprocess.Popen(
        [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ},
    )
    _state["server"] = proc
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.exit(f"prefect server exited early; see {home / 'prefect-server.log'}", returncode=3)
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:  # noqa: S310 - our own loopback server
                if response.status == 200:
                    break
        except OSError:
            time.sleep(0.2)
    else:
        pytest.exit("prefect server did not become healthy within 120 s", returncode=3)
    os.environ["PREFECT_API_URL"] = url


def pytest_unconfigure(config: pytest.Config) -> None:
    proc = _state.get("server")
    if isinstance(proc, subprocess.Popen):
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    home = _state.get("home")
    if isinstance(home, Path) and not os.environ.get("FMA_KEEP_TEST_HOME"):
        shutil.rmtree(home, ignore_errors=True)
