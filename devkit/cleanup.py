"""Removing what tests and benchmarks left in the engine: every image named under a registry."""

from __future__ import annotations

import contextlib

import docker
import docker.errors


def remove_images(client: docker.APIClient, prefix: str) -> None:
    """Every image with a tag or digest reference starting with ``prefix`` (``host/``): a pulled image
    keeps its digest reference after its tag moves on. Untagged parents stay (``noprune``): another test's
    build running at the same moment may be using one as its cache for a step (seen: the legacy builder's
    ``unable to find image "sha256:…"`` at the step after a shared COPY)."""
    for image in client.images():
        for name in (image.get("RepoTags") or []) + (image.get("RepoDigests") or []):
            if name.startswith(prefix):
                with contextlib.suppress(docker.errors.ImageNotFound):  # gone with an earlier reference
                    client.remove_image(name, force=True, noprune=True)


def remove_registry_images(host: str) -> None:
    """:func:`remove_images` of ``host/`` on the local engine, with a client of its own."""
    client = docker.APIClient(version="auto")
    try:
        remove_images(client, f"{host}/")
    finally:
        client.close()
