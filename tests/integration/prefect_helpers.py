"""Reading what happened from the test session's Prefect server, polling with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from prefect import get_client
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter

from devkit import prefect_api

T = TypeVar("T")


def slot_limit(tag: str) -> str:
    """The name of ``tag``'s limit for the runs this test starts (FMA_SLOT_NAMESPACE keeps each test process's
    apart: tests/conftest.py)."""
    from tasks.control.concurrency import limit_name
    from tasks.run.settings import Settings

    return limit_name(tag, Settings.from_env().slot_namespace)


def run_of(tag: str, source: Path | str) -> Any:
    """The one flow run that released ``tag`` of ``source`` (the run's server holds other tests' runs too)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[f"release {tag}"])))
    (run,) = [r for r in runs if (r.parameters or {}).get("source") == str(source)]
    return run


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 60, every: float = 0.2) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def recorded_task_runs(flow_run_id: Any, *prefixes: str, counts: Mapping[str, int] | None = None,
                       timeout: float = 60) -> list[Any]:
    """The task runs of a flow run, read once the server has recorded, in a final state, one whose name starts
    with each of ``prefixes`` (``counts``: that many for a prefix). The server records task runs from the events
    the run sends, a moment after the run has ended, and later still when it is busy."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    wanted = {**dict.fromkeys(prefixes, 1), **(counts or {})}

    def ready() -> list[Any] | None:
        with get_client(sync_client=True) as client:
            runs = list(client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))))
        done = [r.name for r in runs if r.state is not None and r.state.is_final()]
        enough = all(sum(name.startswith(prefix) for name in done) >= n for prefix, n in wanted.items())
        return runs if runs and enough else None

    return wait_for(f"the task runs {sorted(wanted)} of flow run {flow_run_id} to be recorded", ready,
                    timeout=timeout, every=0.5)


def events(name: str, resource_id: str | None = None, since_minutes: float = 30) -> list[Any]:
    """Events named ``name`` (optionally for one resource id) stored in the server."""
    since = datetime.now(UTC) - timedelta(minutes=since_minutes)
    flt = EventFilter(
        occurred=EventOccurredFilter(since=since, until=datetime.now(UTC) + timedelta(minutes=5)),
        event=EventNameFilter(name=[name]),
        resource=EventResourceFilter(id=[resource_id]) if resource_id else None,
    )
    with get_client(sync_client=True) as client:
        return list(client.read_events(filter=flt, limit=50).events)


def task_log_window(api: str, flow_run_id: str) -> tuple[datetime, datetime]:
    """From the first to the last log line of the run's tasks (checkout's first line to summary's last), once
    the run's own last line is in: every task runs while the run holds its tag's slot. Read from the logs, which
    the server stores as they are posted, not from the task runs, which it makes from the run's events in a
    queue of its own: a busy SQLite-backed server once had not made them four minutes after the run."""
    def logged() -> list[dict[str, Any]] | None:
        logs: list[dict[str, Any]] = []
        while True:  # page by page: the server answers at most 200 lines a request
            body = {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "sort": "TIMESTAMP_ASC", "limit": 200,
                    "offset": len(logs)}
            page: list[dict[str, Any]] = prefect_api.post(f"{api}/logs/filter", body)
            logs += page
            if len(page) < 200:
                break
        ended = any(not line["task_run_id"] and line["message"].startswith("Finished in state") for line in logs)
        return logs if ended else None

    logs = wait_for(f"the last log line of {flow_run_id}", logged, timeout=120, every=0.5)
    times = [datetime.fromisoformat(line["timestamp"]) for line in logs if line["task_run_id"]]
    assert times, f"no task of {flow_run_id} logged a line"
    return min(times), max(times)
