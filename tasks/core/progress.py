"""Per-item progress (building, pushing, retrying, done, failed) for whoever listens.

Tasks call :func:`report` (or wrap a step in :func:`reporting`); the CLI subscribes a display.
When nobody listens (a worker, the UI) a report costs a function call. The run announces
itself once with :func:`run_started`: listeners of :func:`on_run_started` get its id.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from uuid import UUID

from tasks.core.status import Status

Listener = Callable[[str, str, str], None]
RunListener = Callable[[UUID], None]

RUN = "run"  # the item the run's own reports are about
GO_MODULES = "Go modules"  # the item of the Go modules step (tasks/gomod.py)
PROOF = "proof"  # the item of a staged release's proof (tasks/prove.py)
GITHUB = "GitHub release"  # the item of the GitHub release step (tasks/github_release.py)

_lock = threading.Lock()
_listeners: list[Listener] = []
_run_listeners: list[RunListener] = []


def subscribe(listener: Listener) -> None:
    with _lock:
        _listeners.append(listener)


def unsubscribe(listener: Listener) -> None:
    with _lock:
        if listener in _listeners:
            _listeners.remove(listener)


def on_run_started(listener: RunListener) -> None:
    with _lock:
        _run_listeners.append(listener)


def report(item: str, state: str, detail: str = "") -> None:
    """Tell listeners that ``item`` (an image or chart name, or :data:`RUN`) is now in ``state``."""
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        listener(item, state, detail)


def run_started(run_id: UUID | None, ui_url: str) -> None:
    """The flow run began: its id to who needs it (cancel), its page in the UI to the display."""
    with _lock:
        listeners = list(_run_listeners)
    if run_id is not None:
        for listener in listeners:
            listener(run_id)
    report(RUN, Status.STARTED, ui_url)


@contextmanager
def reporting(item: str, *, transient_state: str = Status.FAILED) -> Iterator[None]:
    """Report ``item`` failed when the step inside raises (``transient_state`` when the error says it
    is transient and will be retried), then the last lines of the step's own output when the error
    carries them (``output``: a failed build's), one report each; and re-raise."""
    try:
        yield
    except Exception as err:
        transient = getattr(err, "transient", False)
        report(item, transient_state if transient else Status.FAILED, str(err))
        if not transient:
            for line in getattr(err, "output", ()):
                report(item, Status.OUTPUT, line)
        raise
