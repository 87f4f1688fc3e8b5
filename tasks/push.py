"""The pusher: one task publishes a build's image, whatever the builder made of it.

An engine image is pushed by its engine (the digest comes from the stream's ``aux.Digest``).
Transient faults are retried by the task's policy (the run's ``--push-attempts``); a retry
first asks the registry whether the last attempt landed after all.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import docker
import docker.errors
import requests.exceptions
import urllib3.exceptions
from prefect import get_run_logger, task
from prefect.cache_policies import NONE
from prefect.runtime import task_run as current_task_run

from tasks.core import progress
from tasks.core.errors import EngineError, ImageMissingError, ImagePushError
from tasks.core.redact import install_log_filter, redact
from tasks.core.status import Status
from tasks.oci.layout import platform_name, push_layout, read_layout
from tasks.oci.references import Reference
from tasks.oci.registry import Registries
from tasks.run.engines import local_image_id, stream_error
from tasks.run.plan import FINGERPRINT_LABEL, ImageSpec
from tasks.run.result import BuiltImage, PushedImage
from tasks.run.retry import RetryPolicy, push_error

if TYPE_CHECKING:
    from tasks.run.context import RunContext


def published_manifest(registries: Registries, ref: str, fingerprint: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """The registry's digest of ``ref`` when it holds exactly this build, with ``(platform, digest)`` of each
    entry when it is an image index (as ko makes; it is this build when its platform images carry the
    fingerprint); ``("", ())`` when it does not."""
    if not fingerprint:
        return "", ()
    api, target = registries.for_ref(ref)
    with api:
        found = api.manifest(target.repository, target.tag)
        if found is None:
            return "", ()
        digest, manifest = found
        entries = [m for m in manifest.get("manifests") or [] if isinstance(m, dict)]
        for reference in [str(m.get("digest")) for m in entries] or [digest]:
            image = api.manifest_and_config(target.repository, reference)
            if image is None or image.labels.get(FINGERPRINT_LABEL) != fingerprint:
                return "", ()
    return digest, tuple((platform_name(m.get("platform") or {}), str(m.get("digest"))) for m in entries)


def already_published(image: ImageSpec | BuiltImage, digest: str, entries: tuple[tuple[str, str], ...]) -> PushedImage:
    """``image`` as the registry holds it already, listed as a pushed one is: an index with each platform image
    by digest (pure)."""
    name, ref, label, platform = image.name, image.ref, image.label, image.platform
    path = Reference.parse(ref).path
    platforms = tuple(PushedImage(name=name, ref=f"{path}@{d}", digest=d, platform=p, label=f"{name} {p}",
                                  status=Status.ALREADY_PUBLISHED) for p, d in entries) if len(entries) > 1 else ()
    return PushedImage(name=name, ref=ref, digest=digest, status=Status.ALREADY_PUBLISHED,
                       platform="" if platforms else platform, platforms=platforms, label=label)


def published_images(specs: Sequence[ImageSpec], registries: Registries) -> list[PushedImage]:
    """The images whose tag in the registry is exactly this build (same fingerprint label): a re-run
    gives them no build or push step. Reads only, so all are asked at once."""
    if not specs:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(specs))) as pool:
        found = list(pool.map(lambda spec: published_manifest(registries, spec.ref, spec.fingerprint), specs))
    kept = []
    for spec, (digest, entries) in zip(specs, found, strict=True):
        if digest:
            progress.report(spec.label, Status.ALREADY_PUBLISHED, digest)
            kept.append(already_published(spec, digest, entries))
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
        raise push_error(built.name, built.ref, f"connection to the engine failed: {err}") from err
    if not digest:
        raise ImagePushError(built.name, f"push of {built.ref} reported no digest; re-run the release", transient=True)
    return PushedImage(name=built.name, ref=built.ref, digest=digest, platform=built.platform, label=built.label)


def push_layout_image(built: BuiltImage, run: RunContext) -> PushedImage:
    """Publish an OCI layout through the registry API; a multi-platform one with each platform listed."""
    if built.layout is None or not (built.layout / "index.json").is_file():
        raise ImageMissingError(built.name, f"the OCI layout of {built.ref} is gone; it will be rebuilt")
    layout = read_layout(built.layout)
    api, _ = run.registries.for_ref(built.ref)
    with api:
        digest = push_layout(layout, built.ref, api)
    # The platform images of a layout's index have no tags of their own: they are named by digest.
    path = Reference.parse(built.ref).path
    platforms = tuple(PushedImage(name=built.name, ref=f"{path}@{d}", digest=d, platform=p, label=f"{built.name} {p}")
                      for p, d in layout.platforms) if len(layout.platforms) > 1 else ()
    single = layout.platforms[0][0] if len(layout.platforms) == 1 else ""
    return PushedImage(name=built.name, ref=built.ref, digest=digest, platform=single, platforms=platforms,
                       label=built.label)


def push_built(built: BuiltImage, run: RunContext, log: Any) -> PushedImage:
    """Publish what a builder made: an OCI layout through the registry API, an engine image through its engine."""
    if built.layout is not None:
        return push_layout_image(built, run)
    with run.engines.client(built.engine, timeout=run.settings.push_stall_seconds) as client:
        if not built.image_id or local_image_id(client, built.ref) != built.image_id:
            raise ImageMissingError(
                built.name, f"image {built.ref} is not in the Docker engine any more; it will be rebuilt"
            )
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
        digest, entries = (published_manifest(run.registries, built.ref, built.fingerprint) if attempt > 1
                           else ("", ()))
        if digest:
            log.info("%s is already in the registry with the same inputs (%s): not pushed", built.ref, digest)
            progress.report(built.item, Status.ALREADY_PUBLISHED, digest)
            return already_published(built, digest, entries)
        progress.report(built.item, Status.RETRYING if attempt > 1 else Status.PUSHING,
                        f"attempt {attempt}" if attempt > 1 else "")
        pushed = push_built(built, run, log)
    progress.report(built.item, Status.PUSHED, pushed.digest)
    return pushed
