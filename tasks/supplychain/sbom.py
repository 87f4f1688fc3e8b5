"""SBOMs of registry images, made by fma-sbomd (tools/sbomd): syft's own library, kept running.

``syft scan`` spends about a second of CPU building its license matcher before it reads a file, on
every image and platform, and an image's SBOM is attested after its push: that second sat on the
chain of the slowest image. fma-sbomd builds it once, when :func:`warm` starts it (the release's
preflight, while the images build), and then scans an image in tens of milliseconds. The SBOM is
syft's SPDX JSON, its creator ``syft-<version>`` of the syft version the project pins.

One fma-sbomd serves the whole process; requests from parallel sign steps are answered as each
ends. It ends when this process closes its stdin (:func:`stop`, or this process's exit). If it dies,
the scans waiting on it fail with a transient error (retried by the step's policy) and the next scan
starts a new one.

A registry's credentials reach fma-sbomd only in the request for an image of that registry (its
stdin, never an argument or its environment); with none it reads the registry anonymously, never
with a docker config of the host.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import os
import subprocess
import tempfile
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path

from tasks.core import cmd
from tasks.core.errors import CommandError, SigningError
from tasks.core.redact import redact

PROGRAM = "fma-sbomd"


@dataclass(frozen=True)
class ScanRequest:
    """One image to scan, and how to reach its registry."""

    image: str  # host/repository@sha256:... (one platform's manifest)
    out: Path  # where the SPDX JSON goes
    http: bool = False  # the registry speaks plain HTTP
    insecure: bool = False  # TLS without verifying the registry's certificate (a loopback registry)
    ca: str = ""  # a CA file for the registry's certificate, beside the system roots
    username: str = ""
    password: str = field(default="", repr=False)  # never in a repr, so never in an error or a log

    def line(self, ident: str) -> str:
        return json.dumps({"id": ident, "image": self.image, "out": str(self.out), "http": self.http,
                           "insecure": self.insecure, "ca": self.ca, "username": self.username,
                           "password": self.password}) + "\n"


class ScanFailed(Exception):
    """fma-sbomd did not make the SBOM; ``transient`` when fma-sbomd itself went away."""

    def __init__(self, reason: str, *, transient: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient


class SbomService:
    """The process's one fma-sbomd, started on first use."""

    def __init__(self, argv: tuple[str, ...] = (PROGRAM,)) -> None:
        self._argv = argv
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self._waiting: dict[str, tuple[subprocess.Popen[str], Future[str]]] = {}  # by request id
        self._ids = itertools.count(1)
        self._empty_config = ""

    def start(self) -> None:
        """Start fma-sbomd now (its license matcher builds while the caller goes on); idempotent."""
        with self._lock:
            self._running()

    def _running(self) -> subprocess.Popen[str]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        if not self._empty_config:  # no docker config of the host is ever read
            self._empty_config = tempfile.mkdtemp(prefix="fma-sbomd-")
        try:
            proc = cmd.serve(self._argv, what=f"start {PROGRAM}",
                             env={**os.environ, "DOCKER_CONFIG": self._empty_config})
        except CommandError as err:
            raise SigningError(str(err)) from err
        errors: collections.deque[str] = collections.deque(maxlen=1)  # its last line, or its panic's
        drain = threading.Thread(target=self._drain, args=(proc, errors), daemon=True, name="fma-sbomd-stderr")
        drain.start()
        threading.Thread(target=self._answers, args=(proc, errors, drain), daemon=True, name="fma-sbomd").start()
        self._proc = proc
        return proc

    @staticmethod
    def _drain(proc: subprocess.Popen[str], errors: collections.deque[str]) -> None:
        assert proc.stderr is not None
        fatal = ""  # Go's own reason when it crashes: the line a stack trace follows
        for raw in proc.stderr:
            line = raw.strip()
            if line.startswith(("panic:", "fatal error:")) and not fatal:
                fatal = redact(line)
            if line:
                errors.append(fatal or redact(line))

    def _answers(self, proc: subprocess.Popen[str], errors: collections.deque[str], drain: threading.Thread) -> None:
        """Hand each answer to the scan waiting for it; when fma-sbomd ends, fail the ones left with its last
        words (``drain`` reads them: waited for, so they are all read before they are told)."""
        assert proc.stdout is not None
        for raw in proc.stdout:
            try:
                answer = json.loads(raw)
            except json.JSONDecodeError:
                continue
            _, waiting = self._waiting.get(str(answer.get("id", "")), (None, None))
            if waiting is not None and not waiting.done():
                waiting.set_result(str(answer.get("error") or ""))
        code = proc.wait()
        cmd.served_ended(proc)
        drain.join(timeout=10)  # its stderr ends with it (a child that kept it open is not waited for longer)
        last = errors[-1] if errors else "no output"
        with self._lock:  # only this process's: a scan may be waiting on the one started after it
            left = [waiting for owner, waiting in self._waiting.values() if owner is proc]
        for waiting in left:
            if not waiting.done():
                waiting.set_exception(ScanFailed(f"{PROGRAM} exited with code {code}: {last}", transient=True))

    def scan(self, request: ScanRequest, *, timeout: float = 600) -> None:
        """Write the SBOM of ``request.image`` to ``request.out``; :class:`ScanFailed` names why not."""
        answer: Future[str] = Future()
        with self._lock:
            proc = self._running()
            ident = str(next(self._ids))
            self._waiting[ident] = (proc, answer)
            try:
                assert proc.stdin is not None
                proc.stdin.write(request.line(ident))
                proc.stdin.flush()
            except OSError as err:
                self._waiting.pop(ident, None)
                raise ScanFailed(f"{PROGRAM} is gone ({err.strerror or err})", transient=True) from err
        try:
            error = answer.result(timeout=timeout)
        except FutureTimeout as err:
            raise ScanFailed(f"{PROGRAM} took longer than {timeout:.0f}s", transient=True) from err
        finally:
            with self._lock:
                self._waiting.pop(ident, None)
        if error:
            raise ScanFailed(redact(error))

    def stop(self, *, grace: float = 5.0) -> None:
        """Close fma-sbomd's stdin (it ends once its scans are answered); kill it after ``grace`` seconds."""
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            assert proc.stdin is not None
            proc.stdin.close()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        cmd.served_ended(proc)


_service = SbomService()


def warm() -> None:
    """Start the process's fma-sbomd, so its start-up is paid while the images build."""
    _service.start()


def scan(request: ScanRequest, *, timeout: float = 600) -> None:
    """Scan with the process's fma-sbomd (started now if it is not running)."""
    _service.scan(request, timeout=timeout)


def stop() -> None:
    _service.stop()
