"""A real Prefect server on a free loopback port, for tests and benchmarks."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from devkit.processes import stop_process
from devkit.registry import free_port

PG_PORT = int(os.environ.get("FMA_PG_PORT", "5433"))
PG_USER = os.environ.get("FMA_PG_USER", "fma")
PG_PASSWORD = os.environ.get("FMA_PG_PASSWORD", "fma")


def postgres_available() -> bool:
    """Whether the cluster of scripts/postgres.sh answers on its port."""
    try:
        with socket.create_connection(("127.0.0.1", PG_PORT), timeout=2):
            return True
    except OSError:
        return False


def _admin(statement: str) -> None:
    import asyncio

    import asyncpg

    async def execute() -> None:
        conn = await asyncpg.connect(host="127.0.0.1", port=PG_PORT, user=PG_USER,
                                     password=PG_PASSWORD, database="postgres")
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(execute())


def new_postgres_database(prefix: str = "prefect_test") -> str:
    """Create a database of its own on the cluster of scripts/postgres.sh; return its asyncpg URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    _admin(f'CREATE DATABASE "{name}"')
    return f"postgresql+asyncpg://{PG_USER}:{PG_PASSWORD}@127.0.0.1:{PG_PORT}/{name}"


def drop_postgres_database(url: str) -> None:
    """Drop a database new_postgres_database made (its server stopped first)."""
    _admin(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


@dataclass(frozen=True)
class PrefectServer:
    """A ``prefect server start`` process, its API URL and its log file."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path


def launch_prefect_server(home: Path, database_url: str | None = None, *, ui: bool = True,
                          template: Path | None = None, port: int | None = None) -> PrefectServer:
    """Start ``prefect server start`` with its own PREFECT_HOME and return at once; it answers once
    :func:`wait_for_prefect_server` returns.

    ``database_url`` (``postgresql+asyncpg://...``, e.g. from new_postgres_database) puts the
    server on PostgreSQL; without it the server keeps SQLite in its home. ``ui=False``: no UI,
    which starts faster (a server that no browser reads). ``template``: a SQLite database another
    server made (:func:`save_sqlite_template`), copied into a home that has none, so the server
    starts with its tables in place instead of migrating an empty database (seconds each). ``port``: the
    port to listen on (a free one by default); a server started again on its home and port is the same
    server to its clients.
    """
    home.mkdir(parents=True, exist_ok=True)
    if template is not None and not database_url and not (home / "prefect.db").exists():
        shutil.copyfile(template, home / "prefect.db")
    port = port or free_port()
    prefect = Path(sys.executable).with_name("prefect")
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           # The UI asks the server where the API is; without this it answers port 4200.
           "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api",
           "PREFECT_UI_ENABLED": "true" if ui else "false"}
    env.pop("PREFECT_API_URL", None)
    if database_url:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
    else:
        env.pop("PREFECT_API_DATABASE_CONNECTION_URL", None)
    log = home / "prefect-server.log"
    proc = subprocess.Popen(
        [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env,
    )
    return PrefectServer(proc, f"http://127.0.0.1:{port}/api", log)


def wait_for_prefect_server(url: str, timeout: float = 120, process: subprocess.Popen[bytes] | None = None,
                            log: Path | None = None) -> None:
    """Return once the server at ``url`` is healthy; RuntimeError when its process ends or the time is up."""
    where = f"; see {log}" if log else ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"prefect server exited early{where}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:  # noqa: S310 - our own loopback server
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"prefect server at {url} did not become healthy within {timeout:.0f} s{where}")


def start_prefect_server(home: Path, timeout: float = 120, database_url: str | None = None, *,
                         ui: bool = True, template: Path | None = None,
                         port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``prefect server start`` with its own PREFECT_HOME; return the process and its API URL once it is healthy.

    ``database_url``, ``ui``, ``template`` and ``port``: as for :func:`launch_prefect_server`.
    """
    server = launch_prefect_server(home, database_url, ui=ui, template=template, port=port)
    try:
        wait_for_prefect_server(server.url, timeout, server.process, server.log)
    except RuntimeError:
        stop_prefect_server(server.process)
        raise
    return server.process, server.url


def stop_prefect_server(proc: subprocess.Popen[bytes]) -> None:
    stop_process(proc, timeout=15)


def save_sqlite_template(target: Path, work: Path) -> Path:
    """A SQLite database as a fresh server leaves it (migrated, Prefect's own blocks in place), made by a
    server started in ``work`` and copied to ``target`` with SQLite's online backup; returns ``target``."""
    import sqlite3

    proc, _ = start_prefect_server(work, ui=False)
    try:
        source, copy = sqlite3.connect(work / "prefect.db"), sqlite3.connect(target)
        try:
            source.backup(copy)
        finally:
            copy.close()
            source.close()
    finally:
        stop_prefect_server(proc)
    return target
