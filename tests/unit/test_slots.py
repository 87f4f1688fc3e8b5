"""The reclaim decision (pure): a tag's slot is taken from a holder that is gone, never from a live one."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tasks.control.slots import (
    STALE_SECONDS,
    HostId,
    Liveness,
    ProcessId,
    SlotHolder,
    Verdict,
    holder_variable,
    judge_holder,
    liveness,
)

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def holder(seen_ago: float = 1.0) -> SlotHolder:
    return SlotHolder(uuid.uuid4(), NOW - timedelta(minutes=10), NOW - timedelta(seconds=seen_ago), uuid.uuid4())


@pytest.mark.parametrize("state", ["CRASHED", "FAILED", "CANCELLED", "COMPLETED", "crashed"])
def test_a_holder_in_a_final_state_is_gone(state: str) -> None:
    assert judge_holder(holder(), state, known=True, now=NOW) is Verdict.TAKE


@pytest.mark.parametrize("state", ["RUNNING", "PENDING", "CANCELLING", "SCHEDULED", "PAUSED", None])
def test_a_live_holder_keeps_the_slot(state: str | None) -> None:
    assert judge_holder(holder(seen_ago=2), state, known=True, now=NOW) is Verdict.WAIT


def test_a_holder_unknown_to_the_server_is_gone() -> None:
    assert judge_holder(holder(), None, known=False, now=NOW) is Verdict.TAKE


def test_a_running_holder_that_stopped_refreshing_its_record_is_gone() -> None:
    assert judge_holder(holder(seen_ago=STALE_SECONDS + 1), "RUNNING", known=True, now=NOW) is Verdict.TAKE
    assert judge_holder(holder(seen_ago=STALE_SECONDS - 1), "RUNNING", known=True, now=NOW) is Verdict.WAIT


def test_without_a_record_the_run_waits_then_takes_the_slot() -> None:
    """A holder writes its record as soon as it has the slot: no record for longer than the stale bound means
    it died first, or the record went with the server's data."""
    assert judge_holder(None, None, known=False, now=NOW) is Verdict.WAIT
    assert judge_holder(None, None, known=True, now=NOW, unrecorded_for=STALE_SECONDS - 1) is Verdict.WAIT
    assert judge_holder(None, None, known=True, now=NOW, unrecorded_for=STALE_SECONDS + 1) is Verdict.TAKE


def test_the_record_round_trips_and_foreign_values_are_no_record() -> None:
    h = holder()
    assert SlotHolder.from_json(h.to_json()) == h
    assert SlotHolder.from_json({"flow_run_id": "x"}) is None
    assert SlotHolder.from_json("not json") is None
    assert SlotHolder.from_json(3) is None


def test_holder_variable_names_are_valid_prefect_variable_names() -> None:
    assert holder_variable("release-v0.6.4-rc.1") == "fma_slot_v0_6_4_rc_1"


def test_only_prefect_s_timed_out_or_cancelled_acquisitions_are_quieted() -> None:
    import logging

    from tasks.control.slots import _QUIET

    def record(*args: object) -> logging.LogRecord:
        return logging.LogRecord("prefect._internal.concurrency", logging.ERROR, __file__, 1,
                                 "Service %r failed to process item %r", args, None)

    service = "ConcurrencySlotAcquisitionWithLeaseService"
    assert not _QUIET.filter(record(service, "(1, <Future state=finished raised TimeoutError>)"))
    assert not _QUIET.filter(record(service, "(1, <Future state=cancelled>)"))
    assert _QUIET.filter(record(service, "(1, <Future state=finished raised HTTPStatusError>)"))
    assert _QUIET.filter(record("EventsWorker", "(1, <Future state=finished raised TimeoutError>)"))


def test_a_holder_is_taken_over_only_when_two_looks_in_a_row_judge_it_gone() -> None:
    """A stale record read just as another run acquires the slot (before it writes its own) is not enough."""
    from tasks.control.slots import SlotTiming, _Watch

    watch, old, new = _Watch(SlotTiming()), holder(), holder(seen_ago=1)
    assert not watch.confirmed(old, gone=True)  # first look: gone, not yet confirmed
    assert watch.confirmed(old, gone=True)  # the same record, gone again: take it
    assert not watch.confirmed(new, gone=True)  # another record: start over
    assert not watch.confirmed(new, gone=False) and not watch.confirmed(new, gone=True)


def test_the_slot_timing_comes_from_the_settings_and_defaults_to_the_product_s() -> None:
    """45 s stale bound, 10 s heartbeat, 3 s wait step unless the environment says otherwise."""
    from tasks.control.slots import SlotTiming
    from tasks.run.settings import Settings

    assert SlotTiming.of(Settings.from_env({})) == SlotTiming() == SlotTiming(45.0, 10.0, 3.0)
    short = Settings.from_env({"FMA_SLOT_STALE_SECONDS": "6", "FMA_SLOT_HEARTBEAT_SECONDS": "1.5",
                               "FMA_SLOT_WAIT_STEP_SECONDS": "0.5"})
    assert SlotTiming.of(short) == SlotTiming(6.0, 1.5, 0.5)


@pytest.mark.parametrize(("env", "message"), [
    ({"FMA_SLOT_STALE_SECONDS": "soon"}, "FMA_SLOT_STALE_SECONDS='soon' is not a positive number"),
    ({"FMA_SLOT_WAIT_STEP_SECONDS": "0"}, "FMA_SLOT_WAIT_STEP_SECONDS='0' is not a positive number"),
    ({"FMA_SLOT_HEARTBEAT_SECONDS": "-1"}, "FMA_SLOT_HEARTBEAT_SECONDS='-1' is not a positive number"),
    ({"FMA_SLOT_STALE_SECONDS": "5", "FMA_SLOT_HEARTBEAT_SECONDS": "5"}, "must be shorter than"),
])
def test_a_slot_timing_that_cannot_work_is_refused_in_one_line(env: dict[str, str], message: str) -> None:
    from tasks.core.errors import ConfigError
    from tasks.run.settings import Settings

    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_the_wait_line_names_the_stale_bound_in_use() -> None:
    from tasks.control.slots import describe

    assert "taken over after 6s without one" in describe(None, None, NOW, stale_after=6)
    assert "taken over after 45s without one" in describe(None, None, NOW)


HERE = HostId("vm", "boot-1", "pid:[4026531836]", "machine-1")


def local_holder(seen_ago: float = 1.0, host: HostId | None = HERE) -> SlotHolder:
    return dataclasses.replace(holder(seen_ago), host=host, process=ProcessId(4242, 987654))


def test_a_holder_whose_process_is_gone_is_taken_at_once_however_fresh_its_record() -> None:
    """Killed with SIGKILL a moment ago on this host: its run still says Running and its record is 1 s old."""
    assert judge_holder(local_holder(), "RUNNING", known=True, now=NOW, process=Liveness.GONE) is Verdict.TAKE


def test_a_holder_whose_process_lives_keeps_the_slot_however_old_its_record() -> None:
    """Its heartbeat may fail while the Prefect server is away; a process that lives is no holder that is gone."""
    stale = local_holder(seen_ago=STALE_SECONDS * 10)
    assert judge_holder(stale, "RUNNING", known=True, now=NOW, process=Liveness.ALIVE) is Verdict.WAIT
    # A run that ended is gone even while its process lives on (a served process, a test's).
    assert judge_holder(stale, "COMPLETED", known=True, now=NOW, process=Liveness.ALIVE) is Verdict.TAKE


def test_without_a_look_at_the_process_the_stale_bound_decides() -> None:
    fresh, stale = local_holder(seen_ago=STALE_SECONDS - 1), local_holder(seen_ago=STALE_SECONDS + 1)
    assert judge_holder(fresh, "RUNNING", known=True, now=NOW, process=Liveness.UNKNOWN) is Verdict.WAIT
    assert judge_holder(stale, "RUNNING", known=True, now=NOW, process=Liveness.UNKNOWN) is Verdict.TAKE


@pytest.mark.parametrize(("found_start", "exists", "expected"), [
    (987654, True, Liveness.ALIVE),  # the same process
    (987999, True, Liveness.GONE),  # the PID now belongs to another process
    (None, False, Liveness.GONE),  # no such PID
    (None, True, Liveness.UNKNOWN),  # the PID is taken by a process /proc does not show (hidepid)
])
def test_the_process_table_of_the_same_host_says_whether_the_holder_lives(
    found_start: int | None, exists: bool, expected: Liveness,
) -> None:
    assert liveness(local_holder(), HERE, found_start, exists) is expected


@pytest.mark.parametrize("there", [
    HostId("vm", "boot-2", "pid:[4026531836]", "machine-1"),  # the same machine, booted again
    HostId("vm", "boot-1", "pid:[4026532999]", "machine-1"),  # another container on the same kernel
    HostId("other", "boot-9", "pid:[4026531836]", "machine-9"),  # another machine
    HostId("vm", "", "", ""),  # a system that shows none of it
])
def test_a_holder_elsewhere_is_never_judged_by_this_host_s_process_table(there: HostId) -> None:
    assert liveness(local_holder(host=there), HERE, None, exists=False) is Liveness.UNKNOWN


def test_an_old_record_without_host_and_process_is_read_and_judged_by_its_age() -> None:
    """Records written before hosts and processes were recorded still work, by the stale bound."""
    old = {"flow_run_id": str(uuid.uuid4()), "since": NOW.isoformat(),
           "seen": (NOW - timedelta(seconds=STALE_SECONDS + 1)).isoformat(), "lease_id": None}
    read = SlotHolder.from_json(old)
    assert read is not None and read.host is None and read.process is None
    assert liveness(read, HERE, None, exists=False) is Liveness.UNKNOWN
    assert judge_holder(read, "RUNNING", known=True, now=NOW) is Verdict.TAKE


def test_a_record_with_host_and_process_round_trips_and_the_wait_line_names_them() -> None:
    from tasks.control.slots import describe

    h = local_holder()
    assert SlotHolder.from_json(h.to_json()) == h
    assert SlotHolder.from_json(json.dumps(h.to_json())) == h
    assert "(running, process 4242 on vm) since" in describe(h, "RUNNING", NOW)


def test_a_waiting_run_looks_at_once_and_confirms_a_dead_process_a_second_later() -> None:
    """The first look after half a second; a holder whose process is gone is confirmed one second later; any
    other holder is looked at every wait step."""
    from tasks.control.slots import SlotTiming, _Watch

    watch = _Watch(SlotTiming(wait_step_seconds=3.0))
    assert watch.next_step() == 0.5
    dead = local_holder()
    watch.looks, watch.process_gone = 1, True
    watch.confirmed(dead, gone=True)
    assert watch.next_step() == 1.0
    watch.process_gone = False  # gone by its state or its record's age: the ordinary step
    assert watch.next_step() == 3.0
    watch.confirmed(dead, gone=False)
    assert watch.next_step() == 3.0
    assert _Watch(SlotTiming(wait_step_seconds=0.2)).next_step() == 0.2  # never longer than the step
