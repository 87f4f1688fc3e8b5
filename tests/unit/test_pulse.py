"""A long build's pulse: when it tells what it does, and what it says (pure parts, driven by a fake clock)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tasks.core import progress
from tasks.core.pulse import HEARTBEAT, STEP_GAP, STEP_WIDTH, Pulse, due, pulse_detail, short_step
from tasks.core.status import Status


@pytest.fixture
def reports() -> Iterator[list[tuple[str, str, str]]]:
    seen: list[tuple[str, str, str]] = []

    def listen(item: str, state: str, detail: str) -> None:
        seen.append((item, state, detail))

    progress.subscribe(listen)
    yield seen
    progress.unsubscribe(listen)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("quiet", "step", "told", "expected"),
    [
        (HEARTBEAT, "", "", True),  # nothing new for the heartbeat's time: said again
        (HEARTBEAT - 0.1, "a", "a", False),
        (STEP_GAP, "b", "a", True),  # a new step, once the gap has passed
        (STEP_GAP - 0.1, "b", "a", False),  # a new step too soon after the last report
        (0.0, "b", "a", False),
    ],
)
def test_due(quiet: float, step: str, told: str, expected: bool) -> None:
    """A report is due after HEARTBEAT seconds of quiet, or for a new step after STEP_GAP."""
    assert due(50.0 + quiet, 50.0, step, told) is expected


@given(st.lists(st.tuples(st.floats(min_value=0.0, max_value=4.0), st.sampled_from(["", "a", "b", "c"])),
                max_size=200))
def test_reports_are_never_closer_than_the_step_gap_nor_further_apart_than_a_heartbeat(
    moves: list[tuple[float, str]],
) -> None:
    """However steps come, checks a second apart never report twice within STEP_GAP, and never leave more
    than HEARTBEAT plus one check of quiet."""
    clock = Clock()
    pulse = Pulse("x", clock=clock)
    told = [clock.now]
    for advance, step in moves:
        if step:
            pulse.step(step)
        for _ in range(int(advance) + 1):
            clock.now += 1.0
            if pulse.check() is not None:
                told.append(clock.now)
    gaps = [later - earlier for earlier, later in itertools.pairwise(told)]
    assert all(STEP_GAP <= gap <= HEARTBEAT + 1.0 for gap in gaps)
    assert clock.now - told[-1] <= HEARTBEAT + 1.0


def test_a_pulse_reports_the_step_and_the_time_so_far(reports: list[tuple[str, str, str]]) -> None:
    """A quick step is never told; a long one is, as `still building`, with the whole build's time."""
    clock = Clock()
    pulse = Pulse("dual-pods-controller", clock=clock)
    pulse.step("fetching the base r.test/static:1")
    clock.now += 3
    assert pulse.check() is None
    pulse.step("compiling for   linux/amd64,\nlinux/arm64")
    clock.now += STEP_GAP
    assert pulse.check() == f"compiling for linux/amd64, linux/arm64 ({3 + STEP_GAP:.0f}s so far)"
    clock.now += HEARTBEAT
    pulse.check()
    assert [r[1] for r in reports] == [Status.STILL_BUILDING] * 2
    assert reports[-1] == ("dual-pods-controller", Status.STILL_BUILDING,
                           f"compiling for linux/amd64, linux/arm64 ({3 + STEP_GAP + HEARTBEAT:.0f}s so far)")


def test_a_left_pulse_says_nothing_more(reports: list[tuple[str, str, str]]) -> None:
    """Its thread ends when the build does: no report can follow the build's own `built`."""
    clock = Clock()
    with Pulse("launcher", clock=clock, tick=0.01) as pulse:
        pulse.step("[2/3] RUN make")
    clock.now += 10 * HEARTBEAT
    assert pulse._thread is not None and not pulse._thread.is_alive()
    assert reports == []


def test_detail_and_short_step() -> None:
    """Without a step only the time is said; a step is one line of at most STEP_WIDTH characters."""
    assert pulse_detail("", 31.6) == "32s so far"
    assert len(short_step("RUN " + "x " * 200)) == STEP_WIDTH and short_step("a\n b") == "a b"


def test_a_shorter_heartbeat_tells_a_new_step_sooner_and_the_setting_keeps_the_console_bound() -> None:
    """FMA_PULSE_SECONDS shortens the heartbeat (tests do); a new step then waits two thirds of it. Above 15 s
    the console could stay silent past its 30 s bound: refused."""
    from tasks.core.errors import ConfigError
    from tasks.run.settings import Settings

    assert due(50.0 + 4.0, 50.0, "", "", heartbeat=4.0) and not due(53.9, 50.0, "", "", heartbeat=4.0)
    assert due(52.7, 50.0, "new", "old", heartbeat=4.0) and not due(52.6, 50.0, "new", "old", heartbeat=4.0)
    assert Settings.from_env({}).pulse_seconds == HEARTBEAT <= 15.0
    assert Settings.from_env({"FMA_PULSE_SECONDS": "4"}).pulse_seconds == 4.0
    with pytest.raises(ConfigError, match=r"FMA_PULSE_SECONDS .* at most 15"):
        Settings.from_env({"FMA_PULSE_SECONDS": "20"})
