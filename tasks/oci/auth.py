"""Registry credentials, and what a registry client needs to know of them.

:class:`RegistryCredentials` are a user and password; :class:`RegistryAccess` is what a client asks
for (the run's settings meet it): the credentials, and the CA bundle of TLS registries.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydantic import SecretStr


@dataclass(frozen=True)
class RegistryCredentials:
    username: str
    password: SecretStr

    def docker_auth(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password.get_secret_value()}

    def docker_config(self, directory: Path, host: str) -> Path:
        """Write a DOCKER_CONFIG directory whose config.json holds these credentials for ``host`` alone
        (for a Go tool: ko, cosign, syft); ``directory`` should live only as long as the command."""
        key = "https://index.docker.io/v1/" if host == "docker.io" else host
        secret = f"{self.username}:{self.password.get_secret_value()}"
        auth = base64.b64encode(secret.encode()).decode()
        config = directory / "config.json"
        config.write_text(json.dumps({"auths": {key: {"auth": auth}}}))
        config.chmod(0o600)
        return directory


class RegistryAccess(Protocol):
    """What a registry client reads of the run's settings."""

    @property
    def registry_ca_file(self) -> str: ...

    def credentials(self) -> RegistryCredentials | None: ...


@dataclass(frozen=True)
class Anonymous:
    """No credentials, the system's CA roots: a client for a public read."""

    registry_ca_file: str = ""

    def credentials(self) -> RegistryCredentials | None:
        return None


ANONYMOUS = Anonymous()
