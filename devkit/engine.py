"""A Docker engine of its own: a second dockerd with its own socket, data, bridge and containerd.

Used by the benchmark (a fresh engine, so images piled up by earlier runs do not slow its
builds) and by the tests that spread builds over two engines. Needs root and Debian's
``docker.io``. The daemon gets a bridge of its own: a second dockerd started with
``--bridge=none`` deletes the host's ``docker0`` and breaks the first daemon's RUN steps.
It leaves iptables alone (``--iptables=false``), so it never touches the first daemon's chains;
its containers need no network to build.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import docker

from devkit.processes import stop_process


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


def _running(pid: int) -> bool:
    """Whether ``pid`` is a process that runs (not gone, not a zombie)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


SUBNET_LOCK = Path(tempfile.gettempdir()) / "fma-engine-subnet.lock"  # machine-wide: every process's engines


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 172.29.0.0/16 that no interface of this machine uses."""
    used = [ipaddress.ip_interface(word).network for word in _ip("-4", "-o", "addr").split() if "/" in word]
    for third in range(1, 255):
        net = ipaddress.IPv4Network(f"172.29.{third}.0/24")
        if not any(net.overlaps(other) for other in used):
            return net
    raise RuntimeError("no free /24 in 172.29.0.0/16 for a second engine's bridge")


@dataclass
class EngineProcess:
    """``EngineProcess().start()``; ``.docker_host`` is its ``unix://`` address; ``.stop()`` removes it all."""

    # Unix socket paths are limited to 107 bytes: the daemon's files live in a short /tmp directory.
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="fma-engine-", dir="/tmp")))
    bridge: str = field(default_factory=lambda: f"fmae{uuid.uuid4().hex[:8]}")
    # Keep the image store in memory (a tmpfs): no disk writeback in the figures of a benchmark.
    in_memory: bool = False
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout: float = 30) -> EngineProcess:
        if shutil.which("dockerd") is None:
            raise RuntimeError("dockerd is not installed: run bash scripts/setup.sh")
        # One engine at a time picks its subnet and takes it: two started at once (tests in parallel) would
        # otherwise both find the same /24 free and put it on two bridges.
        # O_NOFOLLOW: a link planted at the lock's path in /tmp is refused, never followed as root.
        lock = os.open(SUBNET_LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            subnet = _free_subnet()
            gateway = next(subnet.hosts())
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{gateway}/{subnet.prefixlen}", "dev", self.bridge)
        finally:
            os.close(lock)  # and the lock with it
        _ip("link", "set", self.bridge, "up")
        if self.in_memory:
            (self.root / "data").mkdir()
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8g", "tmpfs", str(self.root / "data")], check=True)
        try:
            return self._spawn(timeout)
        except RuntimeError:
            self.stop()
            raise

    def kill(self) -> None:
        """End dockerd with SIGKILL, as a crash would; :meth:`restart` starts it again on the same data.

        Its containerd dies with it (dockerd starts it with a parent-death signal) but stays a zombie where
        PID 1 does not reap orphans (this VM's init does not): the next dockerd would find its PID file, take it
        for a containerd still running, and wait for its socket until it gives up. So the PID file goes once
        that containerd is dead."""
        if self.process is None:
            return
        self.process.kill()
        self.process.wait()
        self.process = None
        pid_file = self.root / "exec" / "containerd" / "containerd.pid"
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _running(pid):
            time.sleep(0.05)
        if not _running(pid):
            pid_file.unlink(missing_ok=True)

    def restart(self, timeout: float = 30) -> EngineProcess:
        """Stop dockerd (SIGTERM, as a service manager would; nothing when it was killed) and start it again
        on the same data root, socket and bridge: what a client in the middle of a build sees as the engine
        going away. When it does not come back, RuntimeError; its directory (and log) stay until :meth:`stop`."""
        if self.process is not None:
            stop_process(self.process, timeout=30)
            self.process = None
        return self._spawn(timeout)

    def _spawn(self, timeout: float) -> EngineProcess:
        namespace = self.bridge  # containerd namespaces of its own, too
        log = (self.root / "dockerd.log").open("ab")
        self.process = subprocess.Popen(
            [
                "dockerd", "--host", self.docker_host, "--data-root", str(self.root / "data"),
                "--exec-root", str(self.root / "exec"), "--pidfile", str(self.root / "dockerd.pid"),
                "--bridge", self.bridge, "--iptables=false", "--ip-masq=false",
                "--containerd-namespace", namespace, "--containerd-plugins-namespace", f"{namespace}p",
            ],
            stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                raise RuntimeError(f"dockerd exited early: {self._last_log_line()}; see {self.root / 'dockerd.log'}")
            try:
                client = docker.APIClient(base_url=self.docker_host, version="auto", timeout=5)
                client.ping()
                client.close()
                return self
            except Exception:  # not listening yet
                time.sleep(0.1)
        stop_process(self.process, timeout=30)
        self.process = None
        raise RuntimeError(f"dockerd did not answer within {timeout:.0f} s; see {self.root / 'dockerd.log'}")

    def _last_log_line(self) -> str:
        try:
            lines = (self.root / "dockerd.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return lines[-1][-300:] if lines else "no log"

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=30)
            self.process = None
        subprocess.run(["ip", "link", "delete", self.bridge], capture_output=True, check=False)
        if self.in_memory:
            subprocess.run(["umount", "--lazy", str(self.root / "data")], capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)
