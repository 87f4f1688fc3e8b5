"""Prefect's client loggers (EventsWorker, APILogWorker, httpx, the flow engine) write to the run's
log file, not the terminal: an unreachable server makes them print a multi-KB error per undelivered
event. The console keeps the progress view and the CLI's own lines."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from tasks.control.outage import OUTCOME, server_unreachable
from tasks.core.redact import redact

# Loggers Prefect configures with console handlers of their own (prefect._internal does not
# propagate), and the HTTP client's.
LOGGERS = ("", "prefect", "prefect._internal", "prefect.flow_runs", "prefect.task_runs", "httpx", "httpcore")


class _Watch(logging.FileHandler):
    """A file handler that also notes when a record's error is an unreachable server."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and server_unreachable(record.exc_info[1]):
            OUTCOME.lost_server()
        super().emit(record)


def log_path(state_dir: Path, tag: str) -> Path:
    """``<state_dir>/logs/<tag>-<UTC time>.log``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return state_dir / "logs" / f"{tag}-{stamp}.log"


def route_client_logs(path: Path) -> None:
    """Move every stderr handler of Prefect's loggers to ``path`` (after Prefect set up logging)."""
    # Prefect's API log worker writes "--- Error logging to API ---" and the error straight to stderr
    # for each batch it cannot send, when this stdlib flag is on (its default). Off, as the logging
    # docs advise for production: the records themselves are in the file (the same loggers feed it).
    logging.raiseExceptions = False
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = _Watch(path, encoding="utf-8", delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in LOGGERS:
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            if isinstance(old, logging.StreamHandler) and not isinstance(old, logging.FileHandler):
                logger.removeHandler(old)
        if name in ("", "prefect._internal"):  # the others propagate to the root
            logger.addHandler(handler)


class _OneLineWhenServerGone(logging.Filter):
    """A console filter: a record whose error is the Prefect server gone (a refused connection, its event stream
    closed) prints as its own line and the error's first line, not the library's traceback under it."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and (server_unreachable(error) or _stream_closed(error)):
            first = redact(str(error)).splitlines()[0] if str(error) else ""
            record.msg, record.args = f"{redact(record.getMessage())} ({type(error).__name__}: {first})", None
            record.exc_info, record.exc_text = None, None
        return True


def _stream_closed(error: BaseException) -> bool:
    from websockets.exceptions import ConnectionClosed

    return isinstance(error, ConnectionClosed)


def quiet_server_outages_on_console() -> None:
    """For a long-lived command that prints Prefect's own log lines (serve): the server going away gives a
    line per record, not a traceback each. Call after Prefect has set up its logging."""
    one_line = _OneLineWhenServerGone()
    for name in ("", "prefect._internal"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler) \
                    and one_line not in handler.filters:
                handler.addFilter(one_line)

