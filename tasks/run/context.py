"""One release request, one run: what was asked, and the run built from it.

:class:`ReleaseRequest` is frozen: the tag and its version, the source, where things go, the
config, and how pushes retry (its fields are the options of tasks/run/options.py).
:class:`RunServices` are the run's settings (the environment, read once) and its engine and
registry clients with their caches. :class:`RunFacts` are what the preflight learnt (the tagged
commit, the record key, the signing key). :class:`RunContext` is built once from all three, and
the workspace, and is passed whole to every step; nothing fills it in later. It is a plain
object, passed to tasks as it is (Prefect does not walk into it).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.core import tools
from tasks.core.errors import ConfigError, RegistryError
from tasks.core.project import project_version
from tasks.core.redact import strip_userinfo
from tasks.core.sandbox import BuildUser, build_user
from tasks.oci.references import Reference, chart_remote
from tasks.run.config import DEFAULT_CONFIG, ReleaseConfig, load_config
from tasks.run.facts import ReleaseFacts
from tasks.run.inputs import check_github_repo, check_source, workspace_name, workspace_root
from tasks.run.options import DEFAULT_REGISTRY
from tasks.run.retry import RetryPolicy
from tasks.run.settings import Settings
from tasks.run.tags import ReleaseVersion, parse_tag

if TYPE_CHECKING:
    from tasks.oci.registry import Registries
    from tasks.run.engines import Engines
    from tasks.run.facts import Signer


def stage_registry(given: object, configured: str | None, registry: str) -> str:
    """The stage of a run (pure): ``--stage``, else the config's ``stage:``, else none (``""``); one line
    when it names no registry host or is the registry the release goes to."""
    stage = str(given or configured or "").strip().rstrip("/")
    if not stage:
        return ""
    if stage.startswith("oci://"):
        raise ConfigError(f"stage {stage!r} is an image registry: write it without oci://")
    try:
        Reference.parse(f"{stage}/image")
    except RegistryError as err:
        raise ConfigError(f"stage {stage!r} names no registry host: write it as host[:port]/path, "
                          "e.g. registry.local/fma-stage") from err
    if stage == registry.rstrip("/"):
        raise ConfigError(f"the stage and the registry are both {stage}: stage to another registry (or path), "
                          "or leave --stage out")
    return stage


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
    stage: str = ""  # --stage (or the config's stage:): built, pushed, signed and proven there, then promoted
    github_repo: str = ""  # --github-repo: its GitHub release of the tag, a draft until the release is public

    def at_stage(self) -> ReleaseRequest:
        """This request as its stage part: the release to the stage registry and its charts there."""
        return replace(self, registry=self.stage, chart_remote=chart_remote(self.stage), stage="", github_repo="")

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
        config = load_config(config_path)
        return cls(
            tag=tag,
            source=check_source(str(parameters["source"])),
            registry=registry,
            chart_remote=chart_remote(registry, parameters.get("chart_registry")),
            config=config,
            config_path=config_path,
            dry_run=bool(parameters.get("dry_run", False)),
            force=bool(parameters.get("force", False)),
            workdir=workdir,
            retry=RetryPolicy(attempts=attempts, base_delay=delay, max_delay=max(30.0, delay)),
            no_sign=not bool(parameters.get("sign", True)),
            stage=stage_registry(parameters.get("stage"), config.stage, registry),
            github_repo=check_github_repo(parameters.get("github_repo")),
        )


@dataclass(frozen=True)
class RunServices:
    """The run's settings (the environment, read once) and the clients it owns, with their caches."""

    settings: Settings
    engines: Engines
    registries: Registries

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> RunServices:
        from tasks.oci.registry import Registries  # the clients' libraries load when a run starts, not with the CLI
        from tasks.run.engines import Engines

        settings = settings if settings is not None else Settings.from_env()
        return cls(settings=settings, engines=Engines(settings.docker_host), registries=Registries(settings))


@dataclass(frozen=True)
class RunFacts:
    """What the preflight learnt before anything was built, returned as a value (tasks/control/preflight.py)."""

    revision: str = ""  # the tagged commit
    record_key: str = ""  # the release record's key ("" in a dry run)
    signer: Signer | None = None  # the opened signing key, when the run signs
    unsigned_note: str = ""  # why the run does not sign ("" when it does)


@dataclass(frozen=True)
class RunContext:
    """A run of a request, built once after the preflight and passed whole to every step.

    Nothing is set on it later: what a step learns comes back from that step as a value. Sent to
    another process (a Dask worker) its clients start with empty caches.
    """

    request: ReleaseRequest
    services: RunServices = field(default_factory=RunServices.from_settings)
    facts: RunFacts = field(default_factory=RunFacts)
    provenance: ReleaseFacts | None = None  # the run's part of every provenance statement, when it signs
    # The flow run and its page: what its builds record as the run that built them (a later signing's
    # provenance names it)
    run_id: str = ""
    run_url: str = ""
    # "": <state dir>/workspaces/<the request's workdir>, else a new one there of the run's own
    workspace: Path = field(default=Path())

    def __post_init__(self) -> None:
        if self.workspace == Path():
            name = self.request.workdir or f"{self.request.tag}-{uuid.uuid4().hex[:8]}"
            object.__setattr__(self, "workspace", workspace_root(self.services.settings.state_dir) / name)

    def __repr__(self) -> str:
        return f"RunContext({self.request.tag!r}, revision={self.facts.revision[:12]!r})"

    @property
    def settings(self) -> Settings:
        return self.services.settings

    @property
    def engines(self) -> Engines:
        return self.services.engines

    @property
    def registries(self) -> Registries:
        return self.services.registries

    @property
    def signer(self) -> Signer | None:
        return self.facts.signer

    @property
    def signs(self) -> bool:
        """Whether this run signs what it publishes (a key is open, and it publishes)."""
        return self.facts.signer is not None and not self.request.dry_run

    @property
    def own_workspace(self) -> bool:
        """A temporary workspace of the run's own, removed after a successful run."""
        return self.request.workdir is None

    def open_workspace(self) -> Path:
        """The run's workspace directory, made on first use (its root and itself readable by root only)."""
        self.workspace.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.workspace.mkdir(mode=0o700, exist_ok=True)
        return self.workspace

    def build_user(self) -> BuildUser | None:
        """Who the source's builds run as (tasks/core/sandbox.py); ``None`` when this process is not root."""
        return build_user(self.settings.build_user)


def provenance_facts(request: ReleaseRequest, revision: str, *, run_id: str, run_url: str) -> ReleaseFacts:
    """The run's part of every provenance statement: what was asked, the tagged commit, the run
    that built it (its UI page is the builder's id) and the versions of the tools that made it."""
    return ReleaseFacts(
        tag=request.tag, source=strip_userinfo(request.source), registry=request.registry,
        config_path=str(request.config_path),
        config_digest=hashlib.sha256(request.config_path.read_bytes()).hexdigest(),
        revision=revision, run_id=run_id, run_url=run_url,
        versions=(("fma-release", project_version()),
                  *((name, tool.version) for name, tool in sorted(tools.pinned_tools().items()))),
    )
