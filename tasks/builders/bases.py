"""Base images of a build, for its platform: resolved through the registry API, pulled by digest.

:func:`staged_dockerfile` is the one place a build's base images are resolved and pulled. The
engine's tags are never rewritten (a pull by digest tags nothing), so builds of several
platforms from one base run side by side; the Dockerfile the engine reads is a staging copy
whose ``FROM`` lines name the digests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker
import docker.errors
import requests.exceptions

from tasks.builders.dockerfile import BaseImage, base_images, pin_bases
from tasks.builders.koconfig import apply_mirrors
from tasks.core.errors import ImageBuildError, RegistryError
from tasks.core.redact import redact
from tasks.oci.platforms import config_platform, parse_platform, select_platform
from tasks.oci.references import DOCKER_HUB, Reference
from tasks.oci.registry import Registries
from tasks.run.engines import local_platform, stream_error
from tasks.run.facts import BaseUse

if TYPE_CHECKING:
    from tasks.run.plan import ImageSpec


def platform_digest(image: str, platform: str, registries: Registries) -> str:
    """The digest of ``image``'s manifest for ``platform`` (through its index when it has one).

    Credentials go only to a registry they are bound to; any other registry is read anonymously.
    """
    name = Reference.docker(image)
    wanted = parse_platform(platform)
    with registries.api(name.host) as api:
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
        image_manifest = api.manifest_and_config(name.repository, digest)
    have = config_platform(image_manifest.config if image_manifest else {})
    if (have.os, have.architecture) != (wanted.os, wanted.architecture):
        raise RegistryError(
            f"base image {image} is a {have} image only, not {platform}: use a multi-platform base, "
            f"or remove {platform} from 'platforms'"
        )
    return digest


def pull_by_digest(client: docker.APIClient, pinned: str, platform: str, *, registries: Registries) -> None:
    """Have ``name@sha256:...`` in the engine; pulled for ``platform`` unless it is there already."""
    try:
        client.inspect_image(pinned)
        return
    except docker.errors.ImageNotFound:
        pass
    host = Reference.docker(pinned).host
    creds = registries.access.credentials("docker.io" if host == DOCKER_HUB else host)
    try:
        for item in client.pull(pinned, platform=platform, stream=True, decode=True,
                                auth_config=creds.docker_auth() if creds else None):
            message = stream_error(item)
            if message is not None:
                raise RegistryError(f"cannot pull the base image {pinned}: {redact(message)}", transient=True)
    except docker.errors.APIError as err:
        raise RegistryError(f"cannot pull the base image {pinned}: {redact(str(err.explanation or err))}") from err
    except requests.exceptions.RequestException as err:
        raise RegistryError(f"lost the Docker engine while pulling {pinned}", transient=True) from err


def base_uses(written: str, staged: str, *, build_args: Mapping[str, str], mirrors: Mapping[str, str],
              where: str) -> tuple[BaseUse, ...]:
    """Each base of a Dockerfile as the source writes it (``written``: the Dockerfile's text; the FROM's
    line in ``where``, the Dockerfile as the config names it) and as the build pulled it (``staged``:
    the copy with every FROM pinned, from its mirror when ``mirrors`` rewrote it) (pure)."""
    uses = []
    for source, pulled in zip(base_images(written, build_args), base_images(staged, build_args), strict=False):
        mirrored = apply_mirrors(source.image, mirrors)
        uses.append(BaseUse(image=pulled.image, platform=pulled.platform, written=source.image,
                            where=f"{where}:{source.line + 1}", mirror=mirrored if mirrored != source.image else ""))
    return tuple(uses)


def staged_dockerfile(
    client: docker.APIClient, spec: ImageSpec, build_args: dict[str, str], staging: Path, *, registries: Registries,
    log: Any, pull: bool = True,
) -> Path:
    """The Dockerfile to build ``spec``'s platform from: the Dockerfile itself when every ``FROM`` is
    ``scratch`` or a stage, else a copy in ``staging`` whose bases are pinned to their digests for
    the platform (or for the FROM's own ``--platform``). ``build_args`` include the platform's (they
    expand ``FROM --platform=$BUILDPLATFORM``). ``pull``: have each pinned base in the engine (the
    legacy builder reads only the engine's images; BuildKit pulls what it needs itself)."""
    text = spec.dockerfile_path.read_text(encoding="utf-8")
    bases = base_images(text, build_args)
    if not bases:
        return spec.dockerfile_path
    pins = {base.line: _pin(client, base, spec, registries=registries, log=log, pull=pull) for base in bases}
    staging.mkdir(parents=True, exist_ok=True)
    staged = staging / f"{spec.dockerfile_path.name}.{spec.platform.replace('/', '-')}"
    staged.write_text(pin_bases(text, pins), encoding="utf-8")
    return staged


def base_failure(label: str, written: BaseImage, pulled: str, *, dockerfile: str, problem: str,
                 unreachable: bool) -> str:
    """The one line of a base image that cannot be had: the image as the Dockerfile writes it, where
    (``FROM quay.io/x:1`` at ``dockerfiles/Dockerfile.requester`` line 3), the mirror it was pulled
    from when ``mirrors:`` maps it (``pulled``), the problem, and the fix: for a registry that does
    not answer (``unreachable``), ``mirrors:`` in the release config, which points a base elsewhere."""
    where = f"FROM {written.image} ({dockerfile} line {written.line + 1})"
    if pulled == written.image:
        if not unreachable:
            return f"image {label}: the base image of {where}: {problem}"
        host = registry_name(written.image)
        return (f"image {label}: cannot reach the registry {host} for the base image of {where}; if it cannot "
                f"be reached from here, point the image at a registry that has it with mirrors: in the release "
                f"config (mirrors: {{{host}: <registry>/<path>}}), or change the FROM line")
    via = f"from its mirror {pulled} (mirrors: in the release config)"
    if not unreachable:
        return f"image {label}: the base image of {where}, {via}: {problem} (or fix that entry of mirrors:)"
    host = registry_name(pulled)
    return (f"image {label}: cannot reach the registry {host} for the base image of {where}, {via}; check "
            f"that entry of mirrors: and that {host} answers")


def registry_name(image: str) -> str:
    """The registry host of an image reference as a user would write it (``docker.io`` for Docker Hub)."""
    host = Reference.docker(image).host
    return "docker.io" if host == DOCKER_HUB else host


def _unreachable(err: BaseException) -> bool:
    """Whether a registry error is its host not answering (refused, unknown, timed out), not TLS or a reply."""
    cause = err.__cause__
    return isinstance(cause, requests.exceptions.ConnectionError | requests.exceptions.Timeout) and not isinstance(
        cause, requests.exceptions.SSLError)


def _pin(client: docker.APIClient, base: BaseImage, spec: ImageSpec, *, registries: Registries,
         log: Any, pull: bool) -> str:
    platform = base.platform or spec.platform
    wanted = parse_platform(platform)
    written = base
    image = apply_mirrors(base.image, spec.mirrors)
    if image != base.image:
        log.info("%s | FROM %s comes from the mirror %s", spec.name, base.image, image)
        base = replace(base, image=image)
    # A base the engine already holds for this platform is used as it is, as `docker build` does
    # without --pull (a local-only base has no registry to ask). Reading a tag races with nothing:
    # other platforms' bases are pulled by digest, which tags nothing.
    if local_platform(client, base.image) == (wanted.os, wanted.architecture):
        log.info("%s | FROM %s: the engine's own %s image", spec.name, base.image, platform)
        return f"--platform={platform} {base.image}" if base.platform else base.image
    try:
        digest = platform_digest(base.image, platform, registries)
        pinned = f"{Reference.docker(base.image).name}@{digest}"
        if pull:
            pull_by_digest(client, pinned, platform, registries=registries)
    except (RegistryError, ValueError) as err:
        raise ImageBuildError(spec.name, base_failure(
            spec.label_with_platform, written, base.image, dockerfile=spec.dockerfile_shown, problem=str(err),
            unreachable=_unreachable(err))) from err
    log.info("%s | FROM %s is %s for %s", spec.name, base.image, pinned, platform)
    return f"--platform={platform} {pinned}" if base.platform else pinned
