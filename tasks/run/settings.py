"""The settings of a run: the environment read once, in one place.

A run reads its environment when it starts (:meth:`Settings.from_env`) and hands the object to
every step; nothing deeper in the call paths reads ``os.environ``. Tests build one with
:meth:`Settings.from_env` over a mapping of their own, or with :func:`dataclasses.replace`.

Secrets stay :class:`~pydantic.SecretStr` and are registered for masking as they are read.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from pydantic import SecretStr

from tasks.core.errors import ConfigError, RegistryError, ReleaseError
from tasks.core.redact import register
from tasks.core.sandbox import DEFAULT_BUILD_USER
from tasks.oci.auth import RegistryCredentials

LOCAL_ENGINE = "unix:///var/run/docker.sock"
DEFAULT_GITHUB_API = "https://api.github.com"


@dataclass(frozen=True)
class Settings:
    """What the environment says, as of the run's start."""

    docker_host: str = LOCAL_ENGINE  # DOCKER_HOST: the default engine
    registry_username: str = ""  # FMA_REGISTRY_USERNAME
    registry_password: SecretStr = field(default_factory=lambda: SecretStr(""))  # FMA_REGISTRY_PASSWORD
    registry_password_block: str = ""  # FMA_REGISTRY_PASSWORD_BLOCK: a Prefect Secret block's name
    registry_hosts: tuple[str, ...] = ()  # FMA_REGISTRY_HOSTS: the registries the credentials belong to
    build_user: str = DEFAULT_BUILD_USER  # FMA_BUILD_USER: who builds run as (when the release runs as root)
    github_api_url: str = DEFAULT_GITHUB_API  # GITHUB_API_URL: the one GitHub API the token is sent to
    registry_ca_file: str = ""  # FMA_REGISTRY_CA_FILE: CA bundle of TLS registries
    push_stall_seconds: float = 300.0  # FMA_PUSH_STALL_SECONDS: a push silent this long has hung
    state_dir: Path = Path.home() / ".prefect" / "fma-release"  # FMA_STATE_DIR: release records
    dask_address: str = ""  # FMA_DASK_ADDRESS
    form_fields: str = ""  # FMA_FORM_FIELDS: options a deployment's runs may change besides the form's own
    prefect_api_url: str = ""  # PREFECT_API_URL
    signing_key: str = ""  # FMA_SIGNING_KEY: a cosign private key file
    signing_key_block: str = ""  # FMA_SIGNING_KEY_BLOCK: a Prefect Secret block holding the key's PEM text
    signing_password: SecretStr = field(default_factory=lambda: SecretStr(""))  # FMA_SIGNING_PASSWORD
    # The tag slot's clock (tasks/control/slots.py). Tests shorten it; a holder refreshes its record every
    # heartbeat, so the stale bound must exceed the heartbeat by more than a wait step.
    slot_stale_seconds: float = 45.0  # FMA_SLOT_STALE_SECONDS: a holder silent this long is gone
    slot_heartbeat_seconds: float = 10.0  # FMA_SLOT_HEARTBEAT_SECONDS: how often the holder refreshes its record
    slot_wait_step_seconds: float = 3.0  # FMA_SLOT_WAIT_STEP_SECONDS: how often a waiting run looks at the holder
    # FMA_SLOT_NAMESPACE: runs of one tag wait for each other only within a namespace (default: one per Prefect
    # server); deployments that share a server but release to different places can keep apart.
    slot_namespace: str = ""
    # FMA_PULSE_SECONDS: a long step (a build, the Go modules' download) is told on the console at least this
    # often (tasks/core/pulse.py); at most 15, half the console's 30 s bound. Tests shorten it.
    pulse_seconds: float = 15.0
    # FMA_HEAD_START_SECONDS: how long the build measured to take longest starts ahead of the others
    # (tasks/run/plan.py, head_start); 0 starts every build at once.
    head_start_seconds: float = 0.5
    # A Secret block is read at most once per run, when credentials are first asked for.
    _resolved: dict[str, RegistryCredentials | str | None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        home = env.get("PREFECT_HOME") or str(Path.home() / ".prefect")
        password = env.get("FMA_REGISTRY_PASSWORD", "")
        register(password)
        signing_password = env.get("FMA_SIGNING_PASSWORD", "")
        register(signing_password)
        stale = _seconds(env, "FMA_SLOT_STALE_SECONDS", 45.0)
        heartbeat = _seconds(env, "FMA_SLOT_HEARTBEAT_SECONDS", 10.0)
        pulse = _seconds(env, "FMA_PULSE_SECONDS", 15.0)
        if pulse > 15.0:
            raise ConfigError(f"FMA_PULSE_SECONDS ({pulse:g}) must be at most 15: the console is never silent for more "
                              "than 30 s while a step runs")
        if heartbeat >= stale:
            raise ConfigError(f"FMA_SLOT_HEARTBEAT_SECONDS ({heartbeat:g}) must be shorter than FMA_SLOT_STALE_SECONDS "
                              f"({stale:g}), or a live holder would be judged gone")
        return cls(
            docker_host=env.get("DOCKER_HOST") or LOCAL_ENGINE,
            registry_username=env.get("FMA_REGISTRY_USERNAME", ""),
            registry_password=SecretStr(password),
            registry_password_block=env.get("FMA_REGISTRY_PASSWORD_BLOCK", ""),
            registry_hosts=tuple(h.strip() for h in env.get("FMA_REGISTRY_HOSTS", "").split(",") if h.strip()),
            build_user=env.get("FMA_BUILD_USER") or DEFAULT_BUILD_USER,
            github_api_url=(env.get("GITHUB_API_URL") or DEFAULT_GITHUB_API).rstrip("/"),
            registry_ca_file=env.get("FMA_REGISTRY_CA_FILE", ""),
            push_stall_seconds=float(env.get("FMA_PUSH_STALL_SECONDS") or 300),
            state_dir=Path(env.get("FMA_STATE_DIR") or Path(home) / "fma-release"),
            dask_address=env.get("FMA_DASK_ADDRESS", ""),
            form_fields=env.get("FMA_FORM_FIELDS", ""),
            prefect_api_url=env.get("PREFECT_API_URL", ""),
            signing_key=env.get("FMA_SIGNING_KEY", ""),
            signing_key_block=env.get("FMA_SIGNING_KEY_BLOCK", ""),
            signing_password=SecretStr(signing_password),
            slot_stale_seconds=stale,
            slot_heartbeat_seconds=heartbeat,
            slot_wait_step_seconds=_seconds(env, "FMA_SLOT_WAIT_STEP_SECONDS", 3.0),
            slot_namespace=env.get("FMA_SLOT_NAMESPACE", ""),
            pulse_seconds=pulse,
            head_start_seconds=_seconds(env, "FMA_HEAD_START_SECONDS", 0.5, zero=True),
        )

    def credentials(self, host: str) -> RegistryCredentials | None:
        """The registry credentials when they are bound to ``host`` (FMA_REGISTRY_HOSTS), else ``None``."""
        found = self.all_credentials()
        return found if found is not None and found.bound_to(host) else None

    def all_credentials(self) -> RegistryCredentials | None:
        """The registry credentials with the hosts they are bound to, or ``None`` when there are none."""
        with self._lock:
            if "creds" not in self._resolved:
                self._resolved["creds"] = self._credentials()
            found = self._resolved["creds"]
            return found if isinstance(found, RegistryCredentials) else None

    @property
    def signing_configured(self) -> bool:
        """Whether a signing key is named (FMA_SIGNING_KEY or FMA_SIGNING_KEY_BLOCK)."""
        return bool(self.signing_key or self.signing_key_block)

    def signing_key_pem(self) -> str:
        """The PEM text of the Secret block FMA_SIGNING_KEY_BLOCK names, registered for masking."""
        with self._lock:
            if "signing_pem" not in self._resolved:
                pem = read_secret_block(self.signing_key_block, "FMA_SIGNING_KEY_BLOCK")
                register(pem)
                for line in pem.splitlines():
                    if not line.startswith("-----"):
                        register(line)
                self._resolved["signing_pem"] = pem
            return str(self._resolved["signing_pem"])

    def _credentials(self) -> RegistryCredentials | None:
        password = self.registry_password.get_secret_value()
        if self.registry_password_block and not password:
            password = read_secret_block(self.registry_password_block, "FMA_REGISTRY_PASSWORD_BLOCK")
        if not self.registry_username and not password:
            return None
        if not self.registry_username or not password:
            raise RegistryError(
                "registry credentials are incomplete: set both FMA_REGISTRY_USERNAME and "
                "FMA_REGISTRY_PASSWORD (or FMA_REGISTRY_PASSWORD_BLOCK)"
            )
        if not self.registry_hosts:
            raise RegistryError(
                "registry credentials are set but bound to no registry: set FMA_REGISTRY_HOSTS to the "
                "registry host(s) they belong to (e.g. ghcr.io); no other host is ever sent them"
            )
        register(password)
        return RegistryCredentials(username=self.registry_username, password=SecretStr(password),
                                   hosts=self.registry_hosts)

    def __getstate__(self) -> dict[str, object]:
        # Sent to another process (a Dask worker): the lock stays here, the secrets are masked there too.
        state = dict(self.__dict__)
        state.pop("_lock", None)
        state["_resolved"] = {}
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        for key, value in state.items():
            object.__setattr__(self, key, value)
        object.__setattr__(self, "_lock", threading.Lock())
        register(self.registry_password.get_secret_value())
        register(self.signing_password.get_secret_value())


def _seconds(env: Mapping[str, str], name: str, default: float, *, zero: bool = False) -> float:
    """A positive number of seconds from ``env[name]`` (or 0, when ``zero`` allows it), or ``default`` when
    unset or empty."""
    text = env.get(name, "")
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")  # neither positive nor 0
    if not (value > 0 or (zero and value == 0)):
        kind = "a positive number of seconds or 0" if zero else "a positive number of seconds"
        raise ConfigError(f"{name}={text!r} is not {kind}: set it to one (e.g. {default:g}) "
                          "or unset it")
    return value


def read_secret_block(name: str, variable: str, error: type[ReleaseError] = RegistryError) -> str:
    """The value of the Prefect Secret block ``name`` (named by the environment variable ``variable``),
    registered for masking; ``error`` (one line) when it cannot be loaded."""
    from prefect.blocks.system import Secret

    try:
        value = cast(Secret[str], Secret.load(name, _sync=True)).get()  # type: ignore[call-arg]  # sync in any thread
    except (ValueError, RuntimeError) as err:
        raise error(
            f"cannot load the Prefect Secret block {name!r}: create it (prefect block create secret) "
            f"or unset {variable}"
        ) from err
    register(str(value))
    return str(value)
