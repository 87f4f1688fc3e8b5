"""The engine's legacy builder, through the docker SDK: for engines without BuildKit.

Base images are pinned to the platform's digests in a staging copy of the Dockerfile
(:func:`tasks.builders.bases.staged_dockerfile`); the ``TARGET*``/``BUILD*`` args the Dockerfile declares
are passed as BuildKit defines them. The labels go in as one LABEL line appended to that copy:
the engine's own ``labels`` option costs one build step, a container and a layer commit, per
label. The legacy builder's layer cache ignores the platform, so a build that comes out as
another platform is built once more without the cache.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker
import docker.errors
import requests.exceptions
import urllib3.exceptions

from tasks.builders.bases import staged_dockerfile
from tasks.builders.dockerfile import declared_args, labelled_dockerfile
from tasks.core.errors import EngineError, ImageBuildError, bounded_output
from tasks.core.pulse import Step, no_step
from tasks.core.redact import redact
from tasks.oci.platforms import exec_format_hint, parse_platform, platform_build_args
from tasks.run.engines import ENGINE_FIX, local_platform, stream_error
from tasks.run.result import BuiltImage

if TYPE_CHECKING:
    from tasks.run.context import RunContext
    from tasks.run.plan import ImageSpec


def lost_cached_image(message: str) -> bool:
    """Whether a build failed because an image its layer cache offered was deleted under it (pure): another
    build's clean-up, or a prune, removed it between the cache's answer and its use. The engine names the
    image by its bare ID; a build without the cache does not need it."""
    return 'unable to find image "sha256:' in message


def failed_step(lines: Iterable[str]) -> str:
    """The last ``Step N/M : ...`` line of a legacy-builder log, or ``""``."""
    step = ""
    for line in lines:
        if line.startswith("Step "):
            step = line.strip()
    return step


def step_output(lines: Iterable[str]) -> tuple[str, ...]:
    """The last lines the failing step printed: those after the last ``Step N/M`` line (bounded, masked)."""
    after: list[str] = []
    for line in lines:
        after = [] if line.startswith("Step ") else [*after, line]
    return bounded_output(line for line in after if not line.startswith((" ---> ", "Removing intermediate")))


class LegacyBuilder:
    """``builder: docker``."""

    def build(self, spec: ImageSpec, run: RunContext, log: Any, step: Step = no_step) -> BuiltImage:
        with run.engines.client(spec.engine) as client:
            return build_image(client, spec, run, log, step=step)


def build_image(client: docker.APIClient, spec: ImageSpec, run: RunContext, log: Any, *,
                step: Step = no_step) -> BuiltImage:
    """Build ``spec`` for its platform with the legacy builder, streaming its output into ``log`` and each
    ``Step N/M`` into ``step``."""
    with tempfile.TemporaryDirectory(prefix="fma-dockerfile-") as staging:
        try:
            text = spec.dockerfile_path.read_text(encoding="utf-8")
            platform_args = platform_build_args(spec.platform, run.engines.platform(client))
            declared = declared_args(text)
            build_args = {**{k: v for k, v in platform_args.items() if k in declared}, **spec.build_args}
            dockerfile = staged_dockerfile(client, spec, build_args, Path(staging), registries=run.registries, log=log)
            labelled = Path(staging) / "Dockerfile.labelled"
            labelled.write_text(labelled_dockerfile(dockerfile.read_text(encoding="utf-8"), spec.labels),
                                encoding="utf-8")
        except (requests.exceptions.RequestException, docker.errors.DockerException) as err:
            raise EngineError(f"lost the Docker engine while preparing {spec.label}: {ENGINE_FIX}") from err
        wanted = parse_platform(spec.platform)
        try:
            built = _build(client, spec, labelled, build_args, log=log, step=step)
            came_out = local_platform(client, built.image_id)
            if came_out == (wanted.os, wanted.architecture):
                return built
            why = f"the engine's layer cache gave a {'/'.join(came_out or ('an unknown',))} image"
        except ImageBuildError as err:
            if lost_cached_image(str(err)):
                why = "an image of the engine's layer cache was deleted mid-build"
            elif "does not match the specified platform" in str(err):
                why = "the engine's layer cache gave another platform's image"
            else:
                raise
        log.info("%s | %s: building again without the cache", spec.label, why)
        built = _build(client, spec, labelled, build_args, log=log, nocache=True, step=step)
        came_out = local_platform(client, built.image_id)
        if came_out != (wanted.os, wanted.architecture):
            raise ImageBuildError(
                spec.name,
                f"image {spec.label} came out as {'/'.join(came_out or ('an unknown platform',))}, "
                f"not {spec.platform}: after FROM scratch put a COPY before any ARG or LABEL (a legacy builder limit)",
            )
        return built


def _build(client: docker.APIClient, spec: ImageSpec, dockerfile: Path, build_args: dict[str, str], *,
           log: Any, nocache: bool = False, step: Step = no_step) -> BuiltImage:
    lines: list[str] = []
    image_id = ""
    try:
        stream = client.build(
            path=str(spec.context), dockerfile=str(dockerfile), tag=spec.ref, buildargs=build_args,
            platform=spec.platform, rm=True, forcerm=True, nocache=nocache, pull=False, decode=True,
        )
        for item in stream:
            if "stream" in item:
                for line in str(item["stream"]).splitlines():
                    if line.strip():
                        lines.append(line)
                        log.info("%s | %s", spec.label, redact(line))
                        if line.startswith("Step "):
                            step(line)
            if "aux" in item and isinstance(item["aux"], dict) and "ID" in item["aux"]:
                image_id = str(item["aux"]["ID"])
            message = stream_error(item)
            if message is not None:
                failed = failed_step(lines)
                hint = exec_format_hint([*lines, message], spec.platform)
                raise ImageBuildError(
                    spec.name,
                    f"image {spec.label_with_platform} failed to build at {failed or 'the first step'}: "
                    + (hint or f"{redact(message.strip())}; fix the Dockerfile {spec.dockerfile_shown} and re-run"),
                    output=step_output(lines),
                )
    except docker.errors.APIError as err:
        raise ImageBuildError(
            spec.name,
            f"image {spec.label} failed to build: {redact(str(err.explanation or err))}; "
            "fix the Dockerfile or build context and re-run",
        ) from err
    except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, docker.errors.DockerException) as err:
        raise EngineError(f"lost the Docker engine while building {spec.label}: {ENGINE_FIX}") from err
    if not image_id:
        image_id = str(client.inspect_image(spec.ref)["Id"])
    return BuiltImage(name=spec.name, ref=spec.ref, image_id=image_id, fingerprint=spec.fingerprint,
                      platform=spec.platform, label=spec.label, engine=spec.engine)
