"""Tests' direct calls to a Prefect server's REST API, with the retries Prefect's own client makes.

A Prefect server on SQLite answers 503 while another writer holds the database (Prefect maps
SQLITE_BUSY to "Service Unavailable" and its client retries it); on two busy cores that happens
a few times per test session. Prefect's client waits 2, 4, 8 ... s on 429/502/503; these calls do
the same within a bounded budget, so a test fails only when the server stays unavailable.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

BUSY = frozenset({429, 502, 503})
WAITS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)  # about 30 s in all, then the last answer is raised


def call(method: str, url: str, body: object = None, *, timeout: float = 30.0) -> Any:
    """``method`` on ``url`` with a JSON ``body``; the decoded answer (``None`` when empty). A busy answer
    is retried; any other error status raises at once."""
    for wait in (*WAITS, None):
        response = httpx.request(method, url, json=body, timeout=timeout)
        if response.status_code not in BUSY or wait is None:
            break
        time.sleep(wait)
    response.raise_for_status()
    return response.json() if response.content else None


def post(url: str, body: object = None, *, timeout: float = 30.0) -> Any:
    return call("POST", url, body, timeout=timeout)


def get(url: str, *, timeout: float = 30.0) -> Any:
    return call("GET", url, timeout=timeout)
