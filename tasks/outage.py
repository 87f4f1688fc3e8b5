"""When the Prefect server goes away mid-run: tell it apart from other faults (pure), and keep the
run's outcome where the CLI can read it after the flow's own API calls have failed.

Once a run has started its data plane (builds, pushes, the chart) needs no server: task runs
orchestrate client-side. What fails is the bookkeeping: the flow run's state updates, the summary
artifact, the tag slot's lease. The CLI then still has the result from :data:`OUTCOME`.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tasks.result import ReleaseResult

# Prefect's client retries a failed request with doubling waits (2, 4, 8 ... s): at its default of 5
# retries one unreachable call costs about a minute, and a run's end makes several. One retry (a wait
# of about 2 s) still rides over a server that is restarting.
CLIENT_MAX_RETRIES = 1

# The exit code of a run that lost the Prefect server before everything was published.
SERVER_LOST_EXIT = 3


def server_unreachable(err: BaseException | None) -> bool:
    """``True`` when ``err`` (or what caused it, or one member of an exception group) is a failure to
    reach a server at all: refused, timed out connecting, dropped mid-exchange."""
    import httpx

    seen: set[int] = set()
    todo: list[BaseException] = [err] if err is not None else []
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError,
                                ConnectionRefusedError)):
            return True
        if isinstance(current, BaseExceptionGroup):
            todo.extend(current.exceptions)
        todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return False


def outage_line(log_file: str) -> str:
    """The one console line of an outage."""
    return (f"fma-release: warning: the Prefect server cannot be reached; this run's record in it is "
            f"incomplete (what was published is below). Prefect's errors are in {log_file}")


def unreachable_before_done(api_url: str) -> str:
    """The one line of a run that lost the server before it had published everything."""
    where = f" at {api_url}" if api_url else ""
    return (f"the Prefect server{where} cannot be reached and the release did not finish; "
            "start the server and re-run the same tag (what was pushed is kept and not pushed again)")


def stop_retrying() -> None:
    """Make the run's remaining API calls fail at once: the server is known gone, and each retry
    of the calls that end a flow run (its state, the tag slot's release) only delays the exit.
    Prefect reads the retry count from the current settings on every attempt."""
    from prefect.settings import get_current_settings

    get_current_settings().client.max_retries = 0


class Outcome:
    """The last release result of this process and whether the server was found unreachable."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.result: ReleaseResult | None = None
        self.unreachable = False

    def finished(self, result: ReleaseResult) -> None:
        with self._lock:
            self.result = result

    def lost_server(self) -> None:
        with self._lock:
            self.unreachable = True

    def __getstate__(self) -> dict[str, object]:
        # Sent along with a task to another process (a Dask worker): the lock stays here.
        return {"result": self.result, "unreachable": self.unreachable}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self.result, self.unreachable = None, False


OUTCOME = Outcome()
