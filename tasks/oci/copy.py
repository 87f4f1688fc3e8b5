"""Copy a tagged image from one repository to another by digest, with what is attached to it.

What moves is what the source stores, byte for byte: the manifest the tag points at (an image index
and each of its platform manifests, or one image manifest), every blob they name, and what is
attached to each of those digests: cosign's ``sha256-<hex>.sig`` / ``.att`` / ``.sbom`` tags and the
OCI referrers (the referrers API, or the ``sha256-<hex>`` tag of its fallback schema). So every
digest at the target is the source's, and a signature made at the source verifies at the target.

Order: a manifest's blobs before it, an index's platform manifests before the index, a digest's
attachments right after it, the tags last; a tag at the target never points at something missing
or unsigned. What the target already holds is not sent again: a manifest there by digest (with
what it names, which the registry checked when it was put), a blob there, an attachment tag
already at the source's digest. Within one registry host a blob is mounted from the source
repository (``POST .../blobs/uploads/?mount=&from=``) and never sent; between hosts it is read and
uploaded, through memory when small and a temporary file when not.

The pure parts (what is attached to a digest, a manifest's blobs and children, the referrers
index) are functions; :class:`ImageCopier` does the requests, through :class:`RegistryAPI`. Knows
nothing of a release.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.core.errors import RegistryError
from tasks.oci.layout import INDEX_TYPES
from tasks.oci.platforms import INDEX_MEDIA_TYPE, platform_tag
from tasks.oci.registry import RegistryAPI

log = logging.getLogger("fma_release.copy")

COSIGN_KINDS = ("sig", "att", "sbom")  # cosign's tags beside a digest: signatures, attestations, attached SBOMs
IN_MEMORY = 32 << 20  # blobs up to this size travel through memory, larger ones through a temporary file
MAX_DEPTH = 2  # attachments of attachments are followed this deep (a signed SBOM referrer, say)


# -- pure -----------------------------------------------------------------------------------------


def _hex(digest: str) -> tuple[str, str]:
    algorithm, _, encoded = digest.partition(":")
    if not algorithm or not encoded:
        raise ValueError(f"not a digest: {digest!r}")
    return algorithm, encoded


def cosign_tags(digest: str) -> list[str]:
    """The tags cosign keeps ``digest``'s signatures, attestations and attached SBOMs under."""
    algorithm, encoded = _hex(digest)
    return [f"{algorithm}-{encoded}.{kind}" for kind in COSIGN_KINDS]


def referrers_tag(digest: str) -> str:
    """The tag of the referrers tag schema (OCI distribution spec 1.1): an index of ``digest``'s referrers,
    for registries without the referrers API."""
    algorithm, encoded = _hex(digest)
    return f"{algorithm}-{encoded}"


def platform_tag_candidates(tags: Iterable[str], tag: str) -> list[str]:
    """The tags that may be a platform's own tag of ``tag`` (``v0.3.1-linux-arm64``, :func:`platform_tag`):
    ``<tag>-<os>-...``; which of them point at one of the index's manifests is asked of the registry."""
    prefix = platform_tag(tag, "x/y").removesuffix("x-y")
    return sorted(t for t in tags if t.startswith(prefix) and t.removeprefix(prefix)[:1].isalpha()
                  and not t.endswith((".sig", ".att", ".sbom")))


def is_index(media_type: str, manifest: dict[str, Any]) -> bool:
    return media_type in INDEX_TYPES or (not media_type and "manifests" in manifest)


def children(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The descriptors an index lists (``[]`` for anything else)."""
    return [m for m in manifest.get("manifests") or [] if isinstance(m, dict) and m.get("digest")]


def blobs(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The descriptors of the blobs an image manifest names: its config and its layers (foreign
    layers with ``urls`` stay where they are, as registries and clients leave them)."""
    found = [manifest.get("config") or {}, *(manifest.get("layers") or [])]
    return [d for d in found if isinstance(d, dict) and d.get("digest") and not d.get("urls")]


def merged_referrers(existing: dict[str, Any] | None, wanted: Iterable[dict[str, Any]]) -> bytes | None:
    """The referrers-schema index to put at the target: ``existing`` with the ``wanted`` descriptors it
    lacks; ``None`` when it lacks none."""
    current = children(existing or {})
    have = {str(d["digest"]) for d in current}
    missing = [d for d in wanted if str(d["digest"]) not in have]
    if not missing:
        return None
    body = {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": current + missing}
    return json.dumps(body, separators=(",", ":")).encode()


# -- the copier -------------------------------------------------------------------------------------


@dataclass
class CopyCounts:
    """What a copy did, and what it found already at the target."""

    manifests: int = 0  # put at the target (by digest)
    manifests_present: int = 0
    blobs_mounted: int = 0  # within one registry: no bytes sent
    blobs_uploaded: int = 0
    bytes_uploaded: int = 0
    blobs_present: int = 0
    tags: int = 0  # tags set at the target (the image's, its platforms', cosign's, the referrers index)
    tags_present: int = 0
    referrers: int = 0  # referrers found at the source (copied or present)

    @property
    def wrote(self) -> bool:
        """Whether the copy wrote anything at the target."""
        return bool(self.manifests or self.blobs_mounted or self.blobs_uploaded or self.tags)

    def describe(self) -> str:
        if not self.wrote:
            return "already there"
        parts = [f"{self.manifests} manifest(s)", f"{self.tags} tag(s)"]
        if self.blobs_mounted:
            parts.append(f"{self.blobs_mounted} blob(s) mounted")
        if self.blobs_uploaded:
            parts.append(f"{self.blobs_uploaded} blob(s) uploaded ({self.bytes_uploaded} bytes)")
        if self.blobs_present:
            parts.append(f"{self.blobs_present} blob(s) already there")
        return ", ".join(parts)


@dataclass(frozen=True)
class CopiedTag:
    """A tag copied: the digest it points at (the same at both ends), its top manifest, what the copy did."""

    tag: str
    digest: str
    media_type: str
    manifest: dict[str, Any]
    counts: CopyCounts
    platform_tags: tuple[tuple[str, str], ...] = ()  # (tag, digest) of each platform's own tag copied
    attached: tuple[tuple[str, str], ...] = field(default=())  # (cosign tag, its digest) at the target


class ImageCopier:
    """Copies tags of ``source_repository`` (through ``source``) to ``target_repository`` (through ``target``).

    Faults are :class:`RegistryError`, ``transient`` for 5xx, 429 and dropped connections: the whole
    copy is worth another try, which sends only what is still missing.
    """

    def __init__(self, source: RegistryAPI, source_repository: str, target: RegistryAPI, target_repository: str,
                 *, spool: Path | None = None) -> None:
        self.source, self.source_repository = source, source_repository
        self.target, self.target_repository = target, target_repository
        self.spool = spool
        self.counts = CopyCounts()
        self.same_host = source.host == target.host
        self._attached: list[tuple[str, str]] = []
        self._done: set[str] = set()  # digests whose tree and attachments this copier has handled

    def copy_tag(self, tag: str, *, platform_tags: bool = True) -> CopiedTag:
        """Copy ``tag`` and everything under it; with ``platform_tags``, also each platform's own tag
        (``<tag>-linux-arm64``) that the source has and that points at one of the index's manifests."""
        found = self.source.manifest_bytes(self.source_repository, tag)
        if found is None:
            raise RegistryError(f"{self.source.host}/{self.source_repository}:{tag} does not exist: "
                                "copy a tag that is published")
        digest, media_type, body = found
        manifest = json.loads(body)
        there = self.target.digest(self.target_repository, tag) == digest
        self._tree(digest, media_type, body, depth=0, present=there)
        copied_platforms: list[tuple[str, str]] = []
        if platform_tags and is_index(media_type, manifest):
            entries = {str(child["digest"]): str(child.get("mediaType", "")) for child in children(manifest)}
            for name in platform_tag_candidates(self.source.tags(self.source_repository), tag):
                child_digest = self.source.digest(self.source_repository, name)
                if child_digest in entries:
                    self._tag(name, child_digest, entries[child_digest])
                    copied_platforms.append((name, child_digest))
        if there:
            self.counts.tags_present += 1
        else:
            self._put(tag, digest, media_type, body)
            self.counts.tags += 1
        log.info("copied %s:%s@%s to %s/%s: %s", self.source_repository, tag, digest, self.target.host,
                 self.target_repository, self.counts.describe())
        return CopiedTag(tag=tag, digest=digest, media_type=media_type, manifest=manifest, counts=self.counts,
                         platform_tags=tuple(copied_platforms), attached=tuple(self._attached))

    # -- manifests -------------------------------------------------------------------------------

    def _read(self, digest: str) -> tuple[str, bytes]:
        found = self.source.manifest_bytes(self.source_repository, digest)
        if found is None:
            raise RegistryError(f"{self.source.host}/{self.source_repository}@{digest} is named but not stored at "
                                "the source: the source repository is incomplete")
        return found[1], found[2]

    def _tree(self, digest: str, media_type: str, body: bytes | None, *, depth: int, present: bool = False) -> None:
        """``digest``'s manifest at the target (its blobs or platform manifests first), then its attachments.

        ``present``: the target's tag already points at it, so the manifests are there (a registry
        keeps nothing that names what it lacks): only the attachments are looked at.
        """
        if digest in self._done:
            return
        self._done.add(digest)
        if body is None and not (present and media_type and media_type not in INDEX_TYPES):
            media_type, body = self._read(digest)  # a platform manifest already there needs no reading
        manifest = json.loads(body) if body is not None else {}
        if not present and self.target.digest(self.target_repository, digest) == digest:
            present = True
            self.counts.manifests_present += 1
        if is_index(media_type, manifest):
            for child in children(manifest):
                self._tree(str(child["digest"]), str(child.get("mediaType", "")), None, depth=depth, present=present)
        elif not present:
            for blob in blobs(manifest):
                self._blob(str(blob["digest"]), int(blob.get("size") or 0))
        if not present and body is not None:
            self._put(digest, digest, media_type, body)
            self.counts.manifests += 1
        if depth < MAX_DEPTH:
            self._attachments(digest, depth)

    def _put(self, reference: str, digest: str, media_type: str, body: bytes) -> None:
        stored = self.target.put_manifest(self.target_repository, reference, body, media_type)
        if stored and stored != digest:
            raise RegistryError(
                f"registry {self.target.host} stored {self.target_repository}@{digest} as {stored}: it rewrote "
                "the manifest; use a registry that keeps manifests byte for byte"
            )

    def _tag(self, tag: str, digest: str, media_type: str) -> None:
        """Point ``tag`` at ``digest`` (already at the target) unless it does."""
        if self.target.digest(self.target_repository, tag) == digest:
            self.counts.tags_present += 1
            return
        stored_type, body = self._read(digest)
        self._put(tag, digest, stored_type or media_type, body)
        self.counts.tags += 1

    # -- attachments -----------------------------------------------------------------------------

    def _attachments(self, digest: str, depth: int) -> None:
        for tag in cosign_tags(digest):
            attached = self.source.digest(self.source_repository, tag)
            if not attached:
                continue
            self._tree(attached, "", None, depth=depth + 1)
            self._tag(tag, attached, "")
            self._attached.append((tag, attached))
        self._referrers(digest, depth)

    def _referrers(self, digest: str, depth: int) -> None:
        listed = self.source.referrers(self.source_repository, digest)
        if listed is None:  # no referrers API at the source: its fallback tag, if there is one
            found = self.source.manifest_bytes(self.source_repository, referrers_tag(digest))
            listed = children(json.loads(found[2])) if found else []
        if not listed:
            return
        self.counts.referrers += len(listed)
        for descriptor in listed:
            self._tree(str(descriptor["digest"]), str(descriptor.get("mediaType", "")), None, depth=depth + 1)
        if self.target.referrers(self.target_repository, digest) is not None:
            return  # the target indexes them itself, from each manifest's subject
        existing = self.target.manifest(self.target_repository, referrers_tag(digest))
        merged = merged_referrers(existing[1] if existing else None, listed)
        if merged is not None:
            self.target.put_manifest(self.target_repository, referrers_tag(digest), merged, INDEX_MEDIA_TYPE)
            self.counts.tags += 1

    # -- blobs -----------------------------------------------------------------------------------

    def _blob(self, digest: str, size: int) -> None:
        if self.target.blob_exists(self.target_repository, digest):
            self.counts.blobs_present += 1
            return
        location = ""
        if self.same_host:
            location = self.target.mount_blob(self.target_repository, digest, self.source_repository)
            if not location:
                self.counts.blobs_mounted += 1
                return
            log.info("registry %s did not mount %s from %s: sending its bytes", self.target.host, digest,
                     self.source_repository)
        with self._spooled(size) as data:
            sent = self.source.fetch_blob(self.source_repository, digest, data)
            data.seek(0)
            payload: Any = data.getvalue() if isinstance(data, io.BytesIO) else data
            if location:
                self.target.finish_upload(self.target_repository, location, digest, payload)
            else:
                self.target.upload_blob(self.target_repository, digest, payload)
        self.counts.blobs_uploaded += 1
        self.counts.bytes_uploaded += sent

    def _spooled(self, size: int) -> Any:
        """Where a blob waits between its download and its upload: memory when small, else a temporary file."""
        if 0 < size <= IN_MEMORY:
            return io.BytesIO()
        return tempfile.TemporaryFile(dir=self.spool)  # the caller's with-block closes it
