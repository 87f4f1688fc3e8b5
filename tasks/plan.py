"""The image plan of a release (pure): one :class:`ImageSpec` per build, with its reference,
labels and fingerprint.

A fingerprint is the hash of everything that determines a build's result; it is also a label of
the image (:data:`FINGERPRINT_LABEL`), so a re-run can tell that the image in the registry is
exactly the one it would build.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tasks.config import PROJECT_ROOT, ReleaseConfig
from tasks.engine import DEFAULT_ENGINE, Engine, assign_engines, configured_engines
from tasks.errors import ConfigError
from tasks.platforms import DEFAULT_PLATFORM, platform_tag
from tasks.source import Checkout

LABEL_PREFIX = "org.opencontainers.image"
FINGERPRINT_LABEL = "io.llm-d.fma-release.fingerprint"


@dataclass(frozen=True)
class ImageSpec:
    """Everything one build needs; small and picklable for remote task runners."""

    name: str
    ref: str  # <registry>/<name>:<tag>
    dockerfile: Path
    context: Path
    build_args: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    # Hash of everything that determines the image; also its FINGERPRINT_LABEL.
    fingerprint: str = ""
    engine: Engine = DEFAULT_ENGINE  # where it is built and pushed from
    platform: str = DEFAULT_PLATFORM
    # A multi-platform image's tag (<registry>/<name>:<tag>), where the index goes; then ``ref`` is
    # this platform's own tag (<tag>-linux-arm64). "" for a single-platform image.
    index_ref: str = ""
    builder: str = "dockerfile"  # which module of tasks/builders builds it
    secrets: Mapping[str, str] = field(default_factory=dict)  # secret id -> environment variable name

    @property
    def label(self) -> str:
        """How a task run and the progress view name this build: ``requester linux/arm64``, or the name."""
        return f"{self.name} {self.platform}" if self.index_ref else self.name


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


def image_specs(
    config: ReleaseConfig, checkout: Checkout, registry: str, project_root: Path = PROJECT_ROOT
) -> list[ImageSpec]:
    """One spec per configured image and platform; :class:`ConfigError` for a missing Dockerfile or context."""
    specs = []
    engines = {target.name: target for target in configured_engines(config)}
    placed = assign_engines([(image.name, image.engine) for image in config.images], list(engines))
    for image in config.images:
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
                    builder=image.builder, secrets=dict(image.secrets),
                )
            )
    return specs
