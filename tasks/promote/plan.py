"""What a promotion does and what it says (pure): which image goes where, whether it signs, which charts
are the release's, whether a packaged chart still names the source, and the destination's summary.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tasks.core.errors import SigningError
from tasks.core.status import Status
from tasks.oci.copy import CopiedTag, children, cosign_tags
from tasks.oci.layout import platform_name
from tasks.oci.references import Reference
from tasks.run.plan import image_ref
from tasks.run.result import (
    ExternalImageResult,
    ImageResult,
    PlatformResult,
    PublishedChart,
    ReleaseResult,
    SignatureResult,
)
from tasks.supplychain.provenance import manifests_to_sign
from tasks.supplychain.verify import verify_command_line


@dataclass(frozen=True)
class ImageMove:
    """One image of the release: where its tag is, and where it goes."""

    name: str
    source: str  # <from>/<name>:<tag>
    target: str  # <to>/<name>:<tag>

    @property
    def tag(self) -> str:
        return Reference.parse(self.source).tag


@dataclass(frozen=True)
class CopiedImage:
    """An image the promotion copied (or found copied already)."""

    name: str
    target: str
    copied: CopiedTag
    platform: str = ""  # a single-platform image's, from its config ("" for an index)


def image_moves(names: Iterable[str], *, tag: str, from_registry: str, to_registry: str) -> list[ImageMove]:
    """One move per image of the release config, in its order."""
    return [ImageMove(name=name, source=image_ref(from_registry, name, tag), target=image_ref(to_registry, name, tag))
            for name in names]


def signing_requirement(*, signed: bool, key_configured: bool, tag: str, source: str) -> str:
    """Whether a promotion may go on, and the note of an unsigned one (pure).

    A signed release stays signed: its images' signatures travel with them, and the chart, packaged
    again for the destination, must be signed with the release's key; without a key configured that
    fails here, before anything is copied. An unsigned release is promoted unsigned, key or not.
    """
    if signed and not key_configured:
        raise SigningError(
            f"the release {tag} at {source} is signed, and its chart, packaged again for the destination, must be "
            "signed with the same key: set FMA_SIGNING_KEY (or FMA_SIGNING_KEY_BLOCK) and FMA_SIGNING_PASSWORD to "
            "the release's key; nothing was copied")
    if signed:
        return ""
    return f"unsigned: the release {tag} at {source} is not signed, so neither is its promotion"


def chart_names(repositories: Iterable[str], prefix: str) -> list[str]:
    """The chart names among a registry's ``repositories`` directly under ``prefix`` (``org/fma/charts``), sorted."""
    start = prefix.rstrip("/") + "/"
    return sorted({r.removeprefix(start) for r in repositories
                   if r.startswith(start) and "/" not in r.removeprefix(start)})


def left_at_source(rendered: Iterable[str], *, from_registry: str, names: Iterable[str]) -> list[str]:
    """The rendered images that are still the release's own images at the source: a promoted chart must
    render only the destination's (pure)."""
    own = set()
    for name in names:
        try:
            own.add(Reference.docker(f"{from_registry}/{name}").path)
        except ValueError:
            continue
    found = []
    for image in sorted(set(rendered)):
        try:
            if Reference.docker(image).path in own:
                found.append(image)
        except ValueError:
            continue
    return found


def artifact_key(version: str, to_registry: str) -> str:
    """The Prefect artifact key of a promotion's summary: lowercase letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", f"promotion-{version}-{to_registry}".lower()).strip("-")[:100]


# -- the destination's summary -------------------------------------------------------------------


def image_result(image: CopiedImage) -> ImageResult:
    """The image at the destination: its tag's digest and, for an index, each platform's."""
    copied = image.copied
    status = Status.COPIED if copied.counts.wrote else Status.ALREADY_PUBLISHED
    path = Reference.parse(image.target).path
    platform_refs = {digest: f"{path}:{tag}" for tag, digest in copied.platform_tags}
    entries = children(copied.manifest)
    if not entries:
        alone = PlatformResult(platform=image.platform, ref=image.target, digest=copied.digest, status=status)
        return ImageResult(name=image.name, ref=image.target, digest=copied.digest, status=status, platforms=(alone,))
    platforms = tuple(
        PlatformResult(platform=platform_name(entry.get("platform") or {}),
                       ref=platform_refs.get(str(entry["digest"]), f"{path}@{entry['digest']}"),
                       digest=str(entry["digest"]), status=status)
        for entry in entries)
    return ImageResult(name=image.name, ref=image.target, digest=copied.digest, status=status, platforms=platforms)


def signature_results(image: CopiedImage) -> list[SignatureResult]:
    """What the promotion carried of each manifest's signature and attestations (none: nothing)."""
    copied = image.copied
    attached = {tag for tag, _ in copied.attached}
    status = Status.COPIED if copied.counts.wrote else Status.ALREADY_SIGNED
    path = Reference.parse(image.target).path
    results = []
    for manifest in manifests_to_sign(copied.digest, copied.manifest):
        sig, att, _ = cosign_tags(manifest.digest)
        if sig not in attached:
            continue
        artifact = image.name if manifest.is_index or not manifest.platform else f"{image.name} {manifest.platform}"
        has_att = att in attached
        results.append(SignatureResult(
            artifact=artifact, ref=f"{path}@{manifest.digest}", digest=manifest.digest, signature=status,
            provenance=status if has_att else None, sbom=status if has_att and manifest.wants_sbom else None))
    return results


def copy_note(images: Sequence[CopiedImage], *, from_registry: str, same_host: bool) -> str:
    """One line: where the release came from, and what the copy did (how many blobs were mounted or sent)."""
    counts = [image.copied.counts for image in images]
    wrote = sum(1 for c in counts if c.wrote)
    mounted = sum(c.blobs_mounted for c in counts)
    uploaded = sum(c.blobs_uploaded for c in counts)
    sent = sum(c.bytes_uploaded for c in counts)
    how = (f"{mounted} blob(s) mounted, {uploaded} uploaded ({sent} bytes)" if same_host
           else f"{uploaded} blob(s) uploaded ({sent} bytes)")
    if not wrote:
        return f"promoted from {from_registry}: every image was already there, nothing was copied"
    return f"promoted from {from_registry}: {wrote} of {len(images)} image(s) copied by digest, {how}"


@dataclass(frozen=True)
class Promoted:
    """What a promotion published at the destination, for its summary."""

    images: tuple[CopiedImage, ...]
    charts: tuple[PublishedChart, ...] = ()
    chart_signatures: tuple[SignatureResult, ...] = ()
    external: tuple[ExternalImageResult, ...] = ()


def promotion_result(  # noqa: PLR0913 - the parts of a summary, each from a step of its own
    promoted: Promoted, *, tag: str, version: str, prerelease: bool, to_registry: str, chart_to: str,
    from_registry: str, same_host: bool, revision: str, config_path: Path, public_key: str = "",
    notes: Sequence[str] = (),
) -> ReleaseResult:
    """The destination's summary: the release as it now stands at ``to_registry`` (pure)."""
    signed = bool(public_key)
    verify = verify_command_line(tag, registry=to_registry, chart_registry=chart_to, config_path=config_path,
                                 charts=[c.name for c in promoted.charts]) if signed else ""
    signatures = tuple(s for image in promoted.images for s in signature_results(image)) + promoted.chart_signatures
    return ReleaseResult(
        tag=tag, version=version, prerelease=prerelease, registry=to_registry, source_revision=revision,
        images=tuple(image_result(image) for image in promoted.images), charts=promoted.charts,
        external_images=promoted.external, signed=signed, public_key=public_key, signatures=signatures,
        verify_command=verify,
        notes=(copy_note(promoted.images, from_registry=from_registry, same_host=same_host), *notes),
    )
