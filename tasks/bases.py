"""Base images of a build, for its platform: resolved through the registry API, pulled by digest.

:func:`staged_dockerfile` is the one place a build's base images are resolved and pulled. The
engine's tags are never rewritten (a pull by digest tags nothing), so builds of several
platforms from one base run side by side; the Dockerfile the engine reads is a staging copy
whose ``FROM`` lines name the digests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions

from tasks.credentials import registry_credentials
from tasks.dockerfile import BaseImage, base_images, image_name, pin_bases
from tasks.errors import ImageBuildError, RegistryError
from tasks.platforms import config_platform, parse_platform, select_platform
from tasks.redact import redact
from tasks.registry import Reference, RegistryAPI


def platform_digest(image: str, platform: str, release_host: str) -> str:
    """The digest of ``image``'s manifest for ``platform`` (through its index when it has one).

    Credentials go only to the release's own registry; any other registry is read anonymously.
    """
    name = image_name(image)
    wanted = parse_platform(platform)
    with RegistryAPI(name.host, anonymous=name.host != release_host) as api:
        found = api.manifest(name.repository, name.reference)
        if found is None:
            raise RegistryError(f"base image {image} is not in its registry {name.host}: fix the FROM line")
        digest, manifest = found
        if "manifests" in manifest:
            chosen = select_platform(manifest, wanted)
            if not chosen:
                raise RegistryError(
                    f"base image {image} has no {platform} image: use a base published for {platform}, "
                    f"or remove {platform} from 'platforms'"
                )
            return chosen
        config = json.loads(api.blob(name.repository, manifest["config"]["digest"]))
    have = config_platform(config)
    if (have.os, have.architecture) != (wanted.os, wanted.architecture):
        raise RegistryError(
            f"base image {image} is a {have} image only, not {platform}: use a multi-platform base, "
            f"or remove {platform} from 'platforms'"
        )
    return digest


def pull_by_digest(client: docker.APIClient, pinned: str, platform: str, release_host: str) -> None:
    """Have ``name@sha256:...`` in the engine; pulled for ``platform`` unless it is there already."""
    try:
        client.inspect_image(pinned)
        return
    except docker.errors.ImageNotFound:
        pass
    creds = registry_credentials() if image_name(pinned).host == release_host else None
    try:
        for item in client.pull(pinned, platform=platform, stream=True, decode=True,
                                auth_config=creds.docker_auth() if creds else None):
            if "error" in item or "errorDetail" in item:
                detail = item.get("errorDetail") or {}
                message = str(item.get("error") or detail.get("message") or "unknown error")
                raise RegistryError(f"cannot pull the base image {pinned}: {redact(message)}", transient=True)
    except docker.errors.APIError as err:
        raise RegistryError(f"cannot pull the base image {pinned}: {redact(str(err.explanation or err))}") from err
    except requests.exceptions.RequestException as err:
        raise RegistryError(f"lost the Docker engine while pulling {pinned}", transient=True) from err


def staged_dockerfile(
    client: docker.APIClient, name: str, dockerfile: Path, build_args: dict[str, str], platform: str,
    ref: str, staging: Path, log: Any,
) -> Path:
    """The Dockerfile to build ``platform`` from: ``dockerfile`` itself when every ``FROM`` is
    ``scratch`` or a stage, else a copy in ``staging`` whose bases are pinned to their digests for
    ``platform`` (or for the FROM's own ``--platform``). ``build_args`` include the platform's."""
    text = dockerfile.read_text(encoding="utf-8")
    bases = base_images(text, build_args)
    if not bases:
        return dockerfile
    release_host = Reference.parse(ref).host
    pins = {base.line: _pin(client, base, platform, release_host, name, log) for base in bases}
    staging.mkdir(parents=True, exist_ok=True)
    staged = staging / f"{dockerfile.name}.{platform.replace('/', '-')}"
    staged.write_text(pin_bases(text, pins), encoding="utf-8")
    return staged


def local_platform(client: docker.APIClient, image: str) -> tuple[str, str] | None:
    """``(os, architecture)`` of the engine's own ``image``, or ``None`` when the engine lacks it."""
    try:
        info = client.inspect_image(image)
    except docker.errors.ImageNotFound:
        return None
    return str(info.get("Os") or ""), str(info.get("Architecture") or "")


def _pin(client: docker.APIClient, base: BaseImage, target: str, release_host: str, name: str, log: Any) -> str:
    platform = base.platform or target
    wanted = parse_platform(platform)
    # A base the engine already holds for this platform is used as it is, as `docker build` does
    # without --pull (a local-only base has no registry to ask). Reading a tag races with nothing:
    # other platforms' bases are pulled by digest, which tags nothing.
    if local_platform(client, base.image) == (wanted.os, wanted.architecture):
        log.info("%s | FROM %s: the engine's own %s image", name, base.image, platform)
        return f"--platform={platform} {base.image}" if base.platform else base.image
    try:
        digest = platform_digest(base.image, platform, release_host)
        pinned = f"{image_name(base.image).name}@{digest}"
        pull_by_digest(client, pinned, platform, release_host)
    except (RegistryError, ValueError) as err:
        raise ImageBuildError(name, f"image {name} ({target}): {err}") from err
    log.info("%s | FROM %s is %s for %s", name, base.image, pinned, platform)
    return f"--platform={platform} {pinned}" if base.platform else pinned


_engine_platforms: dict[str, str] = {}


def engine_platform(client: docker.APIClient) -> str:
    """The engine's own platform, e.g. ``linux/amd64``: the ``BUILDPLATFORM`` of its builds (asked once
    per engine and process)."""
    key = str(client.base_url)
    if key not in _engine_platforms:
        version = client.version()
        _engine_platforms[key] = f"{version.get('Os', 'linux')}/{version.get('Arch', 'amd64')}"
    return _engine_platforms[key]
