"""Who holds a tag's slot, and taking it over from a run that is gone.

Prefect counts a held slot in the limit's ``active_slots`` (in the database) and keeps its lease in
the server's lease storage (in memory by default: ``prefect.server.concurrency.lease_storage.memory``).
A server restart loses the lease but not the count, so nothing ever frees that slot; a run killed
with SIGKILL frees it only when its lease lapses, if the server stays up. So the holder records
itself in a Prefect Variable ``fma_slot_<tag>`` (durable, on the server) and refreshes it every
heartbeat; a run that waits reads that record each wait step and :func:`judge_holder` decides (pure)
whether the holder is gone. The record also names the holder's host and process (:class:`HostId`,
:class:`ProcessId`): a waiter on the same host (the same kernel boot and PID namespace) looks the process
up, and takes the slot at the next look when it is gone (or its PID now belongs to another process), and
never while it lives; a holder on another host is judged by its record's age (the stale bound). The
three periods are a :class:`SlotTiming`, from the run's settings
(``FMA_SLOT_STALE_SECONDS``, ``FMA_SLOT_HEARTBEAT_SECONDS``, ``FMA_SLOT_WAIT_STEP_SECONDS``).
Leases are left to Prefect: the holder's is renewed by Prefect's ``concurrency`` and lapses as Prefect intends.

Taking over: the stale record is deleted first (a second waiter that judged the same record then
finds none and waits), the holder's lease is released when the server still has it, else the
limit's ``active_slots`` is lowered by one, and the waiter acquires the slot the ordinary way.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import math
import os
import re
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any
from uuid import UUID

from tasks.core import progress
from tasks.core.status import Status
from tasks.run.settings import Settings

HEARTBEAT_SECONDS = Settings.slot_heartbeat_seconds
# A holder whose run is still Running/Pending but whose record is older than this is gone (SIGKILL).
STALE_SECONDS = Settings.slot_stale_seconds
WAIT_STEP_SECONDS = Settings.slot_wait_step_seconds
# The first look comes this soon (a slot that is free is taken at once: the acquisition returns before),
# and the look that confirms a holder whose process is gone on this host (see _Watch.next_step).
FIRST_LOOK_SECONDS = 0.5
# A waiting run asks for the slot this often between its looks at the holder (one request, answered at once).
ATTEMPT_SECONDS = 0.5
CONFIRM_GONE_SECONDS = 1.0
# Prefect's own wording for runs that will never free a slot again.
GONE_STATES = frozenset({"CRASHED", "FAILED", "CANCELLED", "COMPLETED"})


@dataclass(frozen=True)
class SlotTiming:
    """The slot's clock: how long a silent holder keeps it, how often a holder and a waiter act."""

    stale_seconds: float = STALE_SECONDS
    heartbeat_seconds: float = HEARTBEAT_SECONDS
    wait_step_seconds: float = WAIT_STEP_SECONDS

    @classmethod
    def of(cls, settings: Settings) -> SlotTiming:
        """The timing the run's settings name."""
        return cls(settings.slot_stale_seconds, settings.slot_heartbeat_seconds, settings.slot_wait_step_seconds)


class Verdict(StrEnum):
    TAKE = "take"
    WAIT = "wait"


class Liveness(StrEnum):
    """What a waiter saw of the holder's process: alive, gone, or nothing (another host, an old record)."""

    ALIVE = "alive"
    GONE = "gone"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class HostId:
    """Where a process runs. ``boot`` (the kernel's boot id) and ``pid_ns`` (the PID namespace) say whether a
    PID recorded there means the same process here; ``name`` and ``machine`` (/etc/machine-id) are for people."""

    name: str
    boot: str
    pid_ns: str
    machine: str = ""

    def sees_processes_of(self, other: HostId) -> bool:
        """Whether a process of ``other`` can be looked up here by its PID: the same boot and PID namespace
        (a container has a namespace of its own; a rebooted host a new boot id)."""
        return bool(self.boot and self.pid_ns) and (self.boot, self.pid_ns) == (other.boot, other.pid_ns)

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "boot": self.boot, "pid_ns": self.pid_ns, "machine": self.machine}

    @classmethod
    def from_json(cls, value: Any) -> HostId | None:
        if not isinstance(value, dict):
            return None
        return cls(*(str(value.get(k) or "") for k in ("name", "boot", "pid_ns", "machine")))


@dataclass(frozen=True)
class ProcessId:
    """A process: its PID and the kernel's start time of it (clock ticks since boot), so a PID reused by
    another process is not taken for it."""

    pid: int
    start: int

    def to_json(self) -> dict[str, int]:
        return {"pid": self.pid, "start": self.start}

    @classmethod
    def from_json(cls, value: Any) -> ProcessId | None:
        try:
            return cls(int(value["pid"]), int(value["start"]))
        except (TypeError, KeyError, ValueError):
            return None


@dataclass(frozen=True)
class SlotHolder:
    """The run that holds a tag's slot: its flow run, when it took the slot, when it last said it lives,
    and the host and process it runs in (absent in records written before they were recorded)."""

    flow_run_id: UUID
    since: datetime
    seen: datetime
    lease_id: UUID | None = None
    host: HostId | None = None
    process: ProcessId | None = None

    def to_json(self) -> dict[str, Any]:
        return {"flow_run_id": str(self.flow_run_id), "since": self.since.isoformat(),
                "seen": self.seen.isoformat(), "lease_id": str(self.lease_id) if self.lease_id else None,
                "host": self.host.to_json() if self.host else None,
                "process": self.process.to_json() if self.process else None}

    @classmethod
    def from_json(cls, value: Any) -> SlotHolder | None:
        """The record, or ``None`` when it is not one of ours (then nobody is judged gone)."""
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                return None
        if not isinstance(value, dict):
            return None
        try:
            lease = value.get("lease_id")
            return cls(UUID(str(value["flow_run_id"])), datetime.fromisoformat(str(value["since"])),
                       datetime.fromisoformat(str(value["seen"])), UUID(str(lease)) if lease else None,
                       HostId.from_json(value.get("host")), ProcessId.from_json(value.get("process")))
        except (KeyError, ValueError):
            return None


def judge_holder(holder: SlotHolder | None, state: str | None, *, known: bool, now: datetime,
                 stale_after: float = STALE_SECONDS, unrecorded_for: float = 0.0,
                 process: Liveness = Liveness.UNKNOWN) -> Verdict:
    """Take the slot when its holder is gone, else wait.

    ``state``: the holder run's state type (``"RUNNING"``...), ``known``: whether the server knows
    that run at all. No record: wait while the holder may be about to write it (it does so as soon as
    it has the slot), and take the slot once this waiter has seen no record for ``unrecorded_for`` >
    ``stale_after`` seconds (a holder that died before writing it, or a record lost with the server's
    data: with the lease gone too, nothing else would ever free the slot). A run the server does not
    know, or in a final state, is gone. ``process``: what this waiter saw of the holder's process
    (:func:`look_at_process`): on the same host a process that is gone is a holder that is gone, and one
    that lives keeps the slot however old its record (its heartbeat may fail while the server is away).
    Otherwise a live-looking run whose record has not been refreshed for ``stale_after`` seconds died
    without a word.
    """
    if holder is None:
        return Verdict.TAKE if unrecorded_for > stale_after else Verdict.WAIT
    ended = not known or (state is not None and state.upper() in GONE_STATES)
    if ended or process is Liveness.GONE:
        return Verdict.TAKE
    if process is Liveness.ALIVE:
        return Verdict.WAIT
    return Verdict.TAKE if (now - holder.seen).total_seconds() > stale_after else Verdict.WAIT


def liveness(holder: SlotHolder, here: HostId, found_start: int | None, exists: bool) -> Liveness:
    """What the process table says of ``holder``'s process (pure): ``found_start`` is the start time of the
    process with its PID here (``None``: no readable one), ``exists`` whether that PID is taken at all (a
    process of another user may be hidden from /proc). Unknown unless the holder recorded its host and
    process and runs where this waiter can see its processes."""
    if holder.host is None or holder.process is None or not here.sees_processes_of(holder.host):
        return Liveness.UNKNOWN
    if found_start is not None:
        return Liveness.ALIVE if found_start == holder.process.start else Liveness.GONE
    return Liveness.UNKNOWN if exists else Liveness.GONE


def holder_variable(limit: str) -> str:
    """The Variable that records the holder of limit ``release-<tag>``: ``fma_slot_<tag>`` (a Variable
    name holds lower-case letters, digits and ``_`` only)."""
    return "fma_slot_" + re.sub(r"[^a-z0-9_]", "_", limit.removeprefix("release-").lower())


def describe(holder: SlotHolder | None, state: str | None, now: datetime, stale_after: float = STALE_SECONDS) -> str:
    if holder is None:
        return (f"held by a run that left no record; taken over after {stale_after:.0f}s without one, "
                "or when its lease lapses")
    age = int((now - holder.since).total_seconds())
    shown = (state or "unknown").lower()
    where = f", process {holder.process.pid} on {holder.host.name}" if holder.host and holder.process else ""
    return f"held by flow run {holder.flow_run_id} ({shown}{where}) since {holder.since:%H:%M:%S} UTC ({age}s)"


class _QuietTimeouts(logging.Filter):
    """Drop Prefect's ERROR line for an acquisition that found the slot held (423) or timed out: here that
    is one attempt of a waiting run, not a fault, and it would print at every attempt."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        return not (
            record.msg == "Service %r failed to process item %r"
            and any("ConcurrencySlotAcquisition" in str(a) for a in args[:1])
            and any(_found_held(a) or "TimeoutError" in str(a) or "state=cancelled" in str(a) for a in args[1:])
        )


def _found_held(item: object) -> bool:
    """Whether a queued acquisition (its arguments, then its future) ended in the server's 423."""
    import concurrent.futures

    future = item[-1] if isinstance(item, tuple) and item else None
    if not isinstance(future, concurrent.futures.Future) or not future.done() or future.cancelled():
        return False
    error = future.exception()
    return error is not None and _is_423(error)


_QUIET = _QuietTimeouts()


def _held(err: BaseException) -> bool:
    """Whether an acquisition failed only because the slot is held (the server's 423)."""
    return err.__cause__ is not None and _is_423(err.__cause__)


def _is_423(err: BaseException) -> bool:
    import httpx

    return isinstance(err, httpx.HTTPStatusError) and err.response.status_code == 423


def _quiet_acquisition_timeouts() -> None:
    logger = logging.getLogger("prefect._internal.concurrency")
    if _QUIET not in logger.filters:
        logger.addFilter(_QUIET)


def _now() -> datetime:
    return datetime.now(UTC)


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def _stat(pid: int) -> tuple[str, int] | None:
    """The state letter and start time (field 22 of /proc/<pid>/stat, clock ticks since boot) of process ``pid``,
    ``None`` when /proc shows no such process."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command name (field 2) may hold spaces and ")"
    return fields[0], int(fields[19])


@functools.cache
def host_here() -> HostId:
    """This host: its name, boot id, PID namespace and machine id (each "" where the system has none)."""
    try:
        pid_ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pid_ns = ""
    return HostId(socket.gethostname(), _read("/proc/sys/kernel/random/boot_id"), pid_ns, _read("/etc/machine-id"))


def this_process() -> ProcessId | None:
    found = _stat(os.getpid())
    return None if found is None else ProcessId(os.getpid(), found[1])


def look_at_process(holder: SlotHolder) -> Liveness:
    """Whether ``holder``'s process still runs, when it runs where this process can see it."""
    here = host_here()
    if holder.host is None or holder.process is None or not here.sees_processes_of(holder.host):
        return Liveness.UNKNOWN
    pid = holder.process.pid
    found = _stat(pid)
    if found is not None:
        state, start = found
        if state in ("Z", "X"):  # dead, not yet reaped by its parent
            return liveness(holder, here, None, exists=False)
        return liveness(holder, here, start, exists=True)
    try:
        os.kill(pid, 0)  # no signal sent: only whether the PID is taken (by a process /proc hides)
    except ProcessLookupError:
        return liveness(holder, here, None, exists=False)
    except PermissionError:
        pass
    return liveness(holder, here, None, exists=True)


def _log(message: str) -> None:
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    with contextlib.suppress(MissingContextError):
        get_run_logger().info(message)


async def _read_holder(client: Any, name: str) -> SlotHolder | None:
    variable = await client.read_variable_by_name(holder_variable(name))
    return None if variable is None else SlotHolder.from_json(variable.value)


async def _write_holder(client: Any, name: str, holder: SlotHolder) -> None:
    from prefect.client.schemas.actions import VariableCreate, VariableUpdate

    var = holder_variable(name)
    value = json.dumps(holder.to_json())
    if await client.read_variable_by_name(var) is None:
        with contextlib.suppress(Exception):  # created by a racing run a moment ago: update below
            await client.create_variable(VariableCreate(name=var, value=value))
            return
    await client.update_variable(VariableUpdate(name=var, value=value))


async def _holder_state(client: Any, holder: SlotHolder) -> tuple[str | None, bool]:
    from prefect.exceptions import ObjectNotFound

    try:
        run = await client.read_flow_run(holder.flow_run_id)
    except ObjectNotFound:
        return None, False
    return (run.state.type.value if run.state is not None else None), True


async def _take_over(client: Any, name: str, judged: SlotHolder) -> bool:
    """Free the slot of a gone holder; ``False`` when the record changed meanwhile (another waiter)."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    current = await _read_holder(client, name)
    if current != judged:
        return False
    await client.delete_variable_by_name(holder_variable(name))
    before = (await client.read_global_concurrency_limit_by_name(name)).active_slots
    if judged.lease_id is not None:
        # The server still has the lease: releasing it lowers the count and ends the lease. A lease the
        # server lost (a restart) is released silently with nothing lowered: then lower it here.
        with contextlib.suppress(Exception):
            await client.release_concurrency_slots_with_lease(lease_id=judged.lease_id)
    after = (await client.read_global_concurrency_limit_by_name(name)).active_slots
    if after >= before > 0:
        await client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active_slots=after - 1))
    return True


class SlotWaitCancelled(Exception):
    """This run was cancelled while it waited for the tag's slot."""


async def _cancelled(client: Any, run_id: UUID | None) -> bool:
    from prefect.client.schemas.objects import StateType

    if run_id is None:
        return False
    try:
        state = (await client.read_flow_run(run_id)).state
    except Exception:
        return False
    return state is not None and state.type in (StateType.CANCELLING, StateType.CANCELLED)


class _Watch:
    """What one waiting run has seen: the holders it has named, since when there is no record."""

    def __init__(self, timing: SlotTiming) -> None:
        self.timing = timing
        self.said: set[str] = set()
        self.unrecorded_since: datetime | None = None
        self.gone: SlotHolder | None = None  # the holder the last look judged gone
        self.process_gone = False  # ... because its process on this host is gone
        self.looks = 0

    def next_step(self) -> float:
        """How long the next acquisition waits before this run looks at the holder again: the first look comes
        at once; the look that confirms a holder whose process is gone a second later (a run that has just
        acquired the slot writes its record within milliseconds, and only a lease that lapsed after 5 minutes
        lets one acquire it while a dead holder's record is there); every other look one wait step later."""
        step = self.timing.wait_step_seconds
        if self.looks == 0:
            return min(step, FIRST_LOOK_SECONDS)
        return min(step, CONFIRM_GONE_SECONDS) if self.gone is not None and self.process_gone else step

    def confirmed(self, holder: SlotHolder, gone: bool) -> bool:
        """Take over only when two looks in a row judged the same record gone: a run that has just
        acquired the slot writes its own record within a step, so a stale record (of a run that ended)
        read in that moment never frees the new holder's slot."""
        confirmed = gone and self.gone == holder
        self.gone = holder if gone else None
        return confirmed

    def unrecorded_for(self, holder: SlotHolder | None, now: datetime) -> float:
        if holder is not None:
            self.unrecorded_since = None
            return 0.0
        self.unrecorded_since = self.unrecorded_since or now
        return (now - self.unrecorded_since).total_seconds()


async def _take_over_unrecorded(client: Any, name: str) -> bool:
    """Lower the count of a slot whose holder left no record; ``False`` when a record appeared meanwhile."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    if await _read_holder(client, name) is not None:
        return False
    active = (await client.read_global_concurrency_limit_by_name(name)).active_slots
    if active > 0:
        await client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active_slots=active - 1))
    return True


async def _wait_step(client: Any, name: str, run_id: UUID | None, watch: _Watch) -> None:
    """One look at the holder while waiting: say who holds the slot (once per holder), take it
    over when that holder is gone, stop when this run was cancelled."""
    if await _cancelled(client, run_id):
        from prefect.states import Cancelled

        message = f"cancelled while waiting for the slot of {name}"
        with contextlib.suppress(Exception):  # it ends either way
            await client.set_flow_run_state(run_id, Cancelled(message=message), force=True)
        raise SlotWaitCancelled(message)
    holder = await _read_holder(client, name)
    state, known = await _holder_state(client, holder) if holder is not None else (None, True)
    now = _now()
    text = describe(holder, state, now, watch.timing.stale_seconds)
    key = str(holder.flow_run_id if holder else None) + str(state)
    if key not in watch.said:
        watch.said.add(key)
        progress.report(progress.RUN, Status.WAITING, f"{name} {text}")
        _log(f"waiting for {name}: {text}")
    unrecorded = watch.unrecorded_for(holder, now)
    process = look_at_process(holder) if holder is not None else Liveness.UNKNOWN
    gone = judge_holder(holder, state, known=known, now=now, stale_after=watch.timing.stale_seconds,
                        unrecorded_for=unrecorded, process=process) is Verdict.TAKE
    watch.looks += 1
    watch.process_gone = process is Liveness.GONE
    if gone and holder is None and await _take_over_unrecorded(client, name):
        watch.unrecorded_since = None
        progress.report(progress.RUN, Status.SLOT_TAKEN, f"{name} from a run that left no record")
        _log(f"took over {name}: no run recorded itself as its holder for {unrecorded:.0f}s")
    if holder is not None and watch.confirmed(holder, gone) and await _take_over(client, name, holder):
        why = ""
        if process is Liveness.GONE and holder.process is not None and holder.host is not None:
            why = f": its process {holder.process.pid} on {holder.host.name} is gone"
            if state is None or state.upper() not in GONE_STATES:
                await _mark_crashed(client, holder, f"its process {holder.process.pid} on {holder.host.name} "
                                    f"ended before the run did; flow run {run_id} took the slot of {name} over")
        progress.report(progress.RUN, Status.SLOT_TAKEN, f"{name} from flow run {holder.flow_run_id}{why}")
        _log(f"took over {name} from flow run {holder.flow_run_id}, which is gone ({text}){why}")


async def _mark_crashed(client: Any, holder: SlotHolder, message: str) -> None:
    """Set a holder whose process is gone to Crashed, where it would otherwise stay Running for ever."""
    from prefect.states import Crashed

    with contextlib.suppress(Exception):  # the UI's view only: the slot is taken either way
        await client.set_flow_run_state(holder.flow_run_id, Crashed(message=message), force=True)


def _current_run_id() -> UUID | None:
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return ctx.flow_run.id if ctx is not None and ctx.flow_run is not None else None


async def _heartbeat(client: Any, name: str, holder: SlotHolder, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        holder = dataclasses.replace(holder, seen=_now())
        with contextlib.suppress(Exception):  # a missed beat is caught up at the next one
            await _write_holder(client, name, holder)


@contextlib.asynccontextmanager
async def hold_slot(name: str, lease_seconds: float, timeout_seconds: float | None = None,
                    timing: SlotTiming | None = None) -> AsyncIterator[list[UUID]]:
    """Hold limit ``name``'s one slot (Prefect's ``concurrency``, strict, with a lease); yields the
    lease ids. Waits in steps of ``timing`` (the defaults when ``None``), judging the holder at each."""
    from prefect import get_client
    from prefect.client.schemas.objects import ConcurrencyLeaseHolder
    from prefect.concurrency.asyncio import AcquireConcurrencySlotTimeoutError, concurrency
    from prefect.concurrency.context import ConcurrencyContext

    _quiet_acquisition_timeouts()
    timing = timing or SlotTiming()
    run_id = _current_run_id()
    lease_holder = ConcurrencyLeaseHolder(type="flow_run", id=run_id) if run_id is not None else None
    loop = asyncio.get_running_loop()
    deadline = None if timeout_seconds is None else loop.time() + timeout_seconds
    watch = _Watch(timing)
    async with get_client() as client, contextlib.AsyncExitStack() as stack:
        look_at = loop.time() + watch.next_step()
        while True:
            # One request per attempt, never cut short: a request cancelled at a timeout while the server
            # grants it leaves the slot counted with a lease nobody holds (and no record: the run then
            # waited out the stale bound for its own slot). The server answers at once, 423 when it is held.
            try:
                await stack.enter_async_context(concurrency(
                    name, occupy=1, max_retries=0, strict=True, lease_duration=lease_seconds,
                    # a failed renewal (the server went away) must not stop builds and pushes that need no server
                    raise_on_lease_renewal_failure=False,
                    holder=lease_holder))
                break
            except Exception as err:
                if not _held(err):
                    raise
            if deadline is not None and loop.time() >= deadline:
                raise AcquireConcurrencySlotTimeoutError(f"{name} was not free within {timeout_seconds} second(s)")
            if loop.time() >= look_at:
                await _wait_step(client, name, run_id, watch)
                look_at = loop.time() + watch.next_step()
            pause = min(ATTEMPT_SECONDS, max(0.0, look_at - loop.time()))
            if deadline is not None:
                pause = min(pause, max(0.0, deadline - loop.time()))
            await asyncio.sleep(pause)
        ctx = ConcurrencyContext.get()
        leases = list(ctx.cleanup_lease_ids) if ctx is not None else []
        beat: asyncio.Task[None] | None = None
        if run_id is not None:
            now = _now()
            holder = SlotHolder(run_id, now, now, leases[-1] if leases else None, host_here(), this_process())
            with contextlib.suppress(Exception):  # without a record, waiters wait for the lease instead
                await _write_holder(client, name, holder)
            beat = asyncio.create_task(_heartbeat(client, name, holder, timing.heartbeat_seconds))
        try:
            yield leases
        finally:
            if beat is not None and run_id is not None:
                beat.cancel()
                with contextlib.suppress(BaseException):
                    await beat
                with contextlib.suppress(Exception):  # the server is away: the next run of the tag frees it
                    await _give_back(client, name, run_id, lease_id=leases[-1] if leases else None,
                                     lease_seconds=lease_seconds)


async def _give_back(client: Any, name: str, run_id: UUID, *, lease_id: UUID | None, lease_seconds: float) -> None:
    """The end of this run's hold: its record deleted, and the slot freed here when the server lost the lease
    (a restart: leases live in its memory, the count in its database), which releasing it would not free.
    Nothing is lowered once another run has taken the slot over (it deleted this run's record)."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    current = await _read_holder(client, name)
    if current is None or current.flow_run_id != run_id:
        return
    if lease_id is not None and await _lease_lost(client, lease_id, lease_seconds):
        active = (await client.read_global_concurrency_limit_by_name(name)).active_slots
        if active > 0:
            await client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active_slots=active - 1))
        _log(f"freed {name} by its count: the Prefect server lost this run's lease (it restarted)")
    await client.delete_variable_by_name(holder_variable(name))


async def _lease_lost(client: Any, lease_id: UUID, lease_seconds: float) -> bool:
    """Whether the server no longer knows ``lease_id`` (it answers 410 or 404 to its renewal)."""
    import httpx

    try:
        await client.renew_concurrency_lease(lease_id=lease_id, lease_duration=lease_seconds)
    except httpx.HTTPStatusError as err:
        return err.response.status_code in (404, 410)
    return False


async def free_abandoned(name: str) -> str:
    """Free limit ``name``'s slot when its holder is certainly gone: its run ended or is unknown, or its process
    on this host is gone (never by the stale bound: a run that needs no slot does not wait). For a run that needs
    no slot (a release answered from its record), so that a slot left by a run that ended while the Prefect
    server was away does not stay held until the tag is run again. What was done, "" when nothing."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
        try:
            if (await client.read_global_concurrency_limit_by_name(name)).active_slots == 0:
                return ""
        except ObjectNotFound:
            return ""
        holder = await _read_holder(client, name)
        if holder is None:  # no record to judge by: the waiting rule, with its time, is the one for that
            return ""
        state, known = await _holder_state(client, holder)
        process = look_at_process(holder)
        if judge_holder(holder, state, known=known, now=_now(), stale_after=math.inf,
                        process=process) is not Verdict.TAKE:
            return ""
        await asyncio.sleep(CONFIRM_GONE_SECONDS)  # a second look, as a waiting run's take-over needs
        if await _read_holder(client, name) != holder or not await _take_over(client, name, holder):
            return ""
        why = f"({(state or 'unknown').lower()})"
        if process is Liveness.GONE and holder.process is not None and holder.host is not None:
            why = f": its process {holder.process.pid} on {holder.host.name} is gone"
            if state is None or state.upper() not in GONE_STATES:
                await _mark_crashed(client, holder, f"its process {holder.process.pid} on {holder.host.name} "
                                    f"ended before the run did; {name} was freed")
        text = f"{name} from flow run {holder.flow_run_id}{why} (freed: this run needs no slot)"
        _log(f"took over {text}")
        return text
