"""The one place a subprocess is run: :func:`run` for a result, :func:`stream` for a long command whose
output is wanted line by line as it comes (a build's progress)."""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from tasks.core import tools
from tasks.core.errors import CommandError, ToolMissingError
from tasks.core.redact import redact

log = logging.getLogger("fma_release.cmd")

# Streamed commands still running. Each has a process group of its own, so a signal to the CLI does
# not reach it, and a run that ends at once (os._exit on cancel) would leave it building.
_running: set[subprocess.Popen[str]] = set()
_running_lock = threading.Lock()


def run(
    argv: Sequence[str],
    *,
    cwd: str | Path | None = None,
    what: str,
    fix: str,
    timeout: float = 600,
    env: dict[str, str] | None = None,
) -> str:
    """Run ``argv`` (no shell), return stdout; raise :class:`CommandError` on failure.

    ``what`` names the step for the error message ("clone the source"), ``fix``
    says what the user can do. Command and stderr are masked before they are
    logged or put in the error.

    A bare ``argv[0]`` that tasks/core/tools.py knows (ko, cosign, syft, go) is resolved
    there (.local/bin first, then PATH) and the process gets :func:`tasks.core.tools.tool_env`
    on top of ``env``; any other binary (git...) is looked up on PATH.
    """
    args = [str(a) for a in argv]
    if os.sep not in args[0] and tools.is_known(args[0]):
        try:
            args[0] = tools.tool(args[0])
        except ToolMissingError as err:
            raise CommandError(
                f"cannot {what}: {err}",
                argv=[redact(a) for a in args],
                returncode=127,
                stderr="",
            ) from err
        base = dict(os.environ) if env is None else env
        env = {**base, **tools.tool_env(base)}
    elif shutil.which(args[0]) is None:
        raise CommandError(
            f"cannot {what}: {args[0]!r} is not installed; install it (scripts/setup.sh does)",
            argv=[redact(a) for a in args],
            returncode=127,
            stderr="",
        )
    shown = " ".join(redact(a) for a in args)
    log.debug("$ %s", shown)
    try:
        proc = subprocess.run(
            args,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=env,
        )
    except subprocess.TimeoutExpired as err:
        raise CommandError(
            f"cannot {what}: '{shown}' took longer than {timeout:.0f}s; {fix}",
            argv=[redact(a) for a in args],
            returncode=-1,
            stderr="",
        ) from err
    if proc.returncode != 0:
        stderr = redact(proc.stderr.strip())
        last = stderr.splitlines()[-1] if stderr else f"exit code {proc.returncode}"
        raise CommandError(
            f"cannot {what}: {last}; {fix}",
            argv=[redact(a) for a in args],
            returncode=proc.returncode,
            stderr=stderr,
        )
    return proc.stdout


def git(args: Sequence[str], *, what: str, fix: str, cwd: str | Path | None = None) -> str:
    """Run ``git`` with ``args``; it never prompts for credentials (a missing one fails, not hangs)."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true"}
    return run(["git", *args], cwd=cwd, what=what, fix=fix, env=env)


STREAM_TAIL = 40  # lines of output a failed streamed command keeps for its error


def stream(
    argv: Sequence[str],
    *,
    on_line: Callable[[str], None],
    what: str,
    fix: str,
    timeout: float = 3600,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
) -> None:
    """Run ``argv`` (no shell) and hand each line of its output (stdout and stderr merged, secrets
    masked, line end stripped) to ``on_line`` as it arrives, on the calling thread.

    Raises :class:`CommandError` when the command exits non-zero or runs longer than ``timeout``
    seconds (then it is killed with its process group); the error's ``stderr`` is the last
    ``STREAM_TAIL`` lines of the output, masked. An exception from ``on_line`` stops the command and
    propagates.
    """
    args = [str(a) for a in argv]
    masked = [redact(a) for a in args]
    shown = " ".join(masked)
    if shutil.which(args[0]) is None:
        raise CommandError(f"cannot {what}: {args[0]!r} is not installed; install it (scripts/setup.sh does)",
                           argv=masked, returncode=127, stderr="")
    log.debug("$ %s", shown)
    last: collections.deque[str] = collections.deque(maxlen=STREAM_TAIL)
    proc = subprocess.Popen(
        args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, encoding="utf-8", errors="replace", bufsize=1,
        start_new_session=True,  # its own process group: a timeout kills the command's children too
    )
    with _running_lock:
        _running.add(proc)
    expired = threading.Event()

    def kill() -> None:
        expired.set()
        _kill_group(proc)

    timer = threading.Timer(timeout, kill)
    timer.daemon = True
    timer.start()
    try:
        assert proc.stdout is not None  # stdout=PIPE
        for raw in proc.stdout:
            line = redact(raw.rstrip("\r\n"))
            last.append(line)
            on_line(line)
        returncode = proc.wait()
    except BaseException:
        _kill_group(proc)
        proc.wait()
        raise
    finally:
        timer.cancel()
        with _running_lock:
            _running.discard(proc)
        if proc.stdout is not None:
            proc.stdout.close()
    output = "\n".join(last)
    if expired.is_set():
        raise CommandError(f"cannot {what}: '{shown}' took longer than {timeout:.0f}s; {fix}",
                           argv=masked, returncode=-1, stderr=output)
    if returncode != 0:
        final = next((line.strip() for line in reversed(last) if line.strip()), f"exit code {returncode}")
        raise CommandError(f"cannot {what}: {final}; {fix}", argv=masked, returncode=returncode, stderr=output)


def stop_streams() -> int:
    """Kill every streamed command still running, with its process group; how many there were.

    For a process about to end at once (a cancelled run): a build whose client is gone is one the
    engine abandons."""
    with _running_lock:
        running = list(_running)
    for proc in running:
        _kill_group(proc)
    return len(running)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # already gone
        os.killpg(proc.pid, signal.SIGKILL)
