"""One release request, one run: what was asked, and what the run holds while it goes.

The flow builds both once and passes them whole. :class:`ReleaseRequest` is frozen: the tag and
its version, the source, where things go, the config, and how pushes retry. :class:`RunContext`
adds the run's settings (the environment, read once), its engines and registry clients with
their caches, and what the run learns: the tagged commit, the record key, the workspace. It is a
plain object, passed to tasks as it is (Prefect does not walk into it); sent to another process
(a Dask worker) it takes the settings along and starts its caches empty.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.core.errors import ConfigError
from tasks.core.sandbox import BuildUser, build_user
from tasks.oci.references import chart_remote
from tasks.oci.registry import Registries
from tasks.run.config import DEFAULT_CONFIG, DEFAULT_REGISTRY, ReleaseConfig, load_config
from tasks.run.engines import Engines
from tasks.run.inputs import check_source, workspace_name, workspace_root
from tasks.run.retry import RetryPolicy
from tasks.run.settings import Settings
from tasks.run.tags import ReleaseVersion, parse_tag

if TYPE_CHECKING:
    from tasks.run.facts import ReleaseFacts, Signer


@dataclass(frozen=True)
class ReleaseRequest:
    """What a run was asked to release, validated."""

    tag: str
    source: str
    registry: str = DEFAULT_REGISTRY
    chart_remote: str = ""  # oci://<registry>/charts unless given
    config: ReleaseConfig = field(default_factory=ReleaseConfig)
    config_path: Path = DEFAULT_CONFIG
    dry_run: bool = False
    force: bool = False
    workdir: str | None = None  # a workspace name under <state dir>/workspaces; None: a new one of the run's own
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    no_sign: bool = False  # --no-sign: publish unsigned even with a key configured

    @property
    def version(self) -> ReleaseVersion:
        return parse_tag(self.tag)

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any]) -> ReleaseRequest:
        """The request the release flow's parameters (also the UI form's fields) describe.

        Bad input raises a one-line :class:`~tasks.core.errors.ReleaseError` before anything runs.
        """
        tag = str(parameters["tag"])
        parse_tag(tag)
        config_path = Path(parameters.get("config") or DEFAULT_CONFIG)
        registry = str(parameters.get("registry") or DEFAULT_REGISTRY)
        attempts = int(parameters.get("push_attempts", 5))
        delay = float(parameters.get("retry_base_delay", 2.0))
        if attempts < 1:
            raise ConfigError("push attempts must be at least 1 (--push-attempts)")
        if delay < 0:
            raise ConfigError("the retry delay must not be negative (--retry-delay)")
        workdir = workspace_name(parameters.get("workdir"))
        return cls(
            tag=tag,
            source=check_source(str(parameters["source"])),
            registry=registry,
            chart_remote=chart_remote(registry, parameters.get("chart_registry")),
            config=load_config(config_path),
            config_path=config_path,
            dry_run=bool(parameters.get("dry_run", False)),
            force=bool(parameters.get("force", False)),
            workdir=workdir,
            retry=RetryPolicy(attempts=attempts, base_delay=delay, max_delay=max(30.0, delay)),
            no_sign=not bool(parameters.get("sign", True)),
        )


class RunContext:
    """A run of a request: its settings, clients and caches, and the state it gathers."""

    def __init__(self, request: ReleaseRequest, settings: Settings | None = None) -> None:
        self.request = request
        self.settings = settings if settings is not None else Settings.from_env()
        self.engines = Engines(self.settings.docker_host)
        self.registries = Registries(self.settings)
        self.revision = ""  # the tagged commit, once the preflight has read it
        self.record_key = ""  # the release record's key ("" in a dry run)
        self.workspace: Path | None = None
        self.own_workspace = False  # a temporary workspace, removed after a successful run
        self.signer: Signer | None = None  # the signing key, once the preflight has opened it
        self.unsigned_note = ""  # why the run does not sign ("" when it does)
        self.release_facts: ReleaseFacts | None = None  # the run's part of every provenance statement
        self._build_user: tuple[BuildUser | None] | None = None

    def __repr__(self) -> str:
        return f"RunContext({self.request.tag!r}, revision={self.revision[:12]!r})"

    def open_workspace(self) -> Path:
        """The run's workspace under the release's workspace root: the one named, or a new one of its own."""
        if self.workspace is None:
            name = self.request.workdir
            self.own_workspace = name is None
            root = workspace_root(self.settings.state_dir)
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.workspace = root / (name or f"{self.request.tag}-{uuid.uuid4().hex[:8]}")
            self.workspace.mkdir(mode=0o700, exist_ok=True)
        return self.workspace

    def build_user(self) -> BuildUser | None:
        """Who the source's builds run as (tasks/core/sandbox.py); ``None`` when this process is not root."""
        if self._build_user is None:
            self._build_user = (build_user(self.settings.build_user),)
        return self._build_user[0]
