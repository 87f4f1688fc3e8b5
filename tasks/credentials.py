"""Registry credentials, read from the environment where the task runs.

They are never flow or task parameters (Prefect stores those), never on a
command line. ``FMA_REGISTRY_USERNAME`` with ``FMA_REGISTRY_PASSWORD``, or with
``FMA_REGISTRY_PASSWORD_BLOCK`` naming a Prefect Secret block.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import cast

from pydantic import SecretStr

from tasks.errors import RegistryError
from tasks.redact import register


@dataclass(frozen=True)
class RegistryCredentials:
    username: str
    password: SecretStr

    def docker_auth(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password.get_secret_value()}


def registry_credentials() -> RegistryCredentials | None:
    """The configured credentials, or ``None`` for an anonymous registry."""
    username = os.environ.get("FMA_REGISTRY_USERNAME", "")
    password = os.environ.get("FMA_REGISTRY_PASSWORD", "")
    block = os.environ.get("FMA_REGISTRY_PASSWORD_BLOCK", "")
    if block and not password:
        password = _secret_block(block)
    if not username and not password:
        return None
    if not username or not password:
        raise RegistryError(
            "registry credentials are incomplete: set both FMA_REGISTRY_USERNAME and "
            "FMA_REGISTRY_PASSWORD (or FMA_REGISTRY_PASSWORD_BLOCK)"
        )
    register(password)
    return RegistryCredentials(username=username, password=SecretStr(password))


def _secret_block(name: str) -> str:
    from prefect.blocks.system import Secret

    try:
        value = cast(Secret[str], Secret.load(name, _sync=True)).get()  # type: ignore[call-arg]  # sync in any thread
    except (ValueError, RuntimeError) as err:
        raise RegistryError(
            f"cannot load the Prefect Secret block {name!r}: create it (prefect block create secret) "
            "or unset FMA_REGISTRY_PASSWORD_BLOCK"
        ) from err
    return str(value)
