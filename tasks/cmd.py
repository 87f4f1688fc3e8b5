"""The one place a subprocess is run."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from tasks.errors import CommandError
from tasks.redact import redact

log = logging.getLogger("fma_release.cmd")


def _run_streaming(
    args: list[str], *, cwd: str | Path | None, env: dict[str, str] | None, timeout: float,
    on_line: Callable[[str], None],
) -> subprocess.CompletedProcess[str]:
    """As ``subprocess.run``, with each stderr line handed to ``on_line`` (masked) while it runs.

    The command runs in a process group of its own, and a timeout kills the whole group: a child
    it started (ko's ``go build``) would otherwise hold stderr open and the read would go on.
    """
    with subprocess.Popen(
        args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    ) as proc:
        stdout, stderr = proc.stdout, proc.stderr
        assert stdout is not None and stderr is not None  # both are pipes, opened above
        stdout_parts: list[str] = []
        reader = threading.Thread(target=lambda: stdout_parts.append(stdout.read()), daemon=True)
        reader.start()
        expired = threading.Event()

        def kill_group() -> None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        def expire() -> None:
            expired.set()
            kill_group()

        timer = threading.Timer(timeout, expire)
        timer.start()
        stderr_lines: list[str] = []
        try:
            for line in stderr:
                stderr_lines.append(line)
                on_line(redact(line.rstrip("\n")))
            proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:  # on_line raised: do not leave the command running
                kill_group()
            reader.join()
    if expired.is_set():
        raise subprocess.TimeoutExpired(args, timeout)
    return subprocess.CompletedProcess(args, proc.returncode, "".join(stdout_parts), "".join(stderr_lines))


def run(
    argv: Sequence[str],
    *,
    cwd: str | Path | None = None,
    what: str,
    fix: str,
    timeout: float = 600,
    env: dict[str, str] | None = None,
    on_line: Callable[[str], None] | None = None,
) -> str:
    """Run ``argv`` (no shell), return stdout; raise :class:`CommandError` on failure.

    ``what`` names the step for the error message ("clone the source"), ``fix``
    says what the user can do. Command and stderr are masked before they are
    logged or put in the error. ``env`` is the whole environment (merge
    ``os.environ`` in yourself). ``on_line`` gets each stderr line, masked, as
    it is written (a long build's progress); the error still carries all of it.
    """
    args = [str(a) for a in argv]
    if shutil.which(args[0]) is None:
        raise CommandError(
            f"cannot {what}: {args[0]!r} is not installed; install it (scripts/setup.sh does)",
            argv=[redact(a) for a in args],
            returncode=127,
            stderr="",
        )
    shown = " ".join(redact(a) for a in args)
    log.debug("$ %s", shown)
    try:
        if on_line is None:
            proc = subprocess.run(
                args,
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                env=env,
            )
        else:
            proc = _run_streaming(args, cwd=cwd, env=env, timeout=timeout, on_line=on_line)
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
