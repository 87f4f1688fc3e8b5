"""A real CNCF Distribution registry (Debian ``docker-registry``) on loopback."""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from devkit.processes import stop_process


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RegistryProcess:
    root: Path
    port: int
    htpasswd: Path | None = None
    tls: tuple[Path, Path] | None = None  # (cert, key)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def start(self, timeout: float = 15) -> RegistryProcess:
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "config.yml"
        lines = [
            "version: 0.1",
            "log:",
            "  level: warn",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {self.root / 'data'}",
            "  delete:",
            "    enabled: true",
            "http:",
            f"  addr: 127.0.0.1:{self.port}",
        ]
        if self.tls:
            lines += ["  tls:", f"    certificate: {self.tls[0]}", f"    key: {self.tls[1]}"]
        if self.htpasswd:
            lines += ["auth:", "  htpasswd:", "    realm: fma-release-test", f"    path: {self.htpasswd}"]
        config.write_text("\n".join(lines) + "\n")
        log = (self.root / "registry.log").open("ab")
        self.process = subprocess.Popen(
            ["docker-registry", "serve", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"docker-registry exited: see {self.root / 'registry.log'}")
            try:
                requests.get(f"{self.url}/v2/", timeout=1, verify=False)  # noqa: S501 - readiness probe of our own test registry
                return self
            except requests.exceptions.RequestException:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"docker-registry did not answer on {self.host} within {timeout}s")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=10)
        self.process = None

    def kill(self) -> None:
        """End the registry with SIGKILL, as a crash would; :meth:`start` brings it back on its data."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
        self.process = None
