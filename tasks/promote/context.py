"""One promotion request, and the run built from it.

:class:`PromotionRequest` is frozen and validated once (:meth:`PromotionRequest.from_parameters`, which
the CLI calls before Prefect starts): the tag, where the release is and where it goes, the release
config that names its images, the charts, and how copies retry. :class:`PromotionFacts` is what the
preflight read (tasks/promote/preflight.py); :class:`PromotionRun` is built once from both and passed
whole to every step.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.core.errors import ConfigError, RegistryError
from tasks.oci.references import Reference, chart_remote
from tasks.oci.registry import Registries
from tasks.run.config import DEFAULT_CONFIG, ReleaseConfig, load_config
from tasks.run.facts import Signer
from tasks.run.inputs import workspace_root
from tasks.run.retry import RetryPolicy
from tasks.run.settings import Settings
from tasks.run.tags import ReleaseVersion, parse_tag

_CHART_NAME = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*")


def _registry(value: str, flag: str) -> str:
    """A registry path that names its host (``host[:port]/path``), without a trailing slash."""
    registry = value.strip().rstrip("/")
    try:
        Reference.parse(f"{registry}/image")
    except RegistryError as err:
        raise ConfigError(f"{flag} {value!r} names no registry host: write it as host[:port]/path, "
                          "e.g. ghcr.io/org/fma") from err
    if registry.startswith("oci://"):
        raise ConfigError(f"{flag} {value!r} is an image registry: write it without oci://")
    return registry


@dataclass(frozen=True)
class PromotionRequest:
    """What a promotion was asked to do, validated."""

    tag: str
    from_registry: str
    to_registry: str
    chart_from: str = ""  # oci://<from>/charts unless given
    chart_to: str = ""  # oci://<to>/charts unless given
    config: ReleaseConfig = field(default_factory=ReleaseConfig)
    config_path: Path = DEFAULT_CONFIG
    charts: tuple[str, ...] = ()  # the charts to promote; () = every chart at the source with the version
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    @property
    def version(self) -> ReleaseVersion:
        return parse_tag(self.tag)

    @property
    def same_host(self) -> bool:
        """Whether the images stay within one registry host (their blobs are mounted, not sent)."""
        return Reference.parse(f"{self.from_registry}/x").host == Reference.parse(f"{self.to_registry}/x").host

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any]) -> PromotionRequest:
        """The request the promote-release flow's parameters describe; a one-line
        :class:`~tasks.core.errors.ReleaseError` for bad input, before anything runs."""
        tag = str(parameters["tag"])
        parse_tag(tag)
        source = _registry(str(parameters["from_registry"]), "--from")
        target = _registry(str(parameters["to_registry"]), "--to")
        chart_from = chart_remote(source, parameters.get("chart_registry_from"))
        chart_to = chart_remote(target, parameters.get("chart_registry_to"))
        if source == target and chart_from == chart_to:
            raise ConfigError(f"--from and --to are both {source}: name another registry (or path) to promote to")
        if source == target or chart_from == chart_to:
            raise ConfigError("the images or the charts would be copied onto themselves: give --to (and "
                              "--chart-registry-to) a place of their own")
        charts = tuple(dict.fromkeys(str(c).strip() for c in parameters.get("charts") or ()))
        bad = [c for c in charts if not _CHART_NAME.fullmatch(c)]
        if bad:
            raise ConfigError(f"--chart {bad[0]!r} is not a chart name: give the name a chart has in its Chart.yaml, "
                              "e.g. fma-controllers")
        attempts = int(parameters.get("push_attempts", 5))
        delay = float(parameters.get("retry_base_delay", 2.0))
        if attempts < 1:
            raise ConfigError("push attempts must be at least 1 (--push-attempts)")
        if delay < 0:
            raise ConfigError("the retry delay must not be negative (--retry-delay)")
        config_path = Path(parameters.get("config") or DEFAULT_CONFIG)
        return cls(
            tag=tag, from_registry=source, to_registry=target, chart_from=chart_from, chart_to=chart_to,
            config=load_config(config_path), config_path=config_path, charts=charts,
            retry=RetryPolicy(attempts=attempts, base_delay=delay, max_delay=max(30.0, delay)),
        )


@dataclass(frozen=True)
class PromotionFacts:
    """What the preflight read at the source, and the key the promotion signs with."""

    images: tuple[tuple[str, str], ...] = ()  # (image name, the digest its tag points at at the source)
    charts: tuple[tuple[str, str], ...] = ()  # (chart name, the digest of its version at the source)
    signed: bool = False  # the release at the source is signed: its promotion is too
    signer: Signer | None = None  # the opened key, when it is
    revision: str = ""  # the source revision the images' labels name ("" when they name none)
    unsigned_note: str = ""  # why the promotion does not sign ("" when it does)


@dataclass(frozen=True)
class PromotionRun:
    """A promotion of a request, built once after the preflight and passed whole to every step."""

    request: PromotionRequest
    settings: Settings
    registries: Registries
    facts: PromotionFacts = field(default_factory=PromotionFacts)
    workspace: Path = field(default=Path())  # a directory of the run's own under <state dir>/workspaces

    def __post_init__(self) -> None:
        if self.workspace == Path():
            name = f"promote-{self.request.tag}-{uuid.uuid4().hex[:8]}"
            object.__setattr__(self, "workspace", workspace_root(self.settings.state_dir) / name)

    def __repr__(self) -> str:
        return f"PromotionRun({self.request.tag!r}, {self.request.from_registry!r} -> {self.request.to_registry!r})"

    @property
    def signs(self) -> bool:
        return self.facts.signer is not None

    def open_workspace(self) -> Path:
        """The run's workspace (made on first use; its root and itself readable by root only)."""
        self.workspace.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.workspace.mkdir(mode=0o700, exist_ok=True)
        return self.workspace
