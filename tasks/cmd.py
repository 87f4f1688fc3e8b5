"""The one place a subprocess is run."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from tasks import tools
from tasks.errors import CommandError, ToolMissingError
from tasks.redact import redact

log = logging.getLogger("fma_release.cmd")


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

    A bare ``argv[0]`` that tasks/tools.py knows (ko, cosign, syft, go) is resolved
    there (.local/bin first, then PATH) and the process gets :func:`tasks.tools.tool_env`
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
