"""The builder seam: a builder turns an :class:`~tasks.plan.ImageSpec` into an image the pusher
can publish.

Every builder meets :class:`Builder`, one module each (``buildkit``: Dockerfiles with the engine's
BuildKit, the default; ``docker``: the engine's legacy builder through the SDK; ``ko``: Go mains, no
engine). What a build gives is a :class:`BuiltImage`: an image in a Docker engine (``image_id``), or
an OCI image layout on disk (``layout``) for builders that need no engine; one pusher
(tasks/push.py) publishes either. :func:`builder_for` picks the builder a spec names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tasks.engine import DEFAULT_ENGINE, Engine
from tasks.errors import ConfigError

if TYPE_CHECKING:
    from tasks.context import RunContext
    from tasks.plan import ImageSpec


@dataclass(frozen=True)
class BuiltImage:
    """A finished build, ready to push."""

    name: str
    ref: str
    image_id: str = ""  # the engine's image id, for an engine image; the push checks the engine still has it
    fingerprint: str = ""
    engine: Engine = DEFAULT_ENGINE  # the engine that holds it
    platform: str = ""  # set for one platform of a multi-platform image
    label: str = ""  # as ImageSpec.label
    layout: Path | None = None  # an OCI image layout, for a build outside any engine
    digest: str = ""  # the layout's top manifest (an image index for several platforms)
    # What the provenance attestation records (tasks/signing.py):
    # the base images as (image, platform), pinned (name@sha256:...) where the builder pinned them;
    # platform "" is the image's own, else a FROM's --platform (a builder stage on the build machine's)
    bases: tuple[tuple[str, str], ...] = ()
    sboms: tuple[Path, ...] = ()  # SBOMs the builder wrote itself (ko: one per platform and the index)
    started: str = ""  # when the build started and finished, RFC 3339 UTC
    finished: str = ""

    @property
    def item(self) -> str:
        return self.label or self.name


class Builder(Protocol):
    """Build one spec; raise :class:`~tasks.errors.ImageBuildError` (one line) when it fails."""

    def build(self, spec: ImageSpec, run: RunContext, log: Any) -> BuiltImage: ...


def builder_for(spec: ImageSpec) -> Builder:
    """The builder ``spec.builder`` names."""
    if spec.builder in ("dockerfile", "buildkit"):
        from tasks.builders.buildkit import BuildkitBuilder

        return BuildkitBuilder()
    if spec.builder == "ko":
        from tasks.builders.ko import KoBuilder

        return KoBuilder()
    if spec.builder == "docker":
        from tasks.builders.docker import LegacyBuilder

        return LegacyBuilder()
    raise ConfigError(f"image {spec.name}: unknown builder {spec.builder!r}; use dockerfile, buildkit, docker or ko")
