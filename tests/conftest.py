"""Test session set-up: a real Prefect server, and Helm kept out of $HOME.

Prefect reads its settings when it is imported, so the server is started and
``PREFECT_API_URL`` set in ``pytest_configure``, before any test module is
collected. An already configured ``PREFECT_API_URL`` is used as it is.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
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
    if os.environ.get("PREFECT_API_URL") or _unit_only(config):
        return
    from devkit.prefect_server import start_prefect_server

    try:
        proc, url = start_prefect_server(home / "prefect")
    except RuntimeError as err:
        pytest.exit(str(err), returncode=3)
    _state["server"] = proc
    os.environ["PREFECT_API_URL"] = url


def pytest_unconfigure(config: pytest.Config) -> None:
    proc = _state.get("server")
    if isinstance(proc, subprocess.Popen):
        from prefect.logging.handlers import APILogHandler

        from devkit.prefect_server import stop_prefect_server

        APILogHandler().flush()  # the last run logs reach the server before it stops

        stop_prefect_server(proc)
    home = _state.get("home")
    if isinstance(home, Path) and not os.environ.get("FMA_KEEP_TEST_HOME"):
        shutil.rmtree(home, ignore_errors=True)
