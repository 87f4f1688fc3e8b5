"""OCI image layouts on disk: read one, and publish it to a registry byte for byte.

A layout (image-spec ``image-layout.md``) is a directory with ``oci-layout``, ``index.json`` and
``blobs/<algorithm>/<hex>``. ``index.json`` lists the top manifest: for a multi-platform build an
image index (whose entries are the platform images), else one image manifest. The pusher sends
every blob the registry lacks, each platform manifest by digest, then the top manifest under the
tag, all with the layout's own bytes, so the registry's digests are the builder's.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.core.errors import LayoutError, RegistryError
from tasks.oci.references import Reference
from tasks.oci.registry import RegistryAPI

INDEX_TYPES = frozenset(
    {"application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"}
)
IMAGE_TYPES = frozenset(
    {"application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"}
)

log = logging.getLogger("fma_release.layout")


@dataclass(frozen=True)
class OciLayout:
    """A built image as an OCI image layout directory."""

    path: Path
    digest: str  # the top manifest: an image index for several platforms, else the image manifest
    media_type: str
    platforms: tuple[tuple[str, str], ...]  # (os/arch[/variant], manifest digest) per platform
    sboms: tuple[Path, ...] = ()  # SBOM files the builder wrote beside the layout, if any


def platform_name(platform: dict[str, Any]) -> str:
    """``os/arch[/variant]`` of an OCI platform object (or an image config)."""
    parts = [str(platform.get("os", "")), str(platform.get("architecture", ""))]
    if platform.get("variant"):
        parts.append(str(platform["variant"]))
    return "/".join(parts)


def blob_path(layout: Path, digest: str) -> Path:
    algorithm, _, encoded = digest.partition(":")
    if not algorithm or not encoded or "/" in encoded or "/" in algorithm:
        raise LayoutError(f"layout {layout} names a malformed digest {digest!r}: rebuild the image")
    return layout / "blobs" / algorithm / encoded


def read_blob(layout: Path, digest: str) -> bytes:
    """A blob's bytes, checked against its digest; :class:`LayoutError` when missing or corrupt."""
    path = blob_path(layout, digest)
    try:
        data = path.read_bytes()
    except FileNotFoundError as err:
        raise LayoutError(f"layout {layout} lacks blob {digest}: rebuild the image") from err
    algorithm = digest.partition(":")[0]
    if algorithm in ("sha256", "sha512") and f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}" != digest:
        raise LayoutError(f"layout {layout}: blob {digest} does not match its digest: rebuild the image")
    return data


def _json(layout: Path, digest: str) -> dict[str, Any]:
    try:
        document = json.loads(read_blob(layout, digest))
    except json.JSONDecodeError as err:
        raise LayoutError(f"layout {layout}: manifest {digest} is not JSON: rebuild the image") from err
    if not isinstance(document, dict):
        raise LayoutError(f"layout {layout}: manifest {digest} is not a JSON object: rebuild the image")
    return document


def top_descriptor(layout: Path) -> dict[str, Any]:
    """The one manifest ``index.json`` lists (a layout per build holds exactly one)."""
    try:
        index = json.loads((layout / "index.json").read_text())
    except FileNotFoundError as err:
        raise LayoutError(f"{layout} is not an OCI image layout (no index.json): build the image first") from err
    except json.JSONDecodeError as err:
        raise LayoutError(f"{layout}/index.json is not JSON: rebuild the image") from err
    manifests = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(manifests, list) or len(manifests) != 1 or not isinstance(manifests[0], dict):
        count = len(manifests) if isinstance(manifests, list) else 0
        raise LayoutError(
            f"{layout}/index.json lists {count} manifests, expected one: build each image into a layout of its own"
        )
    descriptor = manifests[0]
    if descriptor.get("mediaType") not in INDEX_TYPES | IMAGE_TYPES or not descriptor.get("digest"):
        raise LayoutError(
            f"{layout}/index.json points at a {descriptor.get('mediaType')!r}, not an image or an index: "
            "rebuild the image"
        )
    return descriptor


def read_layout(path: Path, sboms: tuple[Path, ...] = ()) -> OciLayout:
    """Describe the image in the layout at ``path``: its top digest and its platforms."""
    descriptor = top_descriptor(path)
    digest, media_type = str(descriptor["digest"]), str(descriptor["mediaType"])
    manifest = _json(path, digest)
    if media_type in INDEX_TYPES:
        platforms = tuple(
            (platform_name(entry.get("platform") or {}), str(entry["digest"]))
            for entry in manifest.get("manifests") or []
            if entry.get("mediaType") in IMAGE_TYPES
        )
    else:
        config = json.loads(read_blob(path, str(manifest["config"]["digest"])))
        platforms = ((platform_name(config), digest),)
    return OciLayout(path=path, digest=digest, media_type=media_type, platforms=platforms, sboms=sboms)


# -- push ----------------------------------------------------------------------------


def checked_blob(layout: Path, digest: str) -> Path:
    """A blob's file, checked against its digest a chunk at a time (a layer may not fit in memory);
    :class:`LayoutError` when missing or corrupt."""
    path = blob_path(layout, digest)
    algorithm = digest.partition(":")[0]
    hasher = hashlib.new(algorithm) if algorithm in ("sha256", "sha512") else None
    try:
        with path.open("rb") as blob:
            while hasher is not None and (chunk := blob.read(1 << 20)):
                hasher.update(chunk)
    except FileNotFoundError as err:
        raise LayoutError(f"layout {layout} lacks blob {digest}: rebuild the image") from err
    if hasher is not None and f"{algorithm}:{hasher.hexdigest()}" != digest:
        raise LayoutError(f"layout {layout}: blob {digest} does not match its digest: rebuild the image")
    return path


def _push_blob(api: RegistryAPI, repository: str, layout: Path, *, digest: str, counts: dict[str, int]) -> None:
    if api.blob_exists(repository, digest):
        counts["present"] += 1
        return
    api.upload_blob(repository, digest, checked_blob(layout, digest))
    counts["uploaded"] += 1


def _push_manifest(
    api: RegistryAPI, repository: str, layout: Path, *, descriptor: dict[str, Any], reference: str,
    counts: dict[str, int],
) -> None:
    """Push what ``descriptor`` needs, then the manifest itself under ``reference`` (a tag or its digest)."""
    digest, media_type = str(descriptor["digest"]), str(descriptor["mediaType"])
    body = read_blob(layout, digest)
    manifest = json.loads(body)
    if media_type in INDEX_TYPES:
        for child in manifest.get("manifests") or []:
            if child.get("mediaType") not in INDEX_TYPES | IMAGE_TYPES:
                raise LayoutError(
                    f"layout {layout}: index {digest} holds a {child.get('mediaType')!r}; only images and "
                    "indexes can be pushed: rebuild the image"
                )
            if api.digest(repository, str(child["digest"])):
                continue  # that platform's image (and so its blobs) is there already
            _push_manifest(api, repository, layout, descriptor=child, reference=str(child["digest"]), counts=counts)
    elif media_type in IMAGE_TYPES:
        blobs = [manifest["config"], *(manifest.get("layers") or [])]
        for blob in blobs:
            _push_blob(api, repository, layout, digest=str(blob["digest"]), counts=counts)
    stored = api.put_manifest(repository, reference, body, media_type)
    if stored and stored != digest:
        raise RegistryError(
            f"registry {api.host} stored {repository}@{digest} as {stored}: it rewrote the manifest; "
            "use a registry that keeps manifests byte for byte"
        )


def push_layout(layout: OciLayout, ref: str, api: RegistryAPI) -> str:
    """Publish ``layout`` as ``ref`` (``host/repository:tag``, or ``host/repository@digest`` to push it by
    its digest alone) through ``api``; the digest of the top manifest.

    Blobs already in the repository are not sent again (HEAD first), so a re-push uploads nothing.
    Faults are :class:`RegistryError`; ``transient`` ones (5xx, 429, dropped connections) are worth
    a retry of the whole push, which resumes where it stopped.
    """
    reference = Reference.parse(ref)
    if reference.host != api.host:
        raise RegistryError(f"cannot push {ref} through a client of {api.host}: open one for {reference.host}")
    if reference.digest and reference.digest != layout.digest:
        raise LayoutError(f"cannot push {layout.path} as {ref}: it holds {layout.digest}")
    tag = reference.reference  # the tag; or the digest alone, which leaves no tag behind
    descriptor = top_descriptor(layout.path)
    if descriptor["digest"] != layout.digest:
        raise LayoutError(
            f"layout {layout.path} now holds {descriptor['digest']}, not the built {layout.digest}: rebuild the image"
        )
    counts = {"uploaded": 0, "present": 0}
    _push_manifest(api, reference.repository, layout.path, descriptor=descriptor, reference=tag, counts=counts)
    log.info(
        "pushed %s@%s (%d blob(s) uploaded, %d already there)", ref, layout.digest, counts["uploaded"],
        counts["present"],
    )
    return layout.digest
