"""Registry credentials, bound to the hosts they belong to, and what a registry client needs to know of them.

:class:`RegistryCredentials` are a user and password and the registry hosts they are for (as a
docker config binds each entry to its host); :class:`RegistryAccess` is what a client asks for (the
run's settings meet it): the credentials for one host, and the CA bundle of TLS registries. A host
the credentials do not name gets none.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydantic import SecretStr


def normal_host(host: str) -> str:
    """A registry host as credentials name it: lower case, Docker Hub's aliases as ``docker.io``."""
    host = host.strip().lower().removeprefix("https://").removeprefix("http://").rstrip("/")
    return "docker.io" if host in ("index.docker.io", "registry-1.docker.io", "registry.hub.docker.com") else host


@dataclass(frozen=True)
class RegistryCredentials:
    username: str
    password: SecretStr
    hosts: tuple[str, ...] = ()  # the registry hosts (host[:port]) these credentials are for

    def bound_to(self, host: str) -> bool:
        """Whether these credentials belong to ``host``."""
        return normal_host(host) in {normal_host(h) for h in self.hosts}

    def docker_auth(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password.get_secret_value()}

    def docker_config(self, directory: Path, *hosts: str) -> Path:
        """Write a DOCKER_CONFIG directory whose config.json holds these credentials for ``hosts`` alone,
        those of them they are bound to (for ko, cosign, syft, the docker CLI); ``directory`` should
        live only as long as the command."""
        secret = f"{self.username}:{self.password.get_secret_value()}"
        auth = base64.b64encode(secret.encode()).decode()
        auths = {("https://index.docker.io/v1/" if normal_host(host) == "docker.io" else host): {"auth": auth}
                 for host in hosts if self.bound_to(host)}
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        config = directory / "config.json"
        config.touch(mode=0o600)
        config.write_text(json.dumps({"auths": auths}))
        return directory


class RegistryAccess(Protocol):
    """What a registry client reads of the run's settings."""

    @property
    def registry_ca_file(self) -> str: ...

    def credentials(self, host: str) -> RegistryCredentials | None:
        """The credentials bound to ``host``, ``None`` when none are."""
        ...


@dataclass(frozen=True)
class Anonymous:
    """No credentials, the system's CA roots: a client for a public read."""

    registry_ca_file: str = ""

    def credentials(self, host: str) -> RegistryCredentials | None:
        return None


ANONYMOUS = Anonymous()
