"""The release config: which images to build and which charts to publish.

The schema is shared with other tools, so the documented fields are accepted
exactly as they are written; fields of this project are optional additions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from tasks.core.errors import ConfigError
from tasks.core.project import PROJECT_ROOT
from tasks.oci.platforms import DEFAULT_PLATFORM, parse_platform

DEFAULT_CONFIG = PROJECT_ROOT / "release.yaml"
ALL_PLATFORMS = "all"  # a ko image's platforms: every platform of its base

# An image name becomes the last path component of a registry repository.
_IMAGE_NAME = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*")


def _relative_inside(value: str, what: str) -> str:
    """A path that stays inside the tree it is relative to (no absolute, no ``..``)."""
    path = PurePosixPath(value)
    if not value or path.is_absolute() or ".." in path.parts or "\\" in value:
        raise ValueError(
            f"{what} {value!r} must be a relative path inside the tree, without '..'"
        )
    return value


# A cover exclusion names a directory of the Go module, as upstream's `grep -v pkg/generated/` does.
_COVER_WILDCARD = re.compile(r"[*?\[\]{}]")
_COVER_FLAG = re.compile(r"^-{1,2}cover(pkg)?(=|$)")


class CoverConfig(BaseModel):
    """A ko image built for coverage, as upstream builds dual-pods-controller: GOFLAGS ``-cover
    -coverpkg=<every package of the module at the tag, but those under exclude>``. The package list
    is computed at build time from the checkout (``go list``), never written out."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Directories of the module, relative to its root (pkg/generated/): their packages and those below
    # them are not instrumented.
    exclude: tuple[str, ...] = ()

    @field_validator("exclude", mode="before")
    @classmethod
    def _exclude_list(cls, value: object) -> object:
        if value is None:
            return ()
        if isinstance(value, str):
            raise ValueError(f"exclude must be a list, e.g. [{value}]")
        return value

    @field_validator("exclude")
    @classmethod
    def _exclude(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(cover_directory(entry) for entry in value)


def cover_directory(entry: str) -> str:
    """A cover exclusion as a module directory without ``./``, a trailing ``/`` or ``/...``
    (``./pkg/generated/...`` -> ``pkg/generated``); :class:`ValueError` for one that names no directory."""
    text = entry.strip()
    name = text.removeprefix("./").removesuffix("/...").rstrip("/")
    if not name or name == "." or _COVER_WILDCARD.search(name):
        raise ValueError(
            f"cover exclude {entry!r} must name a directory of the Go module, e.g. pkg/generated/"
        )
    return _relative_inside(name, "cover exclude")


class SmokeConfig(BaseModel):
    """How the container-start proof starts an image no chart runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: tuple[str, ...] = ()


class ProofConfig(BaseModel):
    """What a staged release proves beyond the container starts (docs/staging.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Install each chart on a Kubernetes API server built from source, and run its controllers against it.
    kubernetes: bool = False
    # CustomResourceDefinition files of the source at the tag, applied before the charts (config/crds.yaml).
    crds: tuple[str, ...] = ()
    # Objects a real install has before the chart (a ClusterRole the values name), as YAML mappings.
    objects: tuple[dict[str, object], ...] = ()
    # Values for the proof's install only, over the chart's own (global.nodeViewClusterRole: node-viewer).
    values: dict[str, object] = Field(default_factory=dict)
    # How long each controller must keep running.
    settle_seconds: float = Field(default=20.0, gt=0, le=600)
    # How long a started container may run before it counts as running (the container-start proof).
    start_seconds: float = Field(default=5.0, gt=0, le=120)

    @field_validator("crds")
    @classmethod
    def _crds(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_relative_inside(path, "proof crds path") for path in value)


class ImageConfig(BaseModel):
    """One image: built from the source checkout at the tag."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    dockerfile: str | None = None  # a Dockerfile image's; a ko image has a main instead
    context: str = "."
    build_args: dict[str, str] = Field(default_factory=dict)
    # Optional: "source" (default) reads the Dockerfile from the checkout;
    # "project" from this repository, for images upstream ships no Dockerfile for.
    dockerfile_from: Literal["source", "project"] = "source"
    # Optional: the name of an entry of ``engines`` that must build this image.
    engine: str | None = None
    # Optional: the platforms to build; more than one publishes an OCI image index under the tag.
    # A ko image may say "all": every platform of its base image (ko build --platform all).
    platforms: tuple[str, ...] = (DEFAULT_PLATFORM,)
    # Optional: how it is built. dockerfile (= buildkit): the engine's BuildKit, as docker buildx build;
    # docker: the engine's legacy builder, for engines without BuildKit; ko: a Go main, as FMA's controllers.
    builder: Literal["dockerfile", "buildkit", "docker", "ko"] = "dockerfile"
    # ko: the Go main package, relative to the source (./cmd/dual-pods-controller), and GOFLAGS.
    main: str | None = None
    goflags: tuple[str, ...] = ()
    # ko: build for coverage as upstream's Makefile does ({exclude: [pkg/generated/]}); true: every package.
    cover: CoverConfig | None = None
    # Optional: build secrets for RUN --mount=type=secret,id=ID: ID -> the environment variable holding it.
    secrets: dict[str, str] = Field(default_factory=dict)
    # Optional: how a staged release's proof starts this image when no chart runs it ({command: [python3, -V]});
    # without it, the image's own entrypoint.
    smoke: SmokeConfig | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _IMAGE_NAME.fullmatch(value):
            raise ValueError(
                f"image name {value!r} must be lowercase letters, digits and single . _ - separators"
            )
        return value

    @field_validator("cover", mode="before")
    @classmethod
    def _cover(cls, value: object) -> object:
        if value is True:
            return {}
        if value is False:
            return None
        if value is not None and not isinstance(value, dict | CoverConfig):
            raise ValueError("cover must be true, or a mapping such as {exclude: [pkg/generated/]}")
        return value

    @field_validator("cover")
    @classmethod
    def _cover_needs_ko(cls, value: CoverConfig | None, info: ValidationInfo) -> CoverConfig | None:
        # builder and goflags come before cover, so they are validated already
        if value is None:
            return value
        if info.data.get("builder") != "ko":
            raise ValueError("cover is a Go build setting: it needs builder: ko (and a main); remove cover")
        twice = [flag for flag in info.data.get("goflags", ()) if _COVER_FLAG.match(flag.strip())]
        if twice:
            raise ValueError(f"coverage is asked twice: remove {twice[0]} from goflags (cover computes -cover "
                             "and -coverpkg)")
        return value

    @field_validator("dockerfile")
    @classmethod
    def _dockerfile(cls, value: str | None) -> str | None:
        return None if value is None else _relative_inside(value, "dockerfile")

    @field_validator("main")
    @classmethod
    def _main(cls, value: str | None) -> str | None:
        return None if value is None else _relative_inside(value.removeprefix("./") or ".", "main")

    @model_validator(mode="after")
    def _builder_needs(self) -> ImageConfig:
        if self.builder == "ko":
            if not self.main:
                raise ValueError(f"image {self.name!r} is built by ko: give its Go main, e.g. main: ./cmd/{self.name}")
            if self.dockerfile:
                raise ValueError(f"image {self.name!r} is built by ko: remove 'dockerfile', or use builder: dockerfile")
        else:
            if not self.dockerfile:
                raise ValueError(f"image {self.name!r} needs a dockerfile (or builder: ko with a main)")
            if self.platforms == (ALL_PLATFORMS,):
                raise ValueError(f"image {self.name!r}: platforms: all needs builder: ko; list the platforms")
        return self

    @field_validator("context")
    @classmethod
    def _context(cls, value: str) -> str:
        return _relative_inside(value, "context")

    @field_validator("platforms", mode="before")
    @classmethod
    def _platforms(cls, value: object) -> object:
        if value is None:
            return (DEFAULT_PLATFORM,)
        if value == ALL_PLATFORMS:
            return (ALL_PLATFORMS,)
        if isinstance(value, str):
            raise ValueError(f"platforms must be a list, e.g. [{value}], or all (ko images)")
        return value

    @field_validator("platforms")
    @classmethod
    def _platform_list(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("platforms is empty: list at least one, e.g. [linux/amd64], or leave it out")
        for platform in value:
            if platform == ALL_PLATFORMS and len(value) == 1:
                continue
            parse_platform(platform)
        twice = sorted({p for p in value if value.count(p) > 1})
        if twice:
            raise ValueError(f"platform {twice[0]} appears twice in platforms; list each platform once")
        return value

    @field_validator("build_args", mode="before")
    @classmethod
    def _build_args(cls, value: object) -> object:
        if value is None:
            return {}
        if isinstance(value, dict):
            return {str(k): str(v) for k, v in value.items()}
        return value


class EngineConfig(BaseModel):
    """One Docker engine that builds and pushes images: the local one or a remote one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    # As DOCKER_HOST: unix:///var/run/docker.sock, tcp://builder-1:2376, ssh://user@builder-2
    docker_host: str
    # A directory with ca.pem, cert.pem and key.pem (Docker's convention) for a TLS tcp:// engine.
    tls_cert_path: str | None = None
    # At most this many builds at a time on this engine (default: no cap, every build at once).
    max_builds: int | None = Field(default=None, ge=1)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _IMAGE_NAME.fullmatch(value):
            raise ValueError(f"engine name {value!r} must be lowercase letters, digits and single . _ - separators")
        return value

    @field_validator("docker_host")
    @classmethod
    def _docker_host(cls, value: str) -> str:
        if not re.fullmatch(r"(unix|tcp|ssh|npipe)://\S+", value):
            raise ValueError(
                f"docker_host {value!r} must be a Docker address such as unix:///var/run/docker.sock "
                "or tcp://host:2376"
            )
        return value


class ChartConfig(BaseModel):
    """One chart: packaged at the release version and pushed to the chart registry."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    path: str
    origin: Literal["source", "project"] = Field(default="source", alias="from")

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return _relative_inside(value, "chart path")


class ReleaseConfig(BaseModel):
    """The whole config; either list may be empty."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    images: tuple[ImageConfig, ...] = ()
    charts: tuple[ChartConfig, ...] = ()
    # Optional: the engines builds are spread over (default: the one DOCKER_HOST names).
    engines: tuple[EngineConfig, ...] = ()
    # Optional: what a chart may reference besides the release's own images. allow: listed in the summary
    # (a warning when not pinned by digest); require-digest: only images pinned by digest; deny: none.
    external_images: Literal["allow", "require-digest", "deny"] = "allow"
    # Optional: base image registries rewritten to mirrors (air-gapped builders, pull-through caches),
    # for .ko.yaml bases and Dockerfile FROM lines: {cgr.dev: registry.local/mirror/cgr.dev}. Digests stay.
    mirrors: dict[str, str] = Field(default_factory=dict)
    # Optional: sign images and charts, with provenance and SBOM attestations, when a key is configured
    # (FMA_SIGNING_KEY); false: never sign this project's releases, whatever the environment says.
    sign: bool = True
    # Optional: a registry every run of this config stages to first (--stage): built, pushed and signed there,
    # proven, then promoted to --registry; nothing reaches --registry before the proof passes.
    stage: str | None = None
    # Optional: what the proof of a staged release checks beyond the container starts.
    proof: ProofConfig = Field(default_factory=ProofConfig)

    @field_validator("images", "charts", "engines", mode="before")
    @classmethod
    def _none_is_empty(cls, value: object) -> object:
        return () if value is None else value

    @model_validator(mode="after")
    def _unique(self) -> ReleaseConfig:
        seen: set[str] = set()
        for image in self.images:
            if image.name in seen:
                raise ValueError(f"image name {image.name!r} appears twice; give each image one entry")
            seen.add(image.name)
        engines = [engine.name for engine in self.engines]
        if len(engines) != len(set(engines)):
            raise ValueError("an engine name appears twice; give each engine one entry")
        for image in self.images:
            if image.engine is not None and image.engine not in engines:
                raise ValueError(
                    f"image {image.name!r} names engine {image.engine!r}, which is not under 'engines'; "
                    "add it there or remove 'engine'"
                )
        paths = [c.path for c in self.charts]
        if len(paths) != len(set(paths)):
            raise ValueError("a chart path appears twice; list each chart once")
        return self


def _line_of(text: str, loc: tuple[int | str, ...]) -> int:
    """The line (from 1) where ``text`` writes what a validation error's location names: the deepest
    key or list item of ``loc`` it has (a missing field's error points at the entry that lacks it);
    0 when the text cannot be read as YAML nodes."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return 0
    if node is None:
        return 0
    line = int(node.start_mark.line) + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            found = next(((key, value) for key, value in node.value
                          if isinstance(key, yaml.ScalarNode) and key.value == part), None)
            if found is None:
                break
            line, node = int(found[0].start_mark.line) + 1, found[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            line = int(node.start_mark.line) + 1
        else:
            break
    return line


def parse_config(text: str, origin: str = "release config", file: str = "") -> ReleaseConfig:
    """Validate config text; one-line :class:`ConfigError` on any problem, naming where ``file`` (when
    given, else ``origin``) says it."""
    named = f"{origin} {file}" if file else origin
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{named} is not valid YAML{where}: fix the syntax") from err
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{named} must be a mapping with 'images' and 'charts' lists")
    try:
        return ReleaseConfig.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "top level"
        msg = first["msg"].removeprefix("Value error, ")
        more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
        line = _line_of(text, tuple(first["loc"]))
        at = (f"{origin} {file}:{line}" if file else f"{origin}, line {line}") if line else named
        raise ConfigError(f"{at}: {where}: {msg}{more}") from err


def load_config(path: str | Path | None) -> ReleaseConfig:
    """Read and validate a config file (the project's default when ``None``)."""
    file = Path(path) if path is not None else DEFAULT_CONFIG
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(
            f"cannot read release config {file}: {err.strerror or err}; pass an existing file with --config"
        ) from err
    return parse_config(text, file=str(file))


# -- the Docker engines builds go to (``engines``; the Docker clients are tasks/run/engines.py) --

@dataclass(frozen=True)
class Engine:
    """A Docker engine a build goes to (see ``engines`` in the release config)."""

    name: str = "default"
    docker_host: str = ""  # "" = the run's default engine (DOCKER_HOST, else the local socket)
    tls_cert_path: str = ""  # ca.pem, cert.pem, key.pem for a TLS tcp:// engine
    max_builds: int = 0  # 0 = no cap

    @property
    def is_default(self) -> bool:
        return not self.docker_host and self.name == "default"


DEFAULT_ENGINE = Engine()


def configured_engines(config: ReleaseConfig) -> list[Engine]:
    """The config's engines; the default one when it lists none."""
    return [
        Engine(name=e.name, docker_host=e.docker_host, tls_cert_path=e.tls_cert_path or "",
               max_builds=e.max_builds or 0)
        for e in config.engines
    ] or [DEFAULT_ENGINE]


def assign_engines(images: list[tuple[str, str | None]], engines: list[str]) -> dict[str, str]:
    """Which engine builds each image: its own when it names one, else the engine with the fewest
    images so far (first listed on a tie). ``{}`` without engines: all go to the default one."""
    if not engines:
        return {}
    load = dict.fromkeys(engines, 0)
    placed: dict[str, str] = {}
    for name, pinned in images:
        if pinned is not None:
            placed[name] = pinned
            load[pinned] += 1
    for name, pinned in images:
        if pinned is None:
            chosen = min(engines, key=lambda engine: load[engine])
            placed[name] = chosen
            load[chosen] += 1
    return placed
