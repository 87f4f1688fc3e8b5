"""The image plan of a release (pure): one :class:`ImageSpec` per build, with its reference,
labels and fingerprint.

A fingerprint is the hash of everything that determines a build's result; it is also a label of
the image (:data:`FINGERPRINT_LABEL`), so a re-run can tell that the image in the registry is
exactly the one it would build.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from tasks.core.errors import ConfigError
from tasks.core.links import check_links
from tasks.core.project import PROJECT_ROOT
from tasks.oci.platforms import DEFAULT_PLATFORM, platform_tag
from tasks.run.config import DEFAULT_ENGINE, Engine, ImageConfig, ReleaseConfig, assign_engines, configured_engines
from tasks.run.facts import Checkout

LABEL_PREFIX = "org.opencontainers.image"
FINGERPRINT_LABEL = "io.llm-d.fma-release.fingerprint"


@dataclass(frozen=True)
class ImageSpec:
    """Everything one build needs; small and picklable for remote task runners."""

    name: str
    ref: str  # <registry>/<name>:<tag>
    dockerfile: Path | None  # None for a ko image
    context: Path  # the build context; a ko image's: the checkout (its Go module)
    build_args: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    # Hash of everything that determines the image; also its FINGERPRINT_LABEL.
    fingerprint: str = ""
    engine: Engine = DEFAULT_ENGINE  # where it is built and pushed from
    platform: str = DEFAULT_PLATFORM
    # A multi-platform image's tag (<registry>/<name>:<tag>), where the index goes; then ``ref`` is
    # this platform's own name (<tag>-linux-arm64): the engine's tag of the build and part of its
    # fingerprint, never pushed (the platform image goes by digest). "" for a single-platform image.
    index_ref: str = ""
    builder: str = "dockerfile"  # which module of tasks/builders builds it
    secrets: Mapping[str, str] = field(default_factory=dict)  # secret id -> environment variable name
    mirrors: Mapping[str, str] = field(default_factory=dict)  # base registry prefix -> mirror
    # ko: the Go main, GOFLAGS, and the tagged commit's time (reproducible builds)
    main: str = ""
    goflags: tuple[str, ...] = ()
    created_epoch: int = 0
    # The Dockerfile as the release config names it (dockerfiles/Dockerfile.requester), for messages.
    dockerfile_name: str = ""
    # ko: built for coverage (-cover -coverpkg=<the module's packages at the tag but those under cover_exclude>)
    cover: bool = False
    cover_exclude: tuple[str, ...] = ()

    @property
    def dockerfile_path(self) -> Path:
        """The Dockerfile of a Dockerfile image (:class:`ConfigError` for a ko image)."""
        if self.dockerfile is None:
            raise ConfigError(f"image {self.name} is built by {self.builder}, which takes no Dockerfile")
        return self.dockerfile

    @property
    def label(self) -> str:
        """How a task run and the progress view name this build: ``requester linux/arm64``, or the name."""
        return f"{self.name} {self.platform}" if self.index_ref else self.name

    @property
    def dockerfile_shown(self) -> str:
        """The Dockerfile as messages name it: as the release config does, else by its file name."""
        return self.dockerfile_name or self.dockerfile_path.name

    @property
    def label_with_platform(self) -> str:
        """The label with the platform always in it: ``launcher (linux/amd64)``, ``requester linux/arm64``."""
        return self.label if self.index_ref else f"{self.name} ({self.platform})"


def image_ref(registry: str, name: str, tag: str) -> str:
    """``<registry>/<name>:<tag>``; the tag keeps its ``v``."""
    return f"{registry.rstrip('/')}/{name}:{tag}"


def oci_labels(checkout: Checkout, name: str) -> dict[str, str]:
    """The OCI annotations every release image carries."""
    return {
        f"{LABEL_PREFIX}.source": checkout.source,
        f"{LABEL_PREFIX}.revision": checkout.revision,
        f"{LABEL_PREFIX}.version": checkout.tag,
        f"{LABEL_PREFIX}.created": checkout.created,
        f"{LABEL_PREFIX}.title": name,
    }


def build_fingerprint(
    *, ref: str, dockerfile: bytes, context: str, build_args: Mapping[str, str], labels: Mapping[str, str],
    platform: str = DEFAULT_PLATFORM, builder: str = "dockerfile",
) -> str:
    """What determines a build's result: the source revision (in the labels), the Dockerfile's bytes,
    the context path in the checkout, build args, labels, platform, builder and target reference."""
    payload = json.dumps(
        {
            "ref": ref, "dockerfile": hashlib.sha256(dockerfile).hexdigest(), "context": context,
            "build_args": dict(sorted(build_args.items())), "labels": dict(sorted(labels.items())),
            "platform": platform, "builder": "buildkit" if builder == "dockerfile" else builder,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def _inside(name: str, what: str, path: Path, root: Path) -> Path:
    if not path.is_relative_to(root.resolve()):
        raise ConfigError(f"image {name}: {what} {path} leaves its tree; use a path inside it")
    return path


def ko_fingerprint(source: Path, image: ImageConfig, *, labels: Mapping[str, str],
                   mirrors: Mapping[str, str]) -> str:
    """What determines a ko build: the tagged commit and tag (in the labels), go.mod and go.sum, the
    main's package files, .ko.yaml (its base, pinned by digest as FMA's is, or by tag), GOFLAGS, cover
    (its exclusions: the package list follows from them and the tagged commit), platforms and mirrors.
    Not the registry: the same tag built for two registries is the same image."""
    main = source / (image.main or ".")
    files = {name: source / name for name in ("go.mod", "go.sum", ".ko.yaml")}
    files |= {str(p.relative_to(source)): p for p in sorted(main.glob("*.go"))}
    inputs: dict[str, object] = {
        "builder": "ko", "main": image.main, "goflags": list(image.goflags),
        "platforms": list(image.platforms), "mirrors": dict(sorted(mirrors.items())),
        "labels": dict(sorted(labels.items())),
        "files": {name: hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
                  for name, p in files.items()},
    }
    if image.cover is not None:  # only then: an image without cover keeps the fingerprint it had
        inputs["cover"] = {"exclude": list(image.cover.exclude)}
    payload = json.dumps(inputs, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def created_epoch(created: str) -> int:
    """Seconds since the epoch of an RFC 3339 time (the tagged commit's), for SOURCE_DATE_EPOCH."""
    return int(datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()) if created else 0


def _ko_spec(image: ImageConfig, checkout: Checkout, registry: str, mirrors: Mapping[str, str]) -> ImageSpec:
    main = _inside(image.name, "main", (checkout.path / (image.main or ".")).resolve(), checkout.path)
    if not main.is_dir():
        raise ConfigError(
            f"image {image.name}: main {image.main} is not a directory in the source at {checkout.tag}; "
            "fix 'main' in the release config"
        )
    check_links(main, checkout.path, f"image {image.name}: main {image.main or '.'}")
    ref = image_ref(registry, image.name, checkout.tag)
    labels = oci_labels(checkout, image.name)
    fingerprint = ko_fingerprint(checkout.path, image, labels=labels, mirrors=mirrors)
    return ImageSpec(
        name=image.name, ref=ref, dockerfile=None, context=checkout.path,
        labels={**labels, FINGERPRINT_LABEL: fingerprint}, fingerprint=fingerprint,
        platform=",".join(image.platforms), builder="ko", mirrors=dict(mirrors),
        main=f"./{image.main}" if image.main and not image.main.startswith(".") else image.main or ".",
        goflags=tuple(image.goflags), created_epoch=created_epoch(checkout.created),
        cover=image.cover is not None, cover_exclude=image.cover.exclude if image.cover is not None else (),
    )


def image_specs(
    config: ReleaseConfig, checkout: Checkout, registry: str, project_root: Path = PROJECT_ROOT
) -> list[ImageSpec]:
    """One spec per configured image and platform (a ko image: one for all its platforms, its index
    made by ko); :class:`ConfigError` for a missing Dockerfile, context or main."""
    specs = []
    engines = {target.name: target for target in configured_engines(config)}
    placed = assign_engines([(image.name, image.engine) for image in config.images], list(engines))
    for image in config.images:
        if image.builder == "ko":
            specs.append(_ko_spec(image, checkout, registry, config.mirrors))
            continue
        assert image.dockerfile is not None  # the config requires one without ko
        base = project_root if image.dockerfile_from == "project" else checkout.path
        dockerfile = _inside(image.name, "dockerfile", (base / image.dockerfile).resolve(), base)
        context = _inside(image.name, "context", (checkout.path / image.context).resolve(), checkout.path)
        if not dockerfile.is_file():
            where = "this project" if image.dockerfile_from == "project" else f"the source at {checkout.tag}"
            raise ConfigError(
                f"image {image.name}: dockerfile {image.dockerfile} is not in {where}; "
                "fix 'dockerfile' in the release config"
            )
        if not context.is_dir():
            raise ConfigError(
                f"image {image.name}: context {image.context} is not a directory in the source at "
                f"{checkout.tag}; fix 'context' in the release config"
            )
        check_links(context, checkout.path, f"image {image.name}: context {image.context}")
        if image.dockerfile_from != "project":
            check_links(base / image.dockerfile, checkout.path, f"image {image.name}")
        tag_ref = image_ref(registry, image.name, checkout.tag)
        labels = oci_labels(checkout, image.name)
        several = len(image.platforms) > 1
        for platform in image.platforms:
            ref = image_ref(registry, image.name, platform_tag(checkout.tag, platform)) if several else tag_ref
            fingerprint = build_fingerprint(
                ref=ref, dockerfile=dockerfile.read_bytes(), context=image.context, build_args=image.build_args,
                labels=labels, platform=platform, builder=image.builder,
            )
            specs.append(
                ImageSpec(
                    name=image.name, ref=ref, dockerfile=dockerfile, context=context,
                    build_args=dict(image.build_args), labels={**labels, FINGERPRINT_LABEL: fingerprint},
                    fingerprint=fingerprint, platform=platform, index_ref=tag_ref if several else "",
                    engine=engines.get(placed.get(image.name, ""), DEFAULT_ENGINE),
                    builder=image.builder, secrets=dict(image.secrets), mirrors=dict(config.mirrors),
                    dockerfile_name=image.dockerfile,
                )
            )
    return specs


def build_order(specs: Sequence[ImageSpec], seconds: Mapping[str, float]) -> list[ImageSpec]:
    """The builds to start, the longest first (pure): ``seconds`` is how long each build's chain took to
    its push in an earlier run, by label. Longest first gives the critical chain the engine while it is
    least busy. A build never measured gives no basis to reorder: the config's order stands."""
    if any(spec.label not in seconds for spec in specs):
        return list(specs)
    return sorted(specs, key=lambda spec: -seconds[spec.label])  # stable: ties keep the config's order


def head_start(order: Sequence[ImageSpec], seconds: Mapping[str, float], lead: float) -> float:
    """How long the first build of ``order`` (see :func:`build_order`) starts ahead of the others (pure):
    ``lead`` when it was measured to end more than ``lead`` after every other, else 0. Its session,
    context upload and first step then have the engine to themselves, and the others still end first."""
    if lead <= 0 or len(order) < 2 or any(spec.label not in seconds for spec in order):
        return 0.0
    first, *others = (seconds[spec.label] for spec in order)
    return lead if first - max(others) > lead else 0.0
