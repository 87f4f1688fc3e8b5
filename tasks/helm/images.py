"""Which images a rendered chart references are the release's own, and which are external (pure).

A rendered image in the release's registry path whose name is one of the release's images must be a
reference this release publishes: ``<registry>/<name>:<tag>``, or ``<registry>/<name>@<digest>``
with one of the digests the release pushed. Anything else there (a typo'd tag, a stale ``:latest``)
is a mistake and the chart is refused. Every other image is external: allowed and listed by default;
``external_images: require-digest`` refuses the ones not pinned by digest, ``deny`` refuses them all.

A chart renders other images under its values switches (FMA's ``global.produceCoverdata`` brings in a
busybox inspector): the check takes what each switch renders too (``switched``), holds every image to
the same rules, and says which switch brings in an image the defaults do not render.

References are read as Kubernetes and docker read them (:meth:`tasks.oci.references.Reference.docker`):
``busybox:1.38.0`` is ``docker.io/library/busybox:1.38.0``, no tag and no digest means ``:latest``,
and with a digest the digest is what is pulled.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from tasks.core.errors import ChartError, ConfigError
from tasks.oci.references import Reference

POLICIES = ("allow", "require-digest", "deny")


@dataclass(frozen=True)
class ExternalImage:
    chart: str
    image: str
    pinned: bool  # referenced by digest
    # The values switches under which the chart renders it (``global.produceCoverdata=true``);
    # () when the chart's defaults render it.
    switches: tuple[str, ...] = ()

    @property
    def named(self) -> str:
        """The image, and the switch that brings it in when the defaults do not."""
        return f"{self.image} ({with_switches(self.switches)})" if self.switches else self.image


def with_switches(switches: Collection[str]) -> str:
    """``with global.produceCoverdata=true`` (``or`` between several)."""
    return "with " + " or ".join(switches)


@dataclass(frozen=True)
class ChartImageCheck:
    chart: str
    own: tuple[str, ...]  # the release's own references found
    external: tuple[ExternalImage, ...]

    @property
    def warnings(self) -> tuple[str, ...]:
        """One line per external image not pinned by digest."""
        return tuple(
            f"chart {self.chart} uses {item.named}, not pinned by digest: an install gets whatever that tag "
            f"points at then; pin it as {item.image}@sha256:..., or set external_images: require-digest to refuse it"
            for item in self.external if not item.pinned
        )


def _publishes(found: Reference, published: Reference, digests: Collection[str]) -> bool:
    if found.digest:
        tag_ok = not found.tag or found.tag == published.pulled_tag
        return tag_ok and (found.digest in digests or found.digest == published.digest)
    return not published.digest and found.pulled_tag == published.pulled_tag


def image_switches(rendered: Iterable[str], switched: Mapping[str, Iterable[str]]) -> dict[str, tuple[str, ...]]:
    """Every image the chart renders with its defaults or under a switch, with the switches that bring it
    in (``()`` for one the defaults render), in the switches' order (pure)."""
    found: dict[str, tuple[str, ...]] = {image: () for image in rendered}
    brought: dict[str, list[str]] = {}
    for switch, images in switched.items():
        for image in images:
            if image not in found:
                brought.setdefault(image, [])
                if switch not in brought[image]:
                    brought[image].append(switch)
    return found | {image: tuple(switches) for image, switches in brought.items()}


def check_chart_images(
    chart: str, rendered: Iterable[str], *, registry: str, images: Mapping[str, str],
    digests: Mapping[str, Collection[str]] | None = None, policy: str = "allow",
    switched: Mapping[str, Iterable[str]] | None = None,
) -> ChartImageCheck:
    """Sort the images a chart renders into the release's own and external ones; :class:`ChartError`
    when an own image is not one this release publishes, or the policy refuses an external one.

    ``rendered``: the images of the chart's defaults; ``switched``: switch (``global.x=true``) -> the
    images rendered under it; ``images``: image name -> the reference this release publishes for it;
    ``digests``: image name -> the digests it pushed for it (its tag's, and each platform's);
    ``policy``: ``allow`` (default), ``require-digest`` or ``deny`` for external images.
    """
    if policy not in POLICIES:
        raise ConfigError(f"external_images is {policy!r}: set it to one of {', '.join(POLICIES)}")
    digests = digests or {}
    prefix = registry.strip().rstrip("/")
    own_names: dict[str, str] = {}
    published: dict[str, Reference] = {}
    for name, ref in images.items():
        try:
            own_names[Reference.docker(f"{prefix}/{name}").path] = name
            published[name] = Reference.docker(ref)
        except ValueError as err:
            raise ConfigError(f"the release's image {name} ({ref}) under {registry} is not a valid reference "
                              f"({err}): fix the registry or the image name in the release config") from err
    own: list[str] = []
    external: list[ExternalImage] = []
    wrong: list[str] = []
    every = image_switches(rendered, switched or {})
    for image in sorted(every):
        switches = every[image]
        try:
            found = Reference.docker(image)
        except ValueError as err:
            where = f" {with_switches(switches)}" if switches else ""
            raise ChartError(f"chart {chart} renders an invalid image reference{where} ({err}): "
                             "fix the chart's image values or templates") from err
        own_name = own_names.get(found.path)
        if own_name is None:
            external.append(ExternalImage(chart=chart, image=image, pinned=bool(found.digest), switches=switches))
        elif _publishes(found, published[own_name], digests.get(own_name, ())):
            own.append(image)
        else:
            where = f"{with_switches(switches)}; " if switches else ""
            wrong.append(f"{image} ({where}this release publishes {images[own_name]})")
    if wrong:
        raise ChartError(
            f"chart {chart} references {', '.join(wrong)}, which this release does not publish: build the chart's "
            "own image references from global.imageRegistry and global.imageTag, or fix the reference"
        )
    check = ChartImageCheck(chart=chart, own=tuple(own), external=tuple(external))
    unpinned = [item.named for item in external if not item.pinned]
    if policy == "require-digest" and unpinned:
        raise ChartError(
            f"chart {chart} uses external images not pinned by digest: {', '.join(unpinned)}; pin each by digest "
            "(image:tag@sha256:...), or set external_images: allow in the release config"
        )
    if policy == "deny" and external:
        raise ChartError(
            f"chart {chart} uses images this release does not build: {', '.join(i.named for i in external)}; "
            "remove them from the chart, or set external_images: allow (or require-digest) in the release config"
        )
    return check
