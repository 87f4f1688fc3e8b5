"""Which images a rendered chart references are the release's own, and which are external (pure).

A rendered image in the release's registry path whose name is one of the release's images must be a
reference this release publishes: ``<registry>/<name>:<tag>``, or ``<registry>/<name>@<digest>``
with one of the digests the release pushed. Anything else there (a typo'd tag, a stale ``:latest``)
is a mistake and the chart is refused. Every other image is external: allowed and listed by default;
``external_images: require-digest`` refuses the ones not pinned by digest, ``deny`` refuses them all.

References are read as Kubernetes and docker read them (distribution's reference grammar and
docker's normalisation): ``busybox:1.38.0`` is ``docker.io/library/busybox:1.38.0``, a first
component with a ``.`` or ``:`` (or ``localhost``) is a registry host, no tag and no digest means
``:latest``, and with a digest the digest is what is pulled.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from tasks.errors import ChartError, ConfigError

POLICIES = ("allow", "require-digest", "deny")
DEFAULT_DOMAIN = "docker.io"
_LEGACY_DOMAINS = ("index.docker.io", "registry-1.docker.io")

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?")
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
_SHA256 = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class ImageReference:
    """An image reference split and normalised: ``domain/path[:tag][@digest]``."""

    domain: str  # lower case; docker.io for Docker Hub
    path: str  # library/busybox for an official Docker Hub image
    tag: str = ""
    digest: str = ""

    @property
    def repository(self) -> str:
        return f"{self.domain}/{self.path}"

    @property
    def pulled_tag(self) -> str:
        """The tag that is pulled when there is no digest: ``latest`` when none is written."""
        return self.tag or ("" if self.digest else "latest")


def parse_image(reference: str) -> ImageReference:
    """Split and normalise ``reference``; :class:`ValueError` when it is not a valid image reference."""
    rest, at, digest = reference.partition("@")
    if at and not (_DIGEST.fullmatch(digest) and (not digest.startswith("sha256:") or _SHA256.fullmatch(digest))):
        raise ValueError(f"{reference!r} has a malformed digest")
    name, tag = rest, ""
    colon = rest.rfind(":")
    if colon > rest.rfind("/"):
        name, tag = rest[:colon], rest[colon + 1:]
        if not _TAG.fullmatch(tag):
            raise ValueError(f"{reference!r} has a malformed tag")
    slash = name.find("/")
    first = name[:slash] if slash >= 0 else ""
    if slash < 0 or (not any(c in first for c in ".:") and first != "localhost" and first == first.lower()):
        domain, path = DEFAULT_DOMAIN, name
    else:
        domain, path = first, name[slash + 1:]
        if not _DOMAIN.fullmatch(domain):
            raise ValueError(f"{reference!r} has a malformed registry host {domain!r}")
    domain = domain.lower()
    if domain in _LEGACY_DOMAINS:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = f"library/{path}"
    if not path or len(path) > 255 or not all(_PATH_COMPONENT.fullmatch(part) for part in path.split("/")):
        raise ValueError(f"{reference!r} has a malformed repository name (lower-case letters, digits, . _ - and /)")
    return ImageReference(domain=domain, path=path, tag=tag, digest=digest)


@dataclass(frozen=True)
class ExternalImage:
    chart: str
    image: str
    pinned: bool  # referenced by digest


@dataclass(frozen=True)
class ChartImageCheck:
    chart: str
    own: tuple[str, ...]  # the release's own references found
    external: tuple[ExternalImage, ...]

    @property
    def warnings(self) -> tuple[str, ...]:
        """One line per external image not pinned by digest."""
        return tuple(
            f"chart {self.chart} uses {item.image}, not pinned by digest: an install gets whatever that tag "
            f"points at then; pin it as {item.image}@sha256:..., or set external_images: require-digest to refuse it"
            for item in self.external if not item.pinned
        )


def _publishes(found: ImageReference, published: ImageReference, digests: Collection[str]) -> bool:
    if found.digest:
        tag_ok = not found.tag or found.tag == published.pulled_tag
        return tag_ok and (found.digest in digests or found.digest == published.digest)
    return not published.digest and found.pulled_tag == published.pulled_tag


def check_chart_images(
    chart: str, rendered: Iterable[str], *, registry: str, images: Mapping[str, str],
    digests: Mapping[str, Collection[str]] | None = None, policy: str = "allow",
) -> ChartImageCheck:
    """Sort the images a chart renders into the release's own and external ones; :class:`ChartError`
    when an own image is not one this release publishes, or the policy refuses an external one.

    ``images``: image name -> the reference this release publishes for it; ``digests``: image name ->
    the digests it pushed for it (its tag's, and each platform's); ``policy``: ``allow`` (default),
    ``require-digest`` or ``deny`` for external images.
    """
    if policy not in POLICIES:
        raise ConfigError(f"external_images is {policy!r}: set it to one of {', '.join(POLICIES)}")
    digests = digests or {}
    prefix = registry.strip().rstrip("/")
    own_names: dict[str, str] = {}
    published: dict[str, ImageReference] = {}
    for name, ref in images.items():
        try:
            own_names[parse_image(f"{prefix}/{name}").repository] = name
            published[name] = parse_image(ref)
        except ValueError as err:
            raise ConfigError(f"the release's image {name} ({ref}) under {registry} is not a valid reference "
                              f"({err}): fix the registry or the image name in the release config") from err
    own: list[str] = []
    external: list[ExternalImage] = []
    wrong: list[str] = []
    for image in sorted(set(rendered)):
        try:
            found = parse_image(image)
        except ValueError as err:
            raise ChartError(f"chart {chart} renders an invalid image reference ({err}): "
                             "fix the chart's image values or templates") from err
        own_name = own_names.get(found.repository)
        if own_name is None:
            external.append(ExternalImage(chart=chart, image=image, pinned=bool(found.digest)))
        elif _publishes(found, published[own_name], digests.get(own_name, ())):
            own.append(image)
        else:
            wrong.append(f"{image} (this release publishes {images[own_name]})")
    if wrong:
        raise ChartError(
            f"chart {chart} references {', '.join(wrong)}, which this release does not publish: build the chart's "
            "own image references from global.imageRegistry and global.imageTag, or fix the reference"
        )
    check = ChartImageCheck(chart=chart, own=tuple(own), external=tuple(external))
    unpinned = [item.image for item in external if not item.pinned]
    if policy == "require-digest" and unpinned:
        raise ChartError(
            f"chart {chart} uses external images not pinned by digest: {', '.join(unpinned)}; pin each by digest "
            "(image:tag@sha256:...), or set external_images: allow in the release config"
        )
    if policy == "deny" and external:
        raise ChartError(
            f"chart {chart} uses images this release does not build: {', '.join(i.image for i in external)}; "
            "remove them from the chart, or set external_images: allow (or require-digest) in the release config"
        )
    return check
