"""The processes a command starts, watched as they come and go: for tests and benchmarks that kill one of
them, or check that none outlives the command.

:class:`ProcessWatch` follows one root process and every process started under it, read from
``/proc/<pid>/task/<tid>/children`` (every thread's children: a Python program starts its commands from
worker threads) a few times a second. A process is known by its PID and start time (field 22 of
``/proc/<pid>/stat``, clock ticks since boot), so a PID reused by an unrelated process later is not
taken for it. A process whose parent died (it was re-parented to init) stays watched, and so do its
children.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


def start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), or ``None`` when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count fields after its last ")".
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "X"


def _cmdline(pid: int) -> tuple[str, ...]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ()
    return tuple(part.decode(errors="replace") for part in raw.split(b"\0") if part)


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found.update(int(child) for child in (task / "children").read_text().split())
    return found


@dataclass(frozen=True)
class Proc:
    """A process seen under the root: its PID, kernel start time, command line and when it was first seen."""

    pid: int
    start: int
    argv: tuple[str, ...]
    seen_at: float  # time.monotonic() of the look that found it

    @property
    def name(self) -> str:
        return os.path.basename(self.argv[0]) if self.argv else "?"

    def alive(self) -> bool:
        """Still running: the same process (not a reused PID), and not a zombie."""
        return start_time(self.pid) == self.start and _state(self.pid) not in {"Z", "X"}

    def signal(self, signum: int) -> bool:
        """Send ``signum`` if it is still this process; whether it was sent."""
        if not self.alive():
            return False
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            return False
        return True

    def __str__(self) -> str:
        return f"{self.pid} {' '.join(self.argv)[:200]}"


class ProcessWatch:
    """Watch ``root`` and everything started under it until :meth:`stop`; ``every``: seconds between looks."""

    def __init__(self, root: int, every: float = 0.05) -> None:
        self.root = root
        self.every = every
        self.seen: list[Proc] = []
        self._known: dict[int, Proc] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._new = threading.Condition(self._lock)
        self._thread = threading.Thread(target=self._loop, name=f"watch {root}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        frontier = {self.root}
        while not self._stop.is_set():
            now = time.monotonic()
            live = set()
            for pid in list(frontier):
                if start_time(pid) is None:
                    continue
                live.add(pid)
                for child in _children(pid) - frontier:
                    started = start_time(child)
                    if started is None:
                        continue
                    proc = Proc(child, started, _cmdline(child), now)
                    with self._lock:
                        self._known[child] = proc
                        self.seen.append(proc)
                        self._new.notify_all()
                    live.add(child)
            frontier = live
            self._stop.wait(self.every)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def processes(self, match: Callable[[Proc], bool] | None = None) -> list[Proc]:
        """Every process seen so far (in the order seen), or those ``match`` picks."""
        with self._lock:
            return [p for p in self.seen if match is None or match(p)]

    def alive(self) -> list[Proc]:
        """The processes seen that still run."""
        return [p for p in self.processes() if p.alive()]

    def wait_for(self, match: Callable[[Proc], bool], count: int, timeout: float,
                 until: Callable[[], bool] = lambda: False) -> Proc | None:
        """The ``count``-th process ``match`` picks, once seen; ``None`` when ``timeout`` passes or ``until()`` says
        stop first."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                found = [p for p in self.seen if match(p)]
                if len(found) >= count:
                    return found[count - 1]
                if time.monotonic() >= deadline or until():
                    return None
                self._new.wait(timeout=0.05)


def kill_tree(pid: int, signum: int = signal.SIGKILL) -> list[int]:
    """Send ``signum`` to ``pid`` and every process under it (children first looked up, then all signalled at
    once, parent first); the PIDs signalled."""
    tree = [pid]
    frontier = [pid]
    while frontier:
        children = [c for p in frontier for c in _children(p)]
        tree += children
        frontier = children
    for target in tree:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(target, signum)
    return tree
