"""tasks.core.cmd.stream: a long command's output line by line, masked, with a timeout and a typed error."""

from __future__ import annotations

import time

import pytest

from tasks.core import cmd
from tasks.core.errors import CommandError
from tasks.core.redact import register


def test_lines_arrive_in_order_masked_with_stderr_merged() -> None:
    """stdout and stderr lines reach the callback as they are written, registered secrets as ***."""
    register("stream-secret-4711")
    seen: list[str] = []
    cmd.stream(["sh", "-c", "echo one; echo two >&2; echo token stream-secret-4711"], on_line=seen.append,
               what="echo", fix="")
    assert seen == ["one", "two", "token ***"]


def test_failure_carries_the_masked_tail_and_the_last_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """A non-zero exit raises CommandError with its code, the last line in the message and the tail."""
    monkeypatch.setattr(cmd, "STREAM_TAIL", 3)
    register("stream-secret-0815")
    with pytest.raises(CommandError) as caught:
        cmd.stream(["sh", "-c", "for i in 1 2 3 4 5; do echo line $i; done; echo bad stream-secret-0815; exit 4"],
                   on_line=lambda _: None, what="count", fix="count again")
    assert caught.value.returncode == 4
    assert str(caught.value) == "cannot count: bad ***; count again"
    assert caught.value.stderr == "line 4\nline 5\nbad ***"


def test_timeout_kills_the_command_and_its_children() -> None:
    """A command past its timeout is stopped with its process group, at once, as returncode -1."""
    began = time.monotonic()
    with pytest.raises(CommandError, match="took longer than 1s; wait less") as caught:
        cmd.stream(["sh", "-c", "echo started; sleep 30 & sleep 30; wait"], on_line=lambda _: None,
                   what="wait", fix="wait less", timeout=1)
    assert time.monotonic() - began < 5
    assert caught.value.returncode == -1 and caught.value.stderr == "started"


def test_callback_error_stops_the_command() -> None:
    """An exception in the callback ends the command and reaches the caller."""

    def refuse(line: str) -> None:
        raise RuntimeError(line)

    began = time.monotonic()
    with pytest.raises(RuntimeError, match="first"):
        cmd.stream(["sh", "-c", "echo first; sleep 30"], on_line=refuse, what="x", fix="")
    assert time.monotonic() - began < 5


def test_missing_program_is_127_naming_it() -> None:
    """A program that is not installed is a CommandError saying so, before anything runs."""
    with pytest.raises(CommandError, match="'no-such-program-fma' is not installed") as caught:
        cmd.stream(["no-such-program-fma"], on_line=lambda _: None, what="run it", fix="")
    assert caught.value.returncode == 127


def test_stop_streams_kills_running_commands_and_their_children() -> None:
    """What a cancelled run calls before it ends: each streamed command and its process group die, and the
    stream raises; a finished stream is no longer counted."""
    import threading

    cmd.stream(["true"], on_line=lambda _: None, what="finish", fix="")
    started = threading.Event()
    outcome: list[BaseException] = []

    def build() -> None:
        try:
            cmd.stream(["sh", "-c", "echo up; sleep 60 & wait"], on_line=lambda _: started.set(), what="sleep",
                       fix="")
        except CommandError as err:
            outcome.append(err)

    thread = threading.Thread(target=build)
    thread.start()
    assert started.wait(10)
    begun = time.monotonic()
    assert cmd.stop_streams() == 1
    thread.join(10)
    assert not thread.is_alive() and time.monotonic() - begun < 5
    assert len(outcome) == 1 and isinstance(outcome[0], CommandError)
    assert outcome[0].returncode == -9  # SIGKILL to the group: the sleep holding the pipe open dies too
    assert cmd.stop_streams() == 0
