"""A long step's pulse: what it is doing now, told through the progress reports, so that the console is
never silent for long while it runs.

A builder tells its :class:`Pulse` each new step it reads in its tool's output (``pulse.step("[builder 3/5]
RUN go build ...")``, ``"compiling for linux/amd64, linux/arm64"``); a thread of the pulse looks every
second and reports the step (:data:`~tasks.core.status.Status.STILL_BUILDING`, with the time so far) when
:func:`due` says so: a new step once :data:`STEP_GAP` seconds have passed since the last report, and the
same step again after :data:`HEARTBEAT` seconds of nothing new (a compiler that prints nothing for minutes).
A step shorter than :data:`STEP_GAP` is never told: a quick build adds no line, and a build of many steps
adds a line every few seconds, not one per line of its output.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType

from tasks.core import progress
from tasks.core.status import Status

HEARTBEAT = 15.0  # seconds: a running step is told at least this often (the console's bound is 30 s)
STEP_GAP = 10.0  # seconds: a new step is told at most this often
TICK = 1.0  # seconds between two looks of the pulse's thread
STEP_WIDTH = 120  # characters of a step kept for the console

Step = Callable[[str], None]  # what a long step tells its pulse: each new step it reads in its tool's output


def no_step(_: str) -> None:
    """A :data:`Step` that tells nobody."""


def due(now: float, told_at: float, step: str, told_step: str, *, heartbeat: float = HEARTBEAT) -> bool:
    """Whether a report is due at ``now``: nothing told for ``heartbeat`` seconds, or a step not told yet and
    :data:`STEP_GAP` seconds (two thirds of a shorter heartbeat) since the last report."""
    quiet = now - told_at
    return quiet >= heartbeat or (step != told_step and quiet >= min(STEP_GAP, heartbeat * 2 / 3))


def pulse_detail(step: str, elapsed: float) -> str:
    """What a report says: the step and how long the whole step has run (``[builder 3/5] RUN make (42s so
    far)``), or only the time when no step is known."""
    took = f"{elapsed:.0f}s so far"
    return f"{step} ({took})" if step else took


def short_step(text: str) -> str:
    """``text`` on one line, cut to :data:`STEP_WIDTH` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= STEP_WIDTH else flat[: STEP_WIDTH - 3] + "..."


class Pulse:
    """The pulse of one item's long step (a build), from when it is made until it is left.

    ``clock`` and :meth:`check` let a test drive it by hand; used as a context manager, a daemon thread
    calls :meth:`check` every ``tick`` seconds.
    """

    def __init__(self, item: str, *, state: str = Status.STILL_BUILDING, heartbeat: float = HEARTBEAT,
                 clock: Callable[[], float] = time.monotonic, tick: float = TICK) -> None:
        self.item = item
        self.state = state
        self.heartbeat = heartbeat
        self._clock = clock
        self._tick = tick
        self._started = self._told_at = clock()
        self._step = self._told_step = ""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def step(self, text: str) -> None:
        """What the step is doing now (any thread); told when :func:`due` says so."""
        with self._lock:
            self._step = short_step(text)

    def check(self, now: float | None = None) -> str | None:
        """Report the step if a report is due; the detail reported, or ``None``."""
        at = self._clock() if now is None else now
        with self._lock:
            if not due(at, self._told_at, self._step, self._told_step, heartbeat=self.heartbeat):
                return None
            self._told_at, self._told_step = at, self._step
            detail = pulse_detail(self._step, at - self._started)
        progress.report(self.item, self.state, detail)
        return detail

    def _beat(self) -> None:
        while not self._stop.wait(self._tick):
            self.check()

    def __enter__(self) -> Pulse:
        self._thread = threading.Thread(target=self._beat, name=f"pulse {self.item}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
