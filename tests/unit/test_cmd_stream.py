"""tasks.cmd.run's streaming mode: stderr lines reach a callback masked, as they come (real processes)."""

from __future__ import annotations

import time

import pytest

from tasks import cmd
from tasks.errors import CommandError
from tasks.redact import register


def test_lines_arrive_while_the_command_runs_and_stdout_is_returned() -> None:
    """The first line is seen before the command ends; stdout comes back as without streaming."""
    seen: list[tuple[float, str]] = []
    started = time.monotonic()
    out = cmd.run(
        ["sh", "-c", "echo one >&2; sleep 1; echo two >&2; echo result"],
        what="run a test command", fix="none", on_line=lambda line: seen.append((time.monotonic() - started, line)),
    )
    assert out == "result\n"
    assert [line for _, line in seen] == ["one", "two"]
    assert seen[0][0] < 0.9 <= seen[1][0]


def test_lines_are_masked_and_a_failure_keeps_all_of_stderr() -> None:
    """A registered secret never reaches the callback; a failing command is a CommandError with its stderr."""
    register("hunter2-stream-secret")
    seen: list[str] = []
    with pytest.raises(CommandError) as caught:
        cmd.run(["sh", "-c", "echo pw=hunter2-stream-secret >&2; echo last words >&2; exit 3"],
                what="run a test command", fix="none", on_line=seen.append)
    assert seen == ["pw=***", "last words"]
    assert caught.value.returncode == 3
    assert caught.value.stderr == "pw=***\nlast words"
    assert "last words" in str(caught.value)


def test_a_streamed_command_that_overruns_is_killed_and_says_so() -> None:
    """Past its timeout the command and its children are killed: a CommandError naming the time, in about that time."""
    started = time.monotonic()
    with pytest.raises(CommandError, match="took longer than 1s"):
        cmd.run(["sh", "-c", "echo started >&2; sleep 30; echo never"], what="run a test command", fix="none",
                timeout=1, on_line=lambda _: None)
    assert time.monotonic() - started < 5
