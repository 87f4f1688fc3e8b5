"""Stopping a release run started by the CLI: Ctrl-C, SIGTERM, or Cancel in the Prefect UI.

Builds and pushes run inside the Docker engine; the engine abandons a build or
a push when its client's connection closes. So stopping means: mark the flow
run Cancelled, flush its logs, and end the process at once (its connections
close with it), after killing the build commands it started (they run in
process groups of their own, out of a signal's reach). A push that had not sent
its manifest publishes nothing, and the chart, pushed last, is never reached.
Finished builds stay cached, so the next run of the tag resumes.

A run under a worker or ``fma-release serve`` is stopped by Prefect itself,
which ends the run's process; its build commands are not killed from here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING
from uuid import UUID

from tasks.core import progress

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

EXIT_CANCELLED = 130
_run: dict[str, UUID] = {}  # "id": the flow run of this process, once it started
_server: dict[str, str] = {}  # "api": the API of the Prefect server the run reports to, as install() was given it
_lock = threading.Lock()
_stopping = threading.Event()


def _remember_run(run_id: UUID) -> None:
    _run["id"] = run_id


@contextlib.contextmanager
def _client() -> Iterator[SyncPrefectClient]:
    """A client of the run's server. Named, not taken from the settings: in the watch's thread the settings are
    the process's, and a run that reports to the local server (PREFECT_API_URL unset) has it only in the main
    thread's context; Prefect would start a temporary server of its own for a client without a URL."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    api = _server.get("api", "")
    with temporary_settings(updates={PREFECT_API_URL: api} if api else {}), get_client(sync_client=True) as client:
        yield client


def abort(reason: str) -> None:
    """Mark the run Cancelled, flush logs, and end the process with exit code 130."""
    with _lock:
        if _stopping.is_set():
            return
        _stopping.set()
    print(f"fma-release: {reason}: stopping builds and pushes; nothing more is published. "
          "Re-run the same tag to resume.", file=sys.stderr, flush=True)
    from tasks.core.cmd import stop_streams

    stop_streams()  # the builds' CLIs (BuildKit, ko) run in process groups of their own
    _release_leases()
    run_id = _run.get("id")
    if run_id is not None:
        try:
            from prefect.states import Cancelled

            with _client() as client:
                client.set_flow_run_state(run_id, Cancelled(message=reason), force=True)
            from prefect.logging.handlers import APILogHandler

            APILogHandler().flush()
        except Exception as err:  # the process ends either way; say why the UI may lag
            print(f"fma-release: could not mark the run cancelled in Prefect ({type(err).__name__})",
                  file=sys.stderr)
    os._exit(EXIT_CANCELLED)


def _release_leases() -> None:
    """Free the concurrency slots this run holds (the tag's), so that a re-run need not wait for them
    to lapse."""
    from tasks.control.concurrency import HELD

    try:
        HELD.release_all()
    except Exception as err:  # the slot then frees itself when its lease lapses
        print(f"fma-release: could not free the tag's concurrency slot ({type(err).__name__}); "
              "it frees itself within 5 minutes", file=sys.stderr)


_REASONS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated", signal.SIGUSR1: "cancelled from the Prefect UI"}


def _on_signal(signum: int, frame: FrameType | None) -> None:
    abort(_REASONS.get(signal.Signals(signum), "stopped"))


def _watch_ui(interval: float) -> None:
    """Poll the run's state; Cancel in the Prefect UI turns it to CANCELLING."""
    from prefect.client.schemas.objects import StateType

    with _client() as client:
        while not _stopping.wait(interval):
            run_id = _run.get("id")
            if run_id is None:
                continue
            try:
                state = client.read_flow_run(run_id).state
            except Exception:  # noqa: S112 - a missed poll is retried at the next tick
                continue
            if state is not None and state.type in (StateType.CANCELLING, StateType.CANCELLED):
                # Stop in the main thread, where the run's concurrency slot can be freed.
                os.kill(os.getpid(), signal.SIGUSR1)
                return


def install(api_url: str, watch_interval: float = 1.0) -> None:
    """Handle SIGINT/SIGTERM and, with a Prefect server at ``api_url``, watch for a UI cancel, for
    the rest of this process."""
    progress.on_run_started(_remember_run)
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGUSR1, _on_signal)
    _server["api"] = api_url
    if api_url:  # with an ephemeral server there is no UI to cancel from
        threading.Thread(target=_watch_ui, args=(watch_interval,), name="fma-cancel-watch", daemon=True
        ).start()
