"""A promotion's preflight: everything read and checked before anything is copied.

Reads only, a request or a cosign process each: the release's images at the tag and its charts at the
version at the source (a tag that is not all there fails, naming what is missing), whether the
release is signed (a HEAD on one ``.sig`` tag per image), the signing key when it is (missing: one
line, nothing copied; another key than the release's: the source's own signature does not verify
with it, one line), and the destination's answer to the credentials.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tasks.core.errors import ChartError, ConfigError, RegistryError, SigningError
from tasks.oci.references import Reference
from tasks.oci.registry import Registries
from tasks.promote.context import PromotionFacts, PromotionRequest
from tasks.promote.plan import chart_names, image_moves, signing_requirement
from tasks.run.facts import Signer
from tasks.run.settings import Settings
from tasks.supplychain.cosign import Cosign, VerifyFailed
from tasks.supplychain.provenance import cosign_tag
from tasks.supplychain.signer import load_signer

REVISION_LABEL = "org.opencontainers.image.revision"


def source_images(request: PromotionRequest, registries: Registries) -> list[tuple[str, str]]:
    """``(name, digest)`` of each image of the release at the source; :class:`RegistryError` naming every
    image whose tag is not there."""
    moves = image_moves([i.name for i in request.config.images], tag=request.tag,
                        from_registry=request.from_registry, to_registry=request.to_registry)

    def digest(ref: str) -> str:
        api, target = registries.for_ref(ref)
        with api:
            return api.digest(target.repository, target.tag)

    with ThreadPoolExecutor(max_workers=max(1, min(8, len(moves)))) as pool:
        digests = list(pool.map(lambda move: digest(move.source), moves))
    missing = [move.source for move, found in zip(moves, digests, strict=True) if not found]
    if missing:
        raise RegistryError(f"the release {request.tag} is not all at {request.from_registry}: {', '.join(missing)} "
                            "is missing; promote a release that is published there, or fix --from or --config")
    return [(move.name, found) for move, found in zip(moves, digests, strict=True)]


def source_charts(request: PromotionRequest, registries: Registries) -> list[tuple[str, str]]:
    """``(name, digest)`` of each chart of the release at the source: those ``--chart`` names, else every
    chart under the chart registry that has the tag's version (the registry's catalog)."""
    version = request.version.version
    remote = Reference.parse(f"{request.chart_from}/chart")
    prefix = remote.repository.rsplit("/", 1)[0]
    names = list(request.charts)
    if not names:
        if not request.config.charts:
            return []  # the release config publishes no chart
        with registries.api(remote.host) as api:
            try:
                listed = api.catalog(prefix + "/")
            except RegistryError as err:
                raise ConfigError(f"cannot list the charts at {request.chart_from} ({err}): name each chart of the "
                                  "release with --chart") from err
        names = chart_names(listed, prefix)
    found: list[tuple[str, str]] = []
    with registries.api(remote.host) as api:
        for name in names:
            digest = api.digest(f"{prefix}/{name}", version)
            if digest:
                found.append((name, digest))
            elif request.charts:
                raise ChartError(f"chart {name} {version} is not at {request.chart_from}: name a chart of the "
                                 "release, or fix --chart-registry-from")
    return found


def is_signed(request: PromotionRequest, registries: Registries, images: list[tuple[str, str]]) -> bool:
    """Whether the release at the source is signed: one of its images' manifests has cosign's signature tag."""
    for name, digest in images:
        api, target = registries.for_ref(f"{request.from_registry}/{name}")
        with api:
            if api.digest(target.repository, cosign_tag(digest, "sig")):
                return True
    return False


def check_key(signer: Signer, settings: Settings, registries: Registries, ref: str) -> None:
    """The configured key is the release's: the source's signature of ``ref`` verifies with it."""
    host = Reference.parse(ref).host
    with Cosign(settings, host, schemes=registries.schemes, public_pem=signer.public_pem) as tool:
        try:
            tool.verify(ref)
        except VerifyFailed as failed:
            raise SigningError(
                f"the configured signing key ({signer.fingerprint[:19]}) is not the release's: the signature of "
                f"{ref} at the source does not verify with it ({failed.reason}); set FMA_SIGNING_KEY to the key the "
                "release was signed with; nothing was copied") from failed


def revision_of(request: PromotionRequest, registries: Registries, images: list[tuple[str, str]]) -> str:
    """The source revision the first image's labels name ("" when none does): for the summary."""
    for name, _ in images[:1]:
        api, target = registries.for_ref(f"{request.from_registry}/{name}")
        with api:
            found = api.manifest(target.repository, request.tag)
            if found is None:
                return ""
            digest, manifest = found
            first = [str(m.get("digest")) for m in manifest.get("manifests") or []][:1] or [digest]
            image = api.manifest_and_config(target.repository, first[0])
            if image is not None:
                return image.labels.get(REVISION_LABEL, "")
    return ""


def check_destination(request: PromotionRequest, registries: Registries) -> None:
    """One ``GET /v2/`` per destination registry with the credentials: unreachable or refused fails here."""
    for ref in dict.fromkeys([request.to_registry, request.chart_to.removeprefix("oci://")]):
        target = Reference.parse(ref)
        with registries.api(target.host) as api:
            api.check_access(target.repository)


def promotion_preflight(request: PromotionRequest, settings: Settings, registries: Registries) -> PromotionFacts:
    """Read the release at the source and decide how it is promoted, before anything is copied."""
    settings.all_credentials()  # credentials bound to no host fail here
    images = source_images(request, registries)
    charts = source_charts(request, registries)
    signed = is_signed(request, registries, images)
    note = signing_requirement(signed=signed, key_configured=settings.signing_configured, tag=request.tag,
                               source=request.from_registry)
    signer = None
    if signed:
        signer = load_signer(settings)
        if charts:
            name, digest = charts[0]
            ref = f"{request.chart_from.removeprefix('oci://')}/{name}@{digest}"
        else:
            name, digest = images[0]
            ref = f"{request.from_registry}/{name}@{digest}"
        check_key(signer, settings, registries, ref)
    check_destination(request, registries)
    return PromotionFacts(images=tuple(images), charts=tuple(charts), signed=signed, signer=signer,
                          revision=revision_of(request, registries, images), unsigned_note=note)
