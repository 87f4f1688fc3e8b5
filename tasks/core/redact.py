"""Keep secrets out of logs, errors and artifacts.

Secrets read by this process are registered here once (:func:`register`);
:func:`redact` replaces them, and the user-info part of URLs, with ``***``.
:class:`RedactingFilter` applies it to every log record that reaches a handler
(Prefect stores run logs unmasked, so the filter sits on its handlers too).
"""

from __future__ import annotations

import logging
import re
import threading

MASK = "***"
_lock = threading.Lock()
_secrets: set[str] = set()
# scheme://user:password@host -> scheme://***@host
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")


def register(secret: str | None) -> None:
    """Remember a secret value so that :func:`redact` masks it from now on."""
    if secret and len(secret) >= 3:
        with _lock:
            _secrets.add(secret)


def is_secret(value: str) -> bool:
    """Whether ``value`` is, or holds, a registered secret."""
    if not value:
        return False
    with _lock:
        return any(secret in value for secret in _secrets)


def strip_userinfo(url: str) -> str:
    """``url`` without its ``user:password@`` part (``https://tok@host/x`` -> ``https://host/x``)."""
    return _USERINFO.sub(lambda m: m.group("scheme"), url)


def redact(text: str) -> str:
    """Mask registered secrets and URL credentials in ``text``."""
    if not text:
        return text
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return _USERINFO.sub(lambda m: f"{m.group('scheme')}{MASK}@", text)


class RedactingFilter(logging.Filter):
    """A handler filter that rewrites the record's message with secrets masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is logging's problem, not ours
            return True
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and record.exc_info[1] is not None:
            text = str(record.exc_info[1])
            if redact(text) != text:
                # The traceback would print the secret; keep the type, drop the text.
                record.exc_info = None
                record.exc_text = None
                record.msg = f"{record.msg} ({MASK} exception text withheld: it held a secret)"
        return True


_FILTER = RedactingFilter()


def install_log_filter() -> None:
    """Attach the filter to every handler of the root and Prefect loggers (idempotent)."""
    loggers = [logging.getLogger(), logging.getLogger("prefect")]
    loggers += [
        logging.getLogger(name)
        for name in list(logging.root.manager.loggerDict)
        if name.startswith(("prefect", "fma_release"))
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)
