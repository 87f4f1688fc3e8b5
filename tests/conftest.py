"""Test session set-up: what every test process of a run shares, started once per run.

The process that runs the session (the only one, or pytest-xdist's controller) starts a Prefect
server (on PostgreSQL when scripts/postgres.sh's cluster answers, else SQLite), a Distribution
registry and a directory for what is made once per run (tests/integration/shared.py), and names
them in the environment, which xdist's workers inherit: they start after ``pytest_configure``.
Prefect reads its settings when it is imported, so ``PREFECT_API_URL`` is set here, before any test
module is collected; the server becomes ready while the unit tests run (tests/integration/conftest.py
waits for it). An already configured ``PREFECT_API_URL`` is used as it is.

Parallel runs: ``-n auto`` (pyproject.toml) means ``FMA_TEST_WORKERS`` workers (3 by default) for a
run that reaches the integration tests, and none (in-process, as before) for unit tests alone;
tests/plan.py spreads the tests over the workers and keeps the ``serial`` tests apart. A run of the
whole suite starts making the parts the integration tests share (the FMA bases, the signed release,
a Prefect database template) in threads here, while the workers start.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from devkit.prefect_server import PrefectServer
from devkit.registry import RegistryProcess
from tests.plan import make_scheduler, save_durations, write_plan

DEFAULT_WORKERS = 3
CPU_SHOWN = 25
CPU_KEY = "fma-release/cpu"  # .pytest_cache/v/fma-release/cpu: CPU seconds per test of the last run
CPU_SHOWN_FROM = 0.5  # seconds: below this a test costs nothing worth a line
_CPU_AT_START = pytest.StashKey[float]()


@dataclass
class _Run:
    """What this process started for the run, to stop at its end."""

    home: Path | None = None
    registry: RegistryProcess | None = None
    server: PrefectServer | None = None
    database: str | None = None
    durations: dict[str, float] = field(default_factory=dict)  # seconds per test, for the next run's order
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds per test (its process and the ones it waited for)
    warming: list[threading.Thread] = field(default_factory=list)  # making the run's shared parts


_RUN = _Run()


def _unit_only(config: pytest.Config) -> bool:
    args = [str(a) for a in config.args]
    return bool(args) and all("tests/unit" in a or a.startswith("unit") for a in args)


def _worker() -> bool:
    return "PYTEST_XDIST_WORKER" in os.environ


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """How many workers ``-n auto`` starts: none for unit tests alone, else FMA_TEST_WORKERS (default 3)."""
    if _unit_only(config):
        return 0
    return int(os.environ.get("FMA_TEST_WORKERS") or DEFAULT_WORKERS)


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    return make_scheduler(config, log)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _worker():
        write_plan(items)


def _cpu_seconds() -> float:
    """CPU time of this process and of every process it started and waited for (a CLI run and its tools)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Any:
    item.stash[_CPU_AT_START] = _cpu_seconds()
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    if call.when == "teardown" and _CPU_AT_START in item.stash:
        report: pytest.TestReport = outcome.get_result()
        report.user_properties.append(("cpu_seconds", round(_cpu_seconds() - item.stash[_CPU_AT_START], 2)))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if not _worker():
        _RUN.durations[report.nodeid] = _RUN.durations.get(report.nodeid, 0.0) + report.duration
        for name, value in report.user_properties:
            if name == "cpu_seconds" and isinstance(value, float | int):
                _RUN.cpu[report.nodeid] = float(value)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The tests that cost the most CPU, beside pytest's slowest: on 2 cores the suite is CPU-bound, so these
    are what makes it long (a test's own process and the CLI runs and tools it waited for; not the shared
    servers' work on its behalf)."""
    if not _RUN.cpu:
        return
    costliest = [kv for kv in sorted(_RUN.cpu.items(), key=lambda kv: -kv[1])[:CPU_SHOWN] if kv[1] >= CPU_SHOWN_FROM]
    terminalreporter.write_sep("=", f"costliest {len(costliest)} tests by CPU (of {sum(_RUN.cpu.values()):.0f} "
                                    f"CPU-s in {len(_RUN.cpu)} tests)")
    for nodeid, seconds in costliest:
        terminalreporter.write_line(f"{seconds:7.1f}s cpu  {nodeid}")


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not _worker():
        save_durations(session.config, _RUN.durations)
        cache = getattr(session.config, "cache", None)  # absent under -p no:cacheprovider
        if cache is not None and _RUN.cpu:  # every test's CPU, for a closer look than the summary's
            cache.set(CPU_KEY, {k: round(v, 2) for k, v in _RUN.cpu.items()})


def pytest_configure(config: pytest.Config) -> None:
    home = Path(tempfile.mkdtemp(prefix="fma-release-tests-"))
    _RUN.home = home
    for var in ("HELM_CONFIG_HOME", "HELM_CACHE_HOME", "HELM_DATA_HOME"):
        os.environ[var] = str(home / "helm" / var.lower())
    os.environ["PREFECT_HOME"] = str(home / "prefect")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if _worker():
        # The controller started what the run shares and named it in the environment. Runs of one tag in two
        # workers are two tests' releases, not one release twice: each worker's tag slots are its own.
        os.environ.setdefault("FMA_SLOT_NAMESPACE", os.environ["PYTEST_XDIST_WORKER"])
        return
    shared = home / "shared"
    shared.mkdir()
    os.environ["FMA_TEST_SHARED"] = str(shared)
    if _unit_only(config) or config.option.collectonly:
        return
    _start_registry(home / "registry")
    if not os.environ.get("PREFECT_API_URL"):
        _start_prefect_server(home / "prefect")
    # The whole suite on workers: its shared parts will be read. (In a single process the tests make them as they
    # need them: a warning raised in a thread while a test runs would count against that test.)
    if config.args_source is pytest.Config.ArgsSource.TESTPATHS and config.getoption("numprocesses", None):
        _warm_up()


def _warm_up() -> None:
    """Make what the integration tests share once per run (tests/integration/shared.py) in threads of this
    process, while the workers start and run the unit tests; a test that needs one of them waits for it, and
    one that failed here fails that test with its message."""
    from devkit.prefect_server import wait_for_prefect_server
    from tests.integration import shared

    assert _RUN.registry is not None
    host = _RUN.registry.host

    def release() -> None:
        wait_for_prefect_server(os.environ["PREFECT_API_URL"], timeout=180)
        shared.shared_signed_release(host, shared.shared_bases(host))

    for make in (shared.shared_prefect_template, release):
        thread = threading.Thread(target=_quietly, args=(make,), name=f"warm-up {make.__name__}", daemon=True)
        thread.start()
        _RUN.warming.append(thread)


def _quietly(make: Any) -> None:
    with contextlib.suppress(Exception):  # the failure is recorded for the tests that need the part
        make()


def _start_registry(root: Path) -> None:
    from devkit.registry import free_port

    try:
        registry = RegistryProcess(root, free_port()).start()
    except (OSError, RuntimeError) as err:
        pytest.exit(f"cannot start the tests' registry ({err}); run: bash scripts/setup.sh", returncode=3)
    _RUN.registry = registry
    os.environ["FMA_TEST_REGISTRY"] = f"{registry.port}:{root}"


def _start_prefect_server(home: Path) -> None:
    from devkit.prefect_server import launch_prefect_server, new_postgres_database, postgres_available

    database = new_postgres_database() if postgres_available() else None
    try:
        server = launch_prefect_server(home, database_url=database)
    except RuntimeError as err:
        pytest.exit(str(err), returncode=3)
    _RUN.server, _RUN.database = server, database
    os.environ["PREFECT_API_URL"] = server.url
    os.environ["FMA_TEST_PREFECT_BACKEND"] = "postgres" if database else "sqlite"
    os.environ["FMA_TEST_PREFECT_LOG"] = str(server.log)


def pytest_unconfigure(config: pytest.Config) -> None:
    for thread in _RUN.warming:  # done long before, unless the run was cut short: then the parts fail as they go
        thread.join(timeout=60)
    if _RUN.server is not None:
        from devkit.prefect_server import drop_postgres_database, stop_prefect_server

        if "prefect" in sys.modules:  # this process ran flows: their last logs reach the server before it stops
            from prefect.logging.handlers import APILogHandler

            APILogHandler().flush()
        stop_prefect_server(_RUN.server.process)
        if _RUN.database:
            drop_postgres_database(_RUN.database)
    if _RUN.registry is not None:
        from devkit.cleanup import remove_registry_images

        _RUN.registry.stop()
        try:
            remove_registry_images(_RUN.registry.host)
        except Exception as err:  # no engine: nothing of the run is in one
            sys.stderr.write(f"tests: images of {_RUN.registry.host} may be left in the engine: {err}\n")
    if _RUN.home is not None and not os.environ.get("FMA_KEEP_TEST_HOME"):
        shutil.rmtree(_RUN.home, ignore_errors=True)
