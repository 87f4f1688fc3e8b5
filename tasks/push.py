"""The pusher: one task publishes a build's image, whatever the builder made of it.

An engine image is pushed by its engine (the digest comes from the stream's ``aux.Digest``).
Transient faults are retried by the task's policy (the run's ``--push-attempts``); a retry
first asks the registry whether the last attempt landed after all.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker
import docker.errors
import requests.exceptions
import urllib3.exceptions
from prefect import get_run_logger, task
from prefect.cache_policies import NONE
from prefect.runtime import task_run as current_task_run

from tasks.control.records import note_platform, noted_platform
from tasks.core import progress
from tasks.core.errors import EngineError, ImageMissingError, ImagePushError
from tasks.core.redact import install_log_filter, redact
from tasks.core.status import Status
from tasks.oci.archive import layout_from_archive
from tasks.oci.layout import OciLayout, platform_name, push_layout, read_layout
from tasks.oci.platforms import manifest_digest
from tasks.oci.references import Reference
from tasks.oci.registry import ImageManifest, Registries, RegistryAPI
from tasks.run.engines import local_image_id, stream_error
from tasks.run.plan import FINGERPRINT_LABEL, ImageSpec
from tasks.run.result import BuiltImage, PushedImage
from tasks.run.retry import RetryPolicy, push_error

if TYPE_CHECKING:
    from tasks.run.context import RunContext


def _image_of(api: RegistryAPI, repository: str, reference: str, fingerprint: str) -> ImageManifest | None:
    """The image manifest ``reference`` names when its config carries ``fingerprint``, else ``None``."""
    image = api.manifest_and_config(repository, reference)
    return image if image is not None and image.labels.get(FINGERPRINT_LABEL) == fingerprint else None


def published_tag(registries: Registries, spec: ImageSpec | BuiltImage) -> PushedImage | None:
    """The image at ``spec.ref`` (a build's, or what a build made) when the registry holds exactly this
    build there, with its platforms as the registry lists them (an image index, as ko makes, is this build
    when each of its platform images carries the fingerprint): the same rows a push of it gives."""
    if not spec.fingerprint:
        return None
    api, target = registries.for_ref(spec.ref)
    path = Reference.parse(spec.ref).path
    with api:
        found = api.manifest(target.repository, target.tag)
        if found is None:
            return None
        digest, manifest = found
        if "manifests" not in manifest:
            image = _image_of(api, target.repository, digest, spec.fingerprint)
            if image is None:
                return None
            return PushedImage(name=spec.name, ref=spec.ref, digest=digest, status=Status.ALREADY_PUBLISHED,
                               platform=platform_name(image.config), label=spec.label)
        platforms = []
        for entry in manifest.get("manifests") or []:
            entry_digest = str(entry.get("digest"))
            image = _image_of(api, target.repository, entry_digest, spec.fingerprint)
            if image is None:
                return None
            platform = platform_name(entry.get("platform") or image.config)
            platforms.append(PushedImage(name=spec.name, ref=f"{path}@{entry_digest}", digest=entry_digest,
                                         status=Status.ALREADY_PUBLISHED, platform=platform,
                                         label=f"{spec.name} {platform}"))
    several = len(platforms) > 1
    return PushedImage(name=spec.name, ref=spec.ref, digest=digest, status=Status.ALREADY_PUBLISHED,
                       platform="" if several else platforms[0].platform if platforms else "",
                       platforms=tuple(platforms) if several else (), label=spec.label)


def published_platform(registries: Registries, spec: ImageSpec, state_dir: Path | None = None) -> PushedImage | None:
    """One platform of a multi-platform image when the registry holds exactly this build of it: found
    through the index at the image's tag (platform images are pushed by digest), else as a run noted it
    when it pushed it (a run that failed before the index: tasks/control/records.py), else under the tag of
    its own that releases made before platform images went by digest (``<tag>-linux-arm64``)."""
    if not spec.fingerprint:
        return None
    api, target = registries.for_ref(spec.index_ref)
    path = Reference.parse(spec.index_ref).path
    with api:
        found = api.manifest(target.repository, target.tag)
        for entry in (found[1].get("manifests") or []) if found is not None else []:
            if platform_name(entry.get("platform") or {}) != spec.platform:
                continue
            entry_digest = str(entry.get("digest"))
            if _image_of(api, target.repository, entry_digest, spec.fingerprint) is not None:
                return PushedImage(name=spec.name, ref=f"{path}@{entry_digest}", digest=entry_digest,
                                   status=Status.ALREADY_PUBLISHED, platform=spec.platform, label=spec.label)
        noted = noted_platform(state_dir, path, spec.fingerprint) if state_dir is not None else ""
        image = _image_of(api, target.repository, noted, spec.fingerprint) if noted else None
        if image is None:
            own = Reference.parse(spec.ref)
            image = _image_of(api, own.repository, own.reference, spec.fingerprint)
    if image is None:
        return None
    digest = image.digest or manifest_digest(image.body)
    return PushedImage(name=spec.name, ref=f"{path}@{digest}", digest=digest,
                       status=Status.ALREADY_PUBLISHED, platform=spec.platform, label=spec.label)


def published_image(registries: Registries, spec: ImageSpec, state_dir: Path | None = None) -> PushedImage | None:
    """What the registry holds of exactly this build (same fingerprint label), else ``None``."""
    if spec.index_ref:
        return published_platform(registries, spec, state_dir)
    return published_tag(registries, spec)


def published_images(specs: Sequence[ImageSpec], registries: Registries,
                     state_dir: Path | None = None) -> list[PushedImage]:
    """The images (and platforms) the registry holds exactly as this run would build them (same fingerprint
    label), with their real platforms and digests: a re-run gives them no build or push step. Reads only,
    so all are asked at once; ``state_dir``: where pushed platforms are noted."""
    if not specs:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(specs))) as pool:
        found = list(pool.map(lambda spec: published_image(registries, spec, state_dir), specs))
    kept = [image for image in found if image is not None]
    for image in kept:
        progress.report(image.item, Status.ALREADY_PUBLISHED, image.digest)
    return kept


def still_there(built: BuiltImage, run: RunContext) -> bool:
    """Whether what a build made is still where its result says (a cached result outlives its image when
    the engine pruned it, or its OCI layout was removed): a read, before anything is pushed."""
    if built.layout is not None:
        return (built.layout / "index.json").is_file()
    if not built.image_id:
        return False
    try:
        with run.engines.client(built.engine, timeout=30) as client:
            return local_image_id(client, built.ref) == built.image_id
    except EngineError:
        return True  # the push names the engine; a rebuild could not reach it either


def push_engine_image(client: docker.APIClient, built: BuiltImage, run: RunContext, log: Any) -> PushedImage:
    """Push ``built.ref`` from its engine."""
    target = Reference.parse(built.ref)
    creds = run.settings.credentials(target.host)
    digest = ""
    try:
        stream = client.push(
            target.path, tag=target.tag,
            stream=True, decode=True, auth_config=creds.docker_auth() if creds else None,
        )
        for item in stream:
            status = str(item.get("status", ""))
            if status.startswith("Retrying"):
                log.info("%s | %s (the engine retries the layer itself)", built.item, status)
            if "aux" in item and isinstance(item["aux"], dict) and "Digest" in item["aux"]:
                digest = str(item["aux"]["Digest"])
            message = stream_error(item)
            if message is not None:
                raise push_error(built.name, built.ref, redact(message))
    except docker.errors.APIError as err:
        raise push_error(built.name, built.ref, redact(str(err.explanation or err))) from err
    except (requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError) as err:
        raise push_error(
            built.name, built.ref,
            f"no progress for {run.settings.push_stall_seconds:.0f}s: the push timed out (hung registry?)",
        ) from err
    except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError) as err:
        raise engine_lost(built, err) from err
    if not digest:
        raise ImagePushError(built.name, f"push of {built.ref} reported no digest; re-run the release", transient=True)
    return PushedImage(name=built.name, ref=built.ref, digest=digest, platform=built.platform, label=built.label)


def export_layout(client: docker.APIClient, built: BuiltImage, run: RunContext) -> Path:
    """The OCI layout of an engine image, read out of the engine once per image id (in the workspace):
    a retry pushes the same blobs without reading the engine again."""
    layout = run.open_workspace() / "engine-layouts" / built.image_id.removeprefix("sha256:")
    if (layout / "index.json").is_file():
        return layout
    layout.parent.mkdir(parents=True, exist_ok=True)
    archive = layout.with_name(f".{layout.name}.tar")
    try:
        with archive.open("wb") as out:
            for chunk in client.get_image(built.image_id, chunk_size=1 << 20):
                out.write(chunk)
        layout_from_archive(archive, layout)
    except docker.errors.APIError as err:
        raise push_error(built.name, built.ref, "the engine could not export the image: "
                         f"{redact(str(err.explanation or err))}") from err
    except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError) as err:
        raise engine_lost(built, err) from err
    finally:
        archive.unlink(missing_ok=True)
    return layout


def push_by_digest(client: docker.APIClient, built: BuiltImage, run: RunContext, log: Any) -> PushedImage:
    """Push one platform of a multi-platform image by its digest alone, as ko and ``docker buildx build
    --push`` do: the image's tag will be the index of its platforms, and no platform gets a tag of its own."""
    log.info("%s | read out of the engine as an OCI layout, to be pushed by digest (no tag of its own)", built.item)
    layout = read_layout(export_layout(client, built, run))
    log.info("%s | %s: %s", built.item, layout.platforms[0][0], layout.digest)
    path = Reference.parse(built.ref).path
    api, _ = run.registries.for_ref(built.ref)
    with api:
        digest = push_layout(layout, f"{path}@{layout.digest}", api)
    return PushedImage(name=built.name, ref=f"{path}@{digest}", digest=digest, platform=built.platform,
                       label=built.label)


def push_layout_image(built: BuiltImage, run: RunContext) -> PushedImage:
    """Publish an OCI layout through the registry API; a multi-platform one with each platform listed."""
    if built.layout is None or not (built.layout / "index.json").is_file():
        raise ImageMissingError(built.name, f"the OCI layout of {built.ref} is gone; it will be rebuilt")
    layout = read_layout(built.layout)
    api, _ = run.registries.for_ref(built.ref)
    with api:
        push_layout(layout, built.ref, api)
    return layout_image(built, layout, Status.PUSHED)


def layout_image(built: BuiltImage, layout: OciLayout, status: Status) -> PushedImage:
    """What a layout is as a published image: its top digest under the build's tag, and each platform of
    an index by its digest (the platform images have no tags of their own)."""
    path = Reference.parse(built.ref).path
    platforms = tuple(PushedImage(name=built.name, ref=f"{path}@{d}", digest=d, status=status, platform=p,
                                  label=f"{built.name} {p}")
                      for p, d in layout.platforms) if len(layout.platforms) > 1 else ()
    single = layout.platforms[0][0] if len(layout.platforms) == 1 else ""
    return PushedImage(name=built.name, ref=built.ref, digest=layout.digest, status=status, platform=single,
                       platforms=platforms, label=built.label)


def engine_lost(built: BuiltImage, err: BaseException) -> EngineError:
    """The Docker engine's connection broke while it pushed: the engine went away (a restart), which the preflight
    saw answering, so the push is tried again as the run's push policy says."""
    first = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
    return EngineError(f"push of {built.ref}: the connection to the Docker engine broke ({first})", transient=True)


def push_built(built: BuiltImage, run: RunContext, log: Any) -> PushedImage:
    """Publish what a builder made: an OCI layout through the registry API, an engine image through its engine."""
    if built.layout is not None:
        return push_layout_image(built, run)
    with run.engines.client(built.engine, timeout=run.settings.push_stall_seconds) as client:
        if not built.image_id or local_image_id(client, built.ref) != built.image_id:
            raise ImageMissingError(
                built.name, f"image {built.ref} is not in the Docker engine any more; it will be rebuilt"
            )
        if built.by_digest:
            return push_by_digest(client, built, run, log)
        return push_engine_image(client, built, run, log)


@task(
    name="push",
    task_run_name="push {built.label}",
    cache_policy=NONE,
    **RetryPolicy().task_options(),  # the flow sets the run's own (with_options)
)
def push_task(built: BuiltImage, run: RunContext) -> PushedImage:
    """Push one image; transient faults are retried (a retry first asks whether the last attempt landed),
    auth errors are not."""
    install_log_filter()
    log = get_run_logger()
    attempt = current_task_run.run_count
    with progress.reporting(built.item, transient_state=Status.PUSH_FAILED):
        # The flow asked the registry just before submitting this push. A retry asks again: an
        # earlier attempt's manifest PUT may have succeeded with its answer lost.
        # A platform pushed by digest is pushed again instead: what is there already is not sent twice.
        there = published_tag(run.registries, built) if attempt > 1 and not built.by_digest else None
        if there is not None:
            log.info("%s is already in the registry with the same inputs (%s): not pushed", built.ref, there.digest)
            progress.report(built.item, Status.ALREADY_PUBLISHED, there.digest)
            return there
        progress.report(built.item, Status.RETRYING if attempt > 1 else Status.PUSHING,
                        f"attempt {attempt}" if attempt > 1 else "")
        try:
            pushed = push_built(built, run, log)
        except EngineError as err:  # reached in the preflight, lost since: a restart, which the policy outlasts
            raise EngineError(str(err), transient=True) from err
        if built.by_digest:  # nothing in the registry leads to it until the index is there
            note_platform(run.settings.state_dir, Reference.parse(built.ref).path, built.fingerprint, pushed.digest)
    progress.report(built.item, Status.PUSHED, pushed.digest)
    return pushed
