"""One run per tag: a Prefect global concurrency limit ``release-<tag>`` of one slot.

Prefect's ``concurrency(..., strict=True)`` fails when the limit does not
exist (and with ``strict=False`` silently does nothing), so the limit is
created first when missing; two runs creating it at once are both fine. The
slot is held for the whole release and released however it ends. Runs of
different tags hold different limits and run side by side; a deployment's own
``concurrency_limit`` could not do this, it counts runs of every tag.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

from tasks.errors import ReleaseError
from tasks.tags import parse_tag

P = ParamSpec("P")
R = TypeVar("R")

# Long enough for a slow build; a live run renews its lease, a crashed one frees the slot when it lapses.
LEASE_SECONDS = 300.0


class ConcurrencyError(ReleaseError):
    """The per-tag limit cannot be created or acquired."""


def limit_name(tag: str) -> str:
    """``release-<tag>``, with anything a limit name may not hold replaced by ``-``."""
    return "release-" + re.sub(r"[^A-Za-z0-9._-]+", "-", tag)


def ensure_limit(name: str, limit: int = 1) -> bool:
    """Create the global concurrency limit ``name`` unless it exists; ``True`` when created here."""
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
            return False
        except ObjectNotFound:
            pass
        try:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))
        except ObjectAlreadyExists:  # another run of the tag created it a moment ago
            return False
        return True


@contextmanager
def tag_slot(tag: str, timeout_seconds: float | None = None) -> Iterator[None]:
    """Hold the tag's slot: wait while another run of the same tag holds it."""
    from prefect.concurrency.sync import concurrency

    name = limit_name(tag)
    try:
        ensure_limit(name)
    except Exception as err:
        raise ConcurrencyError(
            f"cannot create the concurrency limit {name} ({type(err).__name__}): check that the Prefect API "
            "is reachable (PREFECT_API_URL)"
        ) from err
    with concurrency(name, occupy=1, timeout_seconds=timeout_seconds, strict=True, lease_duration=LEASE_SECONDS):
        yield


def one_run_per_tag(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorate a flow function whose ``tag`` parameter names the release: its body runs in :func:`tag_slot`.

    The signature and docstring stay the function's own (Prefect builds the UI form from them).
    """

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        tag = _tag_argument(fn, args, kwargs)
        parse_tag(tag)  # a malformed tag fails here, before it gets a limit of its own
        with tag_slot(tag):
            return fn(*args, **kwargs)

    return wrapper


def _tag_argument(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    import inspect

    bound = inspect.signature(fn).bind_partial(*args, **kwargs)
    return str(bound.arguments.get("tag", ""))
