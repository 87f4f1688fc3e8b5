"""The builder seam: a builder turns an :class:`~tasks.run.plan.ImageSpec` into an image the pusher
can publish.

Every builder meets :class:`Builder`, one module each (``buildkit``: Dockerfiles with the engine's
BuildKit, the default; ``docker``: the engine's legacy builder through the SDK; ``ko``: Go mains, no
engine). What a build gives is a :class:`BuiltImage`: an image in a Docker engine (``image_id``), or
an OCI image layout on disk (``layout``) for builders that need no engine; one pusher
(tasks/push.py) publishes either. :func:`builder_for` picks the builder a spec names. The room also
holds what the builders read: Dockerfiles, ``.ko.yaml`` and base images.

Imports ``tasks.core``, ``tasks.oci`` and ``tasks.run``; never a step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from tasks.core.errors import ConfigError
from tasks.core.pulse import Step, no_step

if TYPE_CHECKING:
    from tasks.run.context import RunContext
    from tasks.run.plan import ImageSpec
    from tasks.run.result import BuiltImage


class Builder(Protocol):
    """Build one spec; raise :class:`~tasks.core.errors.ImageBuildError` (one line, with the failing step's
    last lines of output) when it fails. ``step`` hears what the build is doing as it goes."""

    def build(self, spec: ImageSpec, run: RunContext, log: Any, step: Step = no_step) -> BuiltImage: ...


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
