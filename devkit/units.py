"""A stand-in service manager for machines where systemd is not PID 1 (containers, this CI).

It runs one rendered unit of deploy/systemd the way systemd would for the parts those units use:
``Environment=`` then ``EnvironmentFile=`` (a leading ``-``: optional; later assignments win),
``WorkingDirectory=``, ``ExecStart=`` with ``${VAR}`` replaced inside a word and a lone ``$VAR``
split on whitespace, and ``Restart=on-failure`` / ``always`` after ``RestartSec=``. Anything else in
``[Service]`` that would change how the process runs is refused, so a unit that grows a setting this
stand-in does not honour fails its test instead of passing on a different process.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

# [Service] settings that only describe or bound the process's life: the stand-in may ignore them.
_IGNORED = {"Type", "TimeoutStopSec", "KillMode"}
_HONOURED = {"Environment", "EnvironmentFile", "WorkingDirectory", "ExecStart", "Restart", "RestartSec"}


@dataclass(frozen=True)
class Unit:
    exec_start: str
    environment: tuple[tuple[str, str], ...] = ()
    environment_files: tuple[str, ...] = ()
    working_directory: str | None = None
    restart: str = "no"
    restart_sec: float = 0.1


def parse_unit(text: str) -> Unit:
    """The [Service] section of a unit file (continuation lines and comments as systemd reads them)."""
    section = ""
    values: dict[str, list[str]] = {}
    for raw in text.replace("\\\n", " ").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        if section != "Service":
            continue
        key, _, value = line.partition("=")
        if key not in _HONOURED | _IGNORED:
            raise ValueError(f"the stand-in service manager does not honour {key}=: run the unit under systemd")
        values.setdefault(key, []).append(value)
    env = []
    for assignment in values.get("Environment", []):
        for word in shlex.split(assignment):
            name, _, val = word.partition("=")
            env.append((name, val))
    (exec_start,) = values["ExecStart"]
    return Unit(
        exec_start=exec_start,
        environment=tuple(env),
        environment_files=tuple(values.get("EnvironmentFile", [])),
        working_directory=values["WorkingDirectory"][-1] if values.get("WorkingDirectory") else None,
        restart=(values.get("Restart") or ["no"])[-1],
        restart_sec=float((values.get("RestartSec") or ["0.1"])[-1]),
    )


def unit_environment(unit: Unit, base: dict[str, str]) -> dict[str, str]:
    env = dict(base)
    env.update(unit.environment)
    for spec in unit.environment_files:
        optional = spec.startswith("-")
        path = Path(spec.removeprefix("-"))
        if not path.exists():
            if optional:
                continue
            raise FileNotFoundError(path)
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if line and not line.startswith(("#", ";")) and "=" in line:
                name, _, val = line.partition("=")
                env[name.strip()] = val.strip().strip('"')
    return env


def command_line(unit: Unit, env: dict[str, str]) -> list[str]:
    argv: list[str] = []
    for word in shlex.split(unit.exec_start):
        lone = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if lone:
            argv.extend(env.get(lone.group(1), "").split())
            continue
        argv.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""), word))
    return argv


@dataclass
class Supervised:
    """A unit's process, started again as its Restart= says when it ends."""

    unit: Unit
    log: Path
    base_env: dict[str, str]
    starts: list[int] = field(default_factory=list)  # the PID of each start
    _proc: subprocess.Popen[bytes] | None = None
    _stopping: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Supervised:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = unit_environment(self.unit, self.base_env)
        with self.log.open("ab") as out:
            proc = subprocess.Popen(command_line(self.unit, env), env=env, cwd=self.unit.working_directory,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.starts.append(proc.pid)
        return proc

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._proc = self._spawn()
            code = self._proc.wait()
            if self._stopping.is_set():
                return
            if self.unit.restart == "always" or (self.unit.restart == "on-failure" and code != 0):
                time.sleep(self.unit.restart_sec)
                continue
            return

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc and self._proc.poll() is None else None

    def kill(self) -> None:
        """SIGKILL the current process, as a crash would."""
        if self._proc and self._proc.poll() is None:
            os.killpg(self._proc.pid, 9)

    def stop(self) -> None:
        """SIGTERM to the unit's processes (its process group, as systemd's control group), then SIGKILL."""
        self._stopping.set()
        proc = self._proc
        if proc and proc.poll() is None:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
        if self._thread:
            self._thread.join(timeout=30)
