"""When the Prefect server goes away mid-run: tell it apart from other faults (pure), and keep the
run's outcome where the CLI can read it after the flow's own API calls have failed.

Once a run has started its data plane (builds, pushes, the chart) needs no server: task runs
orchestrate client-side. What fails is the bookkeeping: the flow run's state updates, the summary
artifact, the tag slot's lease. The CLI then still has the result from :data:`OUTCOME`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tasks.core.errors import ReleaseError
    from tasks.run.result import ReleaseResult

# Prefect's client retries a failed request with doubling waits (2, 4, 8 ... s), on an unreachable
# server and on a busy one alike (a SQLite server answers 503 while another writer holds the
# database). Its default of 5 retries makes one call to a server that is gone cost about a minute;
# one retry (2 s) is too little for a busy server: CI saw a run fail on two 503s in a row. Three
# retries ride over about 14 s of 503s, and the first call to a gone server costs as much; after it
# the run stops retrying (stop_retrying).
CLIENT_MAX_RETRIES = 3

# The exit code of a run that lost the Prefect server before everything was published.
SERVER_LOST_EXIT = 3


def _chain(err: BaseException | None) -> Iterator[BaseException]:
    """``err``, what caused it or was being handled when it was raised, and each member of an
    exception group, each once, nearest first."""
    seen: set[int] = set()
    todo: list[BaseException] = [err] if err is not None else []
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            todo.extend(current.exceptions)
        todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)


def server_unreachable(err: BaseException | None) -> bool:
    """``True`` when ``err`` (or what caused it, or one member of an exception group) is a failure to
    reach the Prefect server at all: refused, timed out connecting, dropped mid-exchange. A refused
    connection to a registry or a Docker engine (under a requests, urllib3 or docker error) is not."""
    import httpx

    chain = list(_chain(err))
    if any(_other_client(current) for current in chain):
        return False
    unreachable = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, ConnectionRefusedError)
    return any(isinstance(current, unreachable) for current in chain)


# The HTTP stacks of the registry API and the Docker SDK (requests, urllib3): Prefect's client never uses them,
# so a refused connection under one of their errors is a registry or an engine that is away, not the server.
_OTHER_CLIENTS = ("requests.", "urllib3.", "docker.")


def _other_client(err: BaseException) -> bool:
    return type(err).__module__.startswith(_OTHER_CLIENTS)


def masked_release_error(err: BaseException) -> ReleaseError | None:
    """The release's own error behind ``err``: a failed push (say) that a failed call to a gone server
    replaced on its way out (releasing the tag slot at the end of an ``async with``)."""
    from tasks.core.errors import ReleaseError

    return next((current for current in _chain(err) if isinstance(current, ReleaseError)), None)


def api_reachable(api_url: str | None, timeout: float = 3.0) -> bool:
    """One look at ``api_url``'s health endpoint, with no retry: ``False`` only when nothing answers
    there (refused, no route, dropped). Any answer, a 503 of a busy server included, and a slow one
    count as reachable: those are for Prefect's client to retry. No URL (a server of the process's
    own) is reachable."""
    import httpx

    if not api_url:
        return True
    try:
        # over plain HTTP there is no TLS to verify: no CA bundle is parsed for nothing
        httpx.get(f"{api_url.rstrip('/')}/health", timeout=timeout, verify=api_url.startswith("https:"))
    except httpx.HTTPError as err:  # a read timeout is not unreachable: the server is there, slow
        return not server_unreachable(err)
    return True


def outage_line(log_file: str) -> str:
    """The one console line of an outage."""
    return (f"fma-release: warning: the Prefect server cannot be reached; this run's record in it is "
            f"incomplete (what was published is below). Prefect's errors are in {log_file}")


def unreachable_before_done(api_url: str) -> str:
    """The one line of a run that lost the server before it had published everything."""
    where = f" at {api_url}" if api_url else ""
    return (f"the Prefect server{where} cannot be reached and the release did not finish; "
            "start the server and re-run the same tag (what was pushed is kept and not pushed again)")


def unreachable(api_url: str, command: str) -> str:
    """The one line of a command other than ``run`` that could not reach the server (pure)."""
    where = f" at {api_url}" if api_url else ""
    if command == "serve":
        return (f"the Prefect server{where} cannot be reached: serve stopped without pausing its deployments; "
                "start the server and serve again")
    return f"the Prefect server{where} cannot be reached; start it and run fma-release {command} again"


def stop_retrying() -> None:
    """Make the run's remaining API calls fail at once: the server is known gone, and each retry
    of the calls that end a flow run (its state, the tag slot's release) only delays the exit.
    Prefect reads the retry count from the current settings on every attempt."""
    from prefect.settings import get_current_settings

    get_current_settings().client.max_retries = 0


def server_gone() -> None:
    """The server is known gone: the outcome says so, and no call to it is retried any more."""
    OUTCOME.lost_server()
    stop_retrying()


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


def note_if_server_gone() -> bool:
    """One look at the Prefect server at the end of the data plane; when it is gone, the run's remaining
    calls fail at once instead of after the client's retries (about 14 s each)."""
    from prefect.settings import PREFECT_API_URL

    if api_reachable(PREFECT_API_URL.value()):
        return False
    server_gone()
    return True
