"""What a release published: one model from the push tasks to the summary, the record and the events.

:class:`PushedImage` is a push task's outcome (one platform, or an image index with its
platforms); :class:`ReleaseResult` is the run's: the flow returns it, the release record stores
it, and the summary renders it. Its JSON form (``model_dump(mode="json")``) is the
``--summary-json`` document.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from tasks.core.status import Status
from tasks.run.config import DEFAULT_ENGINE, Engine
from tasks.run.facts import BaseUse


@dataclass(frozen=True)
class PushedImage:
    """One pushed manifest: a platform image, or an image index with its ``platforms``."""

    name: str
    ref: str
    digest: str
    status: Status = Status.PUSHED  # or ALREADY_PUBLISHED, DRY_RUN
    platform: str = ""  # the platform of this manifest ("" for an image index)
    # An image index's platform images, each with its own tag and digest.
    platforms: tuple[PushedImage, ...] = ()
    label: str = ""  # as ImageSpec.label; "" means the name

    @property
    def item(self) -> str:
        """How progress names it."""
        return self.label or self.name


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class PlatformResult(_Model):
    platform: str
    ref: str
    digest: str
    status: Status


class ImageResult(_Model):
    """An image of the summary: for a multi-platform image ``digest`` is its index's, and
    ``platforms`` lists each platform's own reference and digest."""

    name: str
    ref: str
    digest: str
    status: Status = Status.PUSHED
    platforms: tuple[PlatformResult, ...] = ()

    @classmethod
    def of(cls, image: PushedImage) -> ImageResult:
        return cls(
            name=image.name, ref=image.ref, digest=image.digest, status=image.status,
            platforms=tuple(
                PlatformResult(platform=p.platform, ref=p.ref, digest=p.digest, status=p.status)
                for p in (image.platforms or (image,))
            ),
        )

    @property
    def is_index(self) -> bool:
        return len(self.platforms) > 1 or any(p.ref != self.ref for p in self.platforms)


class PublishedChart(_Model):
    name: str
    ref: str  # oci://host/path/charts/name
    version: str
    digest: str
    status: Status = Status.PUSHED  # or ALREADY_PUBLISHED, REPLACED, DRY_RUN


class ExternalImageResult(_Model):
    """An image a chart references that the release does not build (a sidecar, an inspector)."""

    chart: str
    image: str
    pinned: bool  # referenced by digest
    # The values switches that bring it in (global.produceCoverdata=true); [] when the chart's defaults use it.
    switches: tuple[str, ...] = ()


class SignatureResult(_Model):
    """One signed manifest: an image's index or platform manifest, or a chart."""

    artifact: str  # "requester", "requester linux/arm64", "chart fma-controllers"
    ref: str  # repository@digest
    digest: str
    signature: Status
    provenance: Status | None = None  # None: not attested (a chart)
    sbom: Status | None = None  # None: no SBOM (an image index, a chart)


class ProofRow(_Model):
    """One check of a staged release's proof, as the summary lists it."""

    check: str
    verdict: str  # passed, failed, skipped
    detail: str
    seconds: float = 0.0


class ReleaseResult(_Model):
    tag: str
    version: str
    prerelease: bool
    registry: str
    source_revision: str
    dry_run: bool = False
    notes: tuple[str, ...] = ()
    images: tuple[ImageResult, ...] = ()
    charts: tuple[PublishedChart, ...] = ()
    external_images: tuple[ExternalImageResult, ...] = ()
    # Supply chain: whether the run signed, with which key, what, and how anyone checks it.
    signed: bool = False
    public_key: str = ""  # sha256 of the public key's PEM
    signatures: tuple[SignatureResult, ...] = ()
    verify_command: str = ""
    # A staged release: where it was staged, and the proof that passed before it was promoted here.
    staged_at: str = ""
    proof: tuple[ProofRow, ...] = ()
    # The GitHub release this run published (--github-repo), or found published already.
    github_release: str = ""

    def summary(self) -> dict[str, object]:
        """The ``--summary-json`` document."""
        return self.model_dump(mode="json")

    def as_already_published(self, note: str) -> ReleaseResult:
        """This release, answered again: everything in it already published."""
        done = Status.ALREADY_PUBLISHED
        return self.model_copy(update={
            "images": tuple(
                i.model_copy(update={"status": done,
                                     "platforms": tuple(p.model_copy(update={"status": done}) for p in i.platforms)})
                for i in self.images
            ),
            "charts": tuple(c.model_copy(update={"status": done}) for c in self.charts),
            "signatures": tuple(s.model_copy(update={
                "signature": Status.ALREADY_SIGNED,
                "provenance": s.provenance and Status.ALREADY_SIGNED,
                "sbom": s.sbom and Status.ALREADY_SIGNED,
            }) for s in self.signatures),
            "notes": (note,),
        })


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
    # One platform of a multi-platform image: pushed by its digest alone, never under a tag of its own
    # (the image's tag is the index of its platforms).
    by_digest: bool = False
    layout: Path | None = None  # an OCI image layout, for a build outside any engine
    digest: str = ""  # the layout's top manifest (an image index for several platforms)
    # What the provenance attestation records (tasks/signing.py):
    # the base images, as the source writes them and as pulled (pinned where the builder pinned them)
    bases: tuple[BaseUse, ...] = ()
    sboms: tuple[Path, ...] = ()  # SBOMs the builder wrote itself (ko: one per platform and the index)
    started: str = ""  # when the build started and finished, RFC 3339 UTC
    finished: str = ""
    run_id: str = ""  # the flow run that built it (a cached build keeps its own run's) and its page
    run_url: str = ""
    goflags: tuple[str, ...] = ()  # a ko build's GOFLAGS, the cover flags computed at the tag among them
    cover_exclude: tuple[str, ...] | None = None  # a coverage build's exclusions (None: not built for coverage)

    @property
    def item(self) -> str:
        return self.label or self.name
