"""The one place a subprocess is run: :func:`run` for a result, :func:`stream` for a long command whose
output is wanted line by line as it comes (a build's progress), :func:`start` for a server and
:func:`serve` for a helper that answers requests on its stdin (fma-sbomd).

No child inherits a secret: every environment passes through :func:`child_env`, which drops the
release's own secret variables, any variable whose name says it is secret, and any variable whose
value is a secret this process registered (:mod:`tasks.core.redact`). A step that needs a secret in a
child (cosign's key password, a BuildKit build secret) passes it by name in ``secrets=``, so each
secret reaches only the command that asked for it. ``user=`` runs the command as another,
unprivileged user (:mod:`tasks.core.sandbox`).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tasks.core import tools
from tasks.core.errors import CommandError, ToolMissingError
from tasks.core.redact import is_secret, redact
from tasks.core.sandbox import BuildUser

log = logging.getLogger("fma_release.cmd")

# Streamed commands still running. Each has a process group of its own, so a signal to the CLI does
# not reach it, and a run that ends at once (os._exit on cancel) would leave it building.
_running: set[subprocess.Popen[str]] = set()
_running_lock = threading.Lock()


# The release's own secrets, by name; any name matching SECRET_NAME is dropped as well.
SECRET_VARIABLES = frozenset({
    "FMA_REGISTRY_PASSWORD", "FMA_SIGNING_PASSWORD", "GITHUB_TOKEN", "GH_TOKEN", "GITHUB_WEBHOOK_SECRET",
    "COSIGN_PASSWORD", "COSIGN_PRIVATE_KEY", "FMA_COSIGN_PRIVATE_KEY", "DOCKER_AUTH_CONFIG",
    "REGISTRY_AUTH", "PREFECT_API_KEY", "PREFECT_API_AUTH_STRING",
})
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|TOKEN|SECRET|CREDENTIAL|PRIVATE_KEY|API_KEY|AUTH_STRING", re.IGNORECASE)


def child_env(base: Mapping[str, str], secrets: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` without any secret (by name, or by a value registered as secret), plus ``secrets``: the
    environment every child of this process gets (pure, given the registered secrets)."""
    env = {
        key: value for key, value in base.items()
        if key not in SECRET_VARIABLES and not SECRET_NAME.search(key) and not is_secret(value)
    }
    env.update(secrets or {})
    return env


def run(
    argv: Sequence[str],
    *,
    cwd: str | Path | None = None,
    what: str,
    fix: str,
    timeout: float = 600,
    env: Mapping[str, str] | None = None,
    secrets: Mapping[str, str] | None = None,
) -> str:
    """Run ``argv`` (no shell), return stdout; raise :class:`CommandError` on failure.

    ``what`` names the step for the error message ("clone the source"), ``fix``
    says what the user can do. Command and stderr are masked before they are
    logged or put in the error.

    A bare ``argv[0]`` that tasks/core/tools.py knows (ko, cosign, syft, go) is resolved
    there (.local/bin first, then PATH) and the process gets :func:`tasks.core.tools.tool_env`
    on top of ``env``; any other binary (git...) is looked up on PATH. ``env`` (default: this
    process's) goes through :func:`child_env`; ``secrets`` are the only secrets the command gets.
    """
    args = [str(a) for a in argv]
    env = child_env(os.environ if env is None else env, secrets)
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
        env = {**env, **tools.tool_env(env)}
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
    """Run ``git`` with ``args``; it never prompts for credentials (a missing one fails, not hangs).

    Credentials for a private source come the way git takes them from the operator: a credential
    helper in git's own config, or ``GIT_CONFIG_*`` variables (``http.<url>.extraHeader``); never in
    the URL (:func:`tasks.run.inputs.check_source` refuses that)."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    env.setdefault("GIT_ASKPASS", "true")
    return run(["git", *args], cwd=cwd, what=what, fix=fix, env=env)


STREAM_TAIL = 40  # lines of output a failed streamed command keeps for its error


def stream(  # noqa: PLR0913 - the one choke point's options, all keywords
    argv: Sequence[str],
    *,
    on_line: Callable[[str], None],
    what: str,
    fix: str,
    timeout: float = 3600,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    secrets: Mapping[str, str] | None = None,
    user: BuildUser | None = None,
) -> None:
    """Run ``argv`` (no shell) and hand each line of its output (stdout and stderr merged, secrets
    masked, line end stripped) to ``on_line`` as it arrives, on the calling thread.

    Raises :class:`CommandError` when the command exits non-zero or runs longer than ``timeout``
    seconds (then it is killed with its process group); the error's ``stderr`` is the last
    ``STREAM_TAIL`` lines of the output, masked. An exception from ``on_line`` stops the command and
    propagates. ``env`` and ``secrets`` as for :func:`run`; ``user``: run as that unprivileged user, in a
    process group of its own that is killed when the command ends (a child left behind goes with it).
    """
    args = [str(a) for a in argv]
    env = child_env(os.environ if env is None else env, secrets)
    masked = [redact(a) for a in args]
    shown = " ".join(masked)
    if shutil.which(args[0]) is None:
        raise CommandError(f"cannot {what}: {args[0]!r} is not installed; install it (scripts/setup.sh does)",
                           argv=masked, returncode=127, stderr="")
    log.debug("$ %s", shown)
    last: collections.deque[str] = collections.deque(maxlen=STREAM_TAIL)
    identity: dict[str, Any] = {}
    if user is not None:  # setgid, setgroups([]), setuid in the child, before exec: no capability survives
        identity = {"user": user.uid, "group": user.gid, "extra_groups": [], "umask": 0o077}
    proc = subprocess.Popen(
        args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, encoding="utf-8", errors="replace", bufsize=1,
        start_new_session=True,  # its own process group: a timeout kills the command's children too
        **identity,
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
        if user is not None:  # nothing the command started outlives it
            _kill_group(proc)
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


def start(
    argv: Sequence[str],
    *,
    log_file: Path,
    what: str,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start a long-running ``argv`` (a server: no shell) with its output appended to ``log_file``,
    in a process group of its own, and return it at once; :func:`stop` ends it.

    ``env`` (default: this process's) goes through :func:`child_env`: a server gets no secret.
    Raises :class:`CommandError` when the binary is missing or cannot be executed."""
    args = [str(a) for a in argv]
    masked = [redact(a) for a in args]
    log.debug("$ %s &", " ".join(masked))
    with open(log_file, "ab") as out:
        try:
            return subprocess.Popen(
                args, cwd=cwd, env=child_env(os.environ if env is None else env), stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        except OSError as err:
            raise CommandError(f"cannot {what}: {args[0]}: {err.strerror or err}; run bash scripts/setup.sh",
                               argv=masked, returncode=127, stderr="") from err


def serve(argv: Sequence[str], *, what: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
    """Start a long-running ``argv`` that answers lines on its stdout to lines on its stdin (text pipes,
    stderr a pipe of its own), in a process group of its own, and return it at once. It is killed with
    the streamed commands (:func:`stop_streams`) and is expected to end when its stdin closes.

    ``argv[0]`` is resolved as for :func:`run`; ``env`` (default: this process's) goes through
    :func:`child_env`: what the process needs beyond that comes on its stdin. Raises
    :class:`CommandError` when the binary is missing or cannot be executed."""
    args = [str(a) for a in argv]
    masked = [redact(a) for a in args]
    env = child_env(os.environ if env is None else env)
    try:
        if os.sep not in args[0] and tools.is_known(args[0]):
            args[0] = tools.tool(args[0])
            env = {**env, **tools.tool_env(env)}
        log.debug("$ %s <>", " ".join(masked))
        proc = subprocess.Popen(
            args, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            encoding="utf-8", errors="replace", bufsize=1, start_new_session=True,
        )
    except (ToolMissingError, OSError) as err:
        reason = str(err) if isinstance(err, ToolMissingError) else f"{args[0]}: {err.strerror or err}"
        raise CommandError(f"cannot {what}: {reason}", argv=masked, returncode=127, stderr="") from err
    with _running_lock:
        _running.add(proc)
    return proc


def served_ended(proc: subprocess.Popen[str]) -> None:
    """Forget a process :func:`serve` started, once it has ended."""
    with _running_lock:
        _running.discard(proc)


def stop(proc: subprocess.Popen[bytes], *, grace: float = 5.0) -> None:
    """End a process :func:`start` started, with its process group: SIGTERM, then SIGKILL after
    ``grace`` seconds; waits until it is gone. A process already reaped is left alone (its group id
    may belong to another process by now)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
