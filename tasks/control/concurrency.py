"""One run per tag: a Prefect global concurrency limit ``release-<tag>`` of one slot.

Prefect's ``concurrency(..., strict=True)`` fails when the limit does not
exist (and with ``strict=False`` silently does nothing), so the limit is
created first when missing; two runs creating it at once are both fine. The
slot is held for the whole release and released however it ends. Runs of
different tags hold different limits and run side by side; a deployment's own
``concurrency_limit`` could not do this, it counts runs of every tag.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import re
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast
from uuid import UUID

from tasks.core.errors import ReleaseError
from tasks.run.tags import parse_tag

if TYPE_CHECKING:
    from tasks.control.slots import SlotTiming

P = ParamSpec("P")
R = TypeVar("R")

# Long enough for a slow build; a live run renews its lease, a crashed one frees the slot when it lapses.
LEASE_SECONDS = 300.0


class ConcurrencyError(ReleaseError):
    """The per-tag limit cannot be created or acquired."""


def limit_name(tag: str, namespace: str = "") -> str:
    """``release-<tag>`` (``release-<namespace>-<tag>`` in a namespace), with anything a limit name may not
    hold replaced by ``-``."""
    scoped = f"{namespace}-{tag}" if namespace else tag
    return "release-" + re.sub(r"[^A-Za-z0-9._-]+", "-", scoped)


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


class HeldLeases:
    """The leases of the tag slots this process holds (with their limits' names), so that a run stopped at once
    (flows/cancel.py) can free them first and the next run of the tag need not wait for them to lapse."""

    def __init__(self) -> None:
        self._leases: dict[UUID, str] = {}
        self._lock = threading.Lock()

    def add(self, leases: list[UUID], name: str = "") -> None:
        with self._lock:
            self._leases.update(dict.fromkeys(leases, name))

    def drop(self, leases: list[UUID]) -> None:
        with self._lock:
            for lease in leases:
                self._leases.pop(lease, None)

    def snapshot(self) -> list[UUID]:
        with self._lock:
            return list(self._leases)

    def release_all(self) -> None:
        """Free every held slot now, and delete the holder records of their limits; a failure leaves the slot
        to lapse with its lease."""
        with self._lock:
            held = dict(self._leases)
        if not held:
            return
        from prefect.client.orchestration import get_client

        from tasks.control.slots import holder_variable

        with get_client(sync_client=True) as client:
            for lease_id, name in held.items():
                client.release_concurrency_slots_with_lease(lease_id=lease_id)
                if name:
                    with contextlib.suppress(Exception):  # deleted already, or the server is away: judged later
                        client.delete_variable_by_name(holder_variable(name))
        self.drop(list(held))


HELD = HeldLeases()


def _ensure(tag: str, namespace: str = "") -> str:
    name = limit_name(tag, namespace)
    try:
        ensure_limit(name)
    except Exception as err:
        raise ConcurrencyError(
            f"cannot create the concurrency limit {name} ({type(err).__name__}): check that the Prefect API "
            "is reachable (PREFECT_API_URL)"
        ) from err
    return name


def _held() -> list[UUID]:
    from prefect.concurrency.context import ConcurrencyContext

    ctx = ConcurrencyContext.get()
    leases = list(ctx.cleanup_lease_ids) if ctx is not None else []
    HELD.add(leases)
    return leases


@contextmanager
def tag_slot(tag: str, timeout_seconds: float | None = None) -> Iterator[None]:
    """Hold the tag's slot: wait while another run of the same tag holds it."""
    from prefect.concurrency.sync import concurrency

    name = _ensure(tag)
    with concurrency(name, occupy=1, timeout_seconds=timeout_seconds, strict=True, lease_duration=LEASE_SECONDS):
        leases = _held()
        try:
            yield
        finally:
            HELD.drop(leases)


@asynccontextmanager
async def atag_slot(tag: str, timeout_seconds: float | None = None, *,
                    timing: SlotTiming | None = None, namespace: str = "") -> AsyncIterator[None]:
    """:func:`tag_slot` for async flows: the lease is renewed on the flow's event loop.

    While another run holds the slot, this run says which one and since when (progress and run log),
    takes the slot over when that run is gone (tasks/control/slots.py decides), and ends when it is itself
    cancelled. Once in, it records itself as the holder and keeps that record fresh. ``timing``: the
    slot's clock (the product's defaults when ``None``); ``namespace``: runs of the tag in other
    namespaces do not wait for this one (FMA_SLOT_NAMESPACE).
    """
    from tasks.control.slots import hold_slot

    name = await asyncio.to_thread(_ensure, tag, namespace)
    async with hold_slot(name, LEASE_SECONDS, timeout_seconds, timing) as leases:
        HELD.add(leases, name)
        try:
            yield
        finally:
            HELD.drop(leases)


async def afree_abandoned_slot(tag: str, namespace: str = "") -> str:
    """Free the tag's slot when the run that holds it is certainly gone (tasks/control/slots.py), for a run that
    needs no slot; what was freed, "" when nothing was (or the server could not say)."""
    from tasks.control.slots import free_abandoned

    try:
        return await free_abandoned(limit_name(tag, namespace))
    except Exception:  # a run answered from its record does not fail on its way out for this
        return ""


def one_run_per_tag(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorate a flow function whose ``tag`` parameter names the release: its body runs in :func:`tag_slot`.

    The signature and docstring stay the function's own (Prefect builds the UI form from them).
    """

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def awrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            tag = _tag_argument(fn, args, kwargs)
            parse_tag(tag)  # a malformed tag fails here, before it gets a limit of its own
            async with atag_slot(tag):
                return await fn(*args, **kwargs)

        return cast(Callable[P, R], awrapper)

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        tag = _tag_argument(fn, args, kwargs)
        parse_tag(tag)  # a malformed tag fails here, before it gets a limit of its own
        with tag_slot(tag):
            return fn(*args, **kwargs)

    return wrapper


def _tag_argument(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    bound = inspect.signature(fn).bind_partial(*args, **kwargs)
    return str(bound.arguments.get("tag", ""))
