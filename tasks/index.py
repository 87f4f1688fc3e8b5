"""The tag of a multi-platform image: an OCI image index PUT through the registry's HTTP API.

Each platform's image was pushed by its digest alone (tasks/push.py), as ko's and buildx's are; the
index names each one's manifest by digest, with the platform read from that image's config blob
(what was built, not what was asked for), and is the only tag the image has. An index already in
place with the same entries is left alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from tasks.core import progress
from tasks.core.errors import ImagePushError
from tasks.core.status import Status
from tasks.oci.platforms import (
    INDEX_MEDIA_TYPE,
    IndexEntry,
    config_platform,
    image_index,
    index_entries,
    manifest_digest,
)
from tasks.oci.registry import Registries, RegistryAPI
from tasks.run.result import PushedImage
from tasks.run.retry import RetryPolicy

if TYPE_CHECKING:
    from tasks.run.context import RunContext


def index_entry(api: RegistryAPI, repository: str, image: PushedImage) -> IndexEntry:
    """One platform image's entry: its manifest's digest, size and media type, its config's platform."""
    found = api.manifest_and_config(repository, image.digest)
    if found is None:
        raise ImagePushError(
            image.name, f"{image.ref} ({image.digest}) is gone from the registry; re-run the release", transient=False
        )
    platform = config_platform(found.config)
    if (platform.os, platform.architecture) != tuple(image.platform.split("/")[:2]):
        raise ImagePushError(
            image.name,
            f"{image.ref} was built for {platform}, not {image.platform}: the engine built another platform; "
            "check the Dockerfile (the legacy builder needs COPY before any ARG or LABEL after FROM scratch)",
            transient=False,
        )
    return IndexEntry(digest=image.digest, size=len(found.body), media_type=found.media_type, platform=platform)


def publish_index(registries: Registries, name: str, ref: str, images: tuple[PushedImage, ...]) -> PushedImage:
    """Put the index of ``images`` under ``ref`` unless the same index is there already."""
    api, target = registries.for_ref(ref)
    with api:
        entries = [index_entry(api, target.repository, image) for image in images]
        body = image_index(entries)
        wanted = [(e.digest, e.platform) for e in entries]
        found = api.manifest(target.repository, target.tag)
        if found is not None and index_entries(found[1]) == wanted:
            return PushedImage(name=name, ref=ref, digest=found[0], status=Status.ALREADY_PUBLISHED, platforms=images)
        digest = api.put_manifest(target.repository, target.tag, body, INDEX_MEDIA_TYPE)
    return PushedImage(name=name, ref=ref, digest=digest or manifest_digest(body), platforms=images)


@task(
    name="index",
    task_run_name="index {name}",
    cache_policy=NONE,
    **RetryPolicy().task_options(),  # the flow sets the run's own (with_options)
)
def index_task(name: str, ref: str, images: tuple[PushedImage, ...], run: RunContext) -> PushedImage:
    """Publish a multi-platform image's tag as an OCI image index of its platform images."""
    log = get_run_logger()
    with progress.reporting(name, transient_state=Status.PUSH_FAILED):  # transient: retried
        published = publish_index(run.registries, name, ref, images)
    log.info("%s: image index %s (%s) of %s", ref, published.digest, published.status,
             ", ".join(f"{i.platform} {i.digest}" for i in images))
    done = Status.INDEX_PUSHED if published.status == Status.PUSHED else published.status
    progress.report(name, done, published.digest)
    return published
