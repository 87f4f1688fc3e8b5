"""Per-item progress (building, pushing, retrying, done, failed) for whoever listens.

Tasks call :func:`report`; the CLI subscribes a display. When nobody listens
(a worker, the UI) a report costs a function call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

Listener = Callable[[str, str, str], None]

_lock = threading.Lock()
_listeners: list[Listener] = []


def subscribe(listener: Listener) -> None:
    with _lock:
        _listeners.append(listener)


def unsubscribe(listener: Listener) -> None:
    with _lock:
        if listener in _listeners:
            _listeners.remove(listener)


def report(item: str, state: str, detail: str = "") -> None:
    """Tell listeners that ``item`` (an image or chart name) is now in ``state``."""
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        listener(item, state, detail)
