"""Where the release's tasks run: threads of the flow's process, or a Dask cluster.

The flow's code is the same either way. ``FMA_DASK_ADDRESS`` in the environment of the process
that imports the flow (a worker, ``fma-release serve``) or ``fma-release run --dask ADDRESS`` sends
its tasks to a Dask scheduler (``tcp://scheduler:8786``), or to a local cluster of this machine's
cores with ``local``. Needs the ``dask`` extra (prefect-dask).
"""

from __future__ import annotations

from typing import Any

from prefect.task_runners import ThreadPoolTaskRunner

from tasks.core.errors import ConfigError
from tasks.run.settings import Settings


def task_runner(address: str | None = None) -> Any:
    """A Dask task runner for ``address`` (default ``FMA_DASK_ADDRESS``), else Prefect's thread runner.

    Threads have no fixed cap: every build of a release runs at once (``max_builds`` per engine in
    the release config caps them where an engine needs it).
    """
    address = Settings.from_env().dask_address if address is None else address
    if not address:
        return ThreadPoolTaskRunner()
    try:
        from prefect_dask.task_runners import DaskTaskRunner
    except ImportError as err:
        raise ConfigError(
            "a Dask address is set (FMA_DASK_ADDRESS or --dask) but prefect-dask is not installed: "
            "pip install 'fma-release[dask]'"
        ) from err
    if address == "local":
        return DaskTaskRunner()
    if not address.startswith(("tcp://", "tls://", "ucx://", "ws://", "wss://", "inproc://")):
        raise ConfigError(f"Dask address {address!r} is not a scheduler address: use tcp://host:8786 or local")
    return DaskTaskRunner(address=address)


def runs_here(runner: object) -> bool:
    """Whether ``runner`` runs tasks in this machine's processes (pure): threads, or a Dask cluster it starts
    itself (``local``) or reaches on this machine's loopback; a cluster elsewhere may run them on other machines."""
    if runner is None or isinstance(runner, ThreadPoolTaskRunner):
        return True
    address = str(getattr(runner, "address", "") or "")
    return not address or address.startswith(("tcp://127.", "tcp://localhost:", "inproc://"))
