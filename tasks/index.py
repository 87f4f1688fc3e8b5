"""The tag of a multi-platform image: an OCI image index PUT through the registry's HTTP API.

Each platform's image was pushed under a tag of its own (``<tag>-linux-arm64``); the index
names each one's manifest by digest, with the platform read from that image's config blob
(what was built, not what was asked for). An index already in place with the same entries
is left alone.
"""

from __future__ import annotations

import json

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from tasks import progress
from tasks.errors import ImagePushError, RegistryError
from tasks.images import PushedImage
from tasks.platforms import INDEX_MEDIA_TYPE, IndexEntry, config_platform, image_index, index_entries, manifest_digest
from tasks.registry import Reference, RegistryAPI
from tasks.retry import RetryPolicy


def index_entry(api: RegistryAPI, repository: str, image: PushedImage) -> IndexEntry:
    """One platform image's entry: its manifest's digest, size and media type, its config's platform."""
    found = api.manifest_bytes(repository, image.digest)
    if found is None:
        raise ImagePushError(
            image.name, f"{image.ref} ({image.digest}) is gone from the registry; re-run the release", transient=False
        )
    _, media_type, body = found
    manifest = json.loads(body)
    config = json.loads(api.blob(repository, manifest["config"]["digest"]))
    platform = config_platform(config)
    if (platform.os, platform.architecture) != tuple(image.platform.split("/")[:2]):
        raise ImagePushError(
            image.name,
            f"{image.ref} was built for {platform}, not {image.platform}: the engine built another platform; "
            "check the Dockerfile (the legacy builder needs COPY before any ARG or LABEL after FROM scratch)",
            transient=False,
        )
    return IndexEntry(digest=image.digest, size=len(body), media_type=media_type or manifest.get("mediaType", ""),
                      platform=platform)


def publish_index(name: str, ref: str, images: tuple[PushedImage, ...]) -> PushedImage:
    """Put the index of ``images`` under ``ref`` unless the same index is there already."""
    target = Reference.parse(ref)
    with RegistryAPI(target.host) as api:
        entries = [index_entry(api, target.repository, image) for image in images]
        body = image_index(entries)
        wanted = [(e.digest, e.platform) for e in entries]
        found = api.manifest(target.repository, target.tag)
        if found is not None and index_entries(found[1]) == wanted:
            return PushedImage(name=name, ref=ref, digest=found[0], status="already published", platforms=images)
        digest = api.put_manifest(target.repository, target.tag, body, INDEX_MEDIA_TYPE)
    return PushedImage(name=name, ref=ref, digest=digest or manifest_digest(body), platforms=images)


@task(
    name="index",
    task_run_name="index {name}",
    cache_policy=NONE,
    **RetryPolicy().task_options(),
)
def index_task(name: str, ref: str, images: tuple[PushedImage, ...]) -> PushedImage:
    """Publish a multi-platform image's tag as an OCI image index of its platform images."""
    log = get_run_logger()
    try:
        published = publish_index(name, ref, images)
    except (ImagePushError, RegistryError) as err:
        progress.report(name, "push failed" if err.transient else "failed", str(err))  # transient: retried
        raise
    log.info("%s: image index %s (%s) of %s", ref, published.digest, published.status,
             ", ".join(f"{i.platform} {i.digest}" for i in images))
    progress.report(name, published.status if published.status != "pushed" else "index pushed", published.digest)
    return published
