"""What the terminal shows during a run: one row per image and chart.

On a terminal, a live table (rich); elsewhere (CI logs, pipes), one line per
change of state. A failed step's own last lines (``output`` reports) print under its
failure either way. Both go to stderr so that stdout carries only the summary.
"""

from __future__ import annotations

import sys
import threading
import time

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from tasks.core.progress import RUN
from tasks.core.status import Status

_STYLE: dict[str, str] = {
    Status.BUILDING: "cyan", Status.STILL_BUILDING: "cyan", Status.BUILT: "cyan", Status.PUSHING: "blue",
    Status.RETRYING: "yellow",
    Status.PUSH_FAILED: "yellow", Status.ENGINE_LOST: "yellow", Status.PUSHED: "green", Status.INDEX_PUSHED: "green",
    Status.PACKAGING: "cyan", Status.PACKAGED: "cyan", Status.FAILED: "bold red", Status.DONE: "green",
    Status.WARNING: "yellow", Status.DOWNLOADING: "cyan", Status.DOWNLOADED: "cyan",
    Status.COPYING: "blue", Status.COPIED: "green", Status.VERIFYING: "cyan", Status.VERIFIED: "green",
    Status.PROVING: "cyan", Status.PROVEN: "green", Status.DRAFTED: "cyan", Status.PUBLISHED: "green",
}


class ProgressView:
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(file=sys.stderr)
        self._lock = threading.Lock()
        self._rows: dict[str, tuple[str, str, float]] = {}
        self._started = time.monotonic()
        self._live: Live | None = None
        if self.console.is_terminal:
            self._live = Live(self._table(), console=self.console, refresh_per_second=8, transient=False)
            self._live.start()

    def update(self, item: str, state: str, detail: str) -> None:
        with self._lock:
            if state == Status.WARNING:  # a line of its own, also beside the live table
                self.console.print(f"warning: {detail}", soft_wrap=True, highlight=False, markup=False)
                return
            if state == Status.OUTPUT:  # a failed step's own line, under its failure; not a state of the row
                self.console.print(f"{self._stamp()} {item} | {detail}", soft_wrap=True, highlight=False,
                                   markup=False)
                return
            if item == RUN:
                if state == Status.STARTED and detail:
                    self.console.print(f"Prefect UI: {detail}", soft_wrap=True, highlight=False)
                elif state in (Status.WAITING, Status.SLOT_TAKEN):  # the tag's slot: who holds it, since when
                    self.console.print(f"{state}: {detail}", soft_wrap=True, highlight=False, markup=False)
                return
            if self._rows.get(item, ("", "", 0.0))[:2] == (state, detail):
                return  # a task's failure and then the run's verdict on it: said once
            self._rows[item] = (state, detail, time.monotonic() - self._started)
            if self._live is not None:
                self._live.update(self._table())
            else:
                extra = f": {detail}" if detail else ""
                self.console.print(f"{self._stamp()} {item}: {state}{extra}", highlight=False, markup=False,
                                   soft_wrap=True)

    def _stamp(self) -> str:
        return f"[{time.monotonic() - self._started:6.1f}s]"

    def _table(self) -> Table:
        table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
        table.add_column("item")
        table.add_column("state")
        table.add_column("at", justify="right")
        table.add_column("detail", overflow="fold")
        for item, (state, detail, at) in self._rows.items():
            style = _STYLE.get(state, "")
            table.add_row(Text(item), Text(state, style=style), f"{at:.1f}s", Text(detail[:160]))
        return table

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
