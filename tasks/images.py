"""Build and push container images through the Docker Engine API.

Pure parts decide (references, labels, the specs of a release, whether a push
error is worth another try); :func:`build_image` and :func:`push_image` are
the only places that talk to the engine. Build and push report failure as
``{"error": ...}`` items inside their streams, not as exceptions: both scan
the stream and raise.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.tls
import requests.exceptions
import urllib3.exceptions
from prefect import get_run_logger, task
from prefect.cache_policies import NONE
from prefect.runtime import task_run as current_task_run

from tasks import progress
from tasks.bases import engine_platform, local_platform, staged_dockerfile
from tasks.config import PROJECT_ROOT, ReleaseConfig
from tasks.credentials import registry_credentials
from tasks.dockerfile import declared_args
from tasks.errors import (
    ConfigError,
    EngineError,
    ImageBuildError,
    ImageMissingError,
    ImagePushError,
    RegistryError,
)
from tasks.platforms import DEFAULT_PLATFORM, exec_format_hint, parse_platform, platform_build_args, platform_tag
from tasks.redact import install_log_filter, redact
from tasks.registry import Reference, RegistryAPI
from tasks.retry import RetryPolicy
from tasks.source import Checkout

LABEL_PREFIX = "org.opencontainers.image"
# Our own label: the build inputs' fingerprint, so a re-run can tell that the
# image in the registry is exactly the one it would build.
FINGERPRINT_LABEL = "io.llm-d.fma-release.fingerprint"


@dataclass(frozen=True)
class Engine:
    """A Docker engine a build goes to (see ``engines`` in the release config)."""

    name: str = "default"
    docker_host: str = ""  # "" = DOCKER_HOST of the task's process, else the local socket
    tls_cert_path: str = ""  # ca.pem, cert.pem, key.pem for a TLS tcp:// engine
    max_builds: int = 0  # 0 = no cap

    def address(self) -> str:
        return self.docker_host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


DEFAULT_ENGINE = Engine()


@dataclass(frozen=True)
class ImageSpec:
    """Everything one build needs; small and picklable for remote task runners."""

    name: str
    ref: str  # <registry>/<name>:<tag>
    dockerfile: Path
    context: Path
    build_args: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    # Hash of everything that determines the image; also its FINGERPRINT_LABEL.
    fingerprint: str = ""
    engine: Engine = DEFAULT_ENGINE  # where it is built and pushed from
    platform: str = DEFAULT_PLATFORM
    # A multi-platform image's tag (<registry>/<name>:<tag>), where the index goes; then ``ref`` is
    # this platform's own tag (<tag>-linux-arm64). "" for a single-platform image.
    index_ref: str = ""

    @property
    def label(self) -> str:
        """How a task run and the progress view name this build: ``requester linux/arm64``, or the name."""
        return f"{self.name} {self.platform}" if self.index_ref else self.name


@dataclass(frozen=True)
class BuiltImage:
    name: str
    ref: str
    image_id: str  # the engine's image id; the push checks the engine still has it
    fingerprint: str = ""
    engine: Engine = DEFAULT_ENGINE  # the engine that holds it
    platform: str = ""  # set for one platform of a multi-platform image
    label: str = ""  # as ImageSpec.label


@dataclass(frozen=True)
class PushedImage:
    name: str
    ref: str
    digest: str
    status: str = "pushed"  # or "already published", "dry run"
    platform: str = ""  # the platform of this manifest ("" for an image index)
    # An image index's platform images, each with its own tag and digest.
    platforms: tuple[PushedImage, ...] = ()
    label: str = ""  # as ImageSpec.label; "" means the name


# -- pure ---------------------------------------------------------------------


def image_ref(registry: str, name: str, tag: str) -> str:
    """``<registry>/<name>:<tag>``; the tag keeps its ``v``."""
    return f"{registry.rstrip('/')}/{name}:{tag}"


def oci_labels(checkout: Checkout, name: str) -> dict[str, str]:
    """The OCI annotations every release image carries."""
    return {
        f"{LABEL_PREFIX}.source": checkout.source,
        f"{LABEL_PREFIX}.revision": checkout.revision,
        f"{LABEL_PREFIX}.version": checkout.tag,
        f"{LABEL_PREFIX}.created": checkout.created,
        f"{LABEL_PREFIX}.title": name,
    }


def image_specs(
    config: ReleaseConfig, checkout: Checkout, registry: str, project_root: Path = PROJECT_ROOT
) -> list[ImageSpec]:
    """One spec per configured image; :class:`ConfigError` for a missing Dockerfile or context."""
    specs = []
    engines = {target.name: target for target in configured_engines(config)}
    placed = assign_engines([(image.name, image.engine) for image in config.images], list(engines))
    for image in config.images:
        base = project_root if image.dockerfile_from == "project" else checkout.path
        dockerfile = (base / image.dockerfile).resolve()
        context = (checkout.path / image.context).resolve()
        for what, path, root in (("dockerfile", dockerfile, base), ("context", context, checkout.path)):
            if not path.is_relative_to(root.resolve()):
                raise ConfigError(f"image {image.name}: {what} {path} leaves its tree; use a path inside it")
        if not dockerfile.is_file():
            where = "this project" if image.dockerfile_from == "project" else f"the source at {checkout.tag}"
            raise ConfigError(
                f"image {image.name}: dockerfile {image.dockerfile} is not in {where}; "
                "fix 'dockerfile' in the release config"
            )
        if not context.is_dir():
            raise ConfigError(
                f"image {image.name}: context {image.context} is not a directory in the source at "
                f"{checkout.tag}; fix 'context' in the release config"
            )
        tag_ref = image_ref(registry, image.name, checkout.tag)
        labels = oci_labels(checkout, image.name)
        several = len(image.platforms) > 1
        for platform in image.platforms:
            ref = image_ref(registry, image.name, platform_tag(checkout.tag, platform)) if several else tag_ref
            fingerprint = build_fingerprint(
                ref=ref, dockerfile=dockerfile.read_bytes(), context=image.context, build_args=image.build_args,
                labels=labels, platform=platform,
            )
            specs.append(
                ImageSpec(
                    name=image.name,
                    ref=ref,
                    dockerfile=dockerfile,
                    context=context,
                    build_args=dict(image.build_args),
                    labels={**labels, FINGERPRINT_LABEL: fingerprint},
                    fingerprint=fingerprint,
                    platform=platform,
                    index_ref=tag_ref if several else "",
                    engine=engines.get(placed.get(image.name, ""), DEFAULT_ENGINE),
                )
            )
    return specs


def configured_engines(config: ReleaseConfig) -> list[Engine]:
    """The config's engines; the default one (DOCKER_HOST or the local socket) when it lists none."""
    return [
        Engine(name=e.name, docker_host=e.docker_host, tls_cert_path=e.tls_cert_path or "",
               max_builds=e.max_builds or 0)
        for e in config.engines
    ] or [DEFAULT_ENGINE]


def assign_engines(images: list[tuple[str, str | None]], engines: list[str]) -> dict[str, str]:
    """Which engine builds each image: its own when it names one, else the engine with the fewest
    images so far (first listed on a tie). ``{}`` without engines: all go to the default one."""
    if not engines:
        return {}
    load = dict.fromkeys(engines, 0)
    placed: dict[str, str] = {}
    for name, pinned in images:
        if pinned is not None:
            placed[name] = pinned
            load[pinned] += 1
    for name, pinned in images:
        if pinned is None:
            chosen = min(engines, key=lambda engine: load[engine])
            placed[name] = chosen
            load[chosen] += 1
    return placed


def build_fingerprint(
    *, ref: str, dockerfile: bytes, context: str, build_args: Mapping[str, str], labels: Mapping[str, str],
    platform: str = "linux/amd64",
) -> str:
    """What determines a build's result: the source revision (in the labels), the Dockerfile's bytes,
    the context path in the checkout, build args, labels, platform and target reference."""
    payload = json.dumps(
        {
            "ref": ref, "dockerfile": hashlib.sha256(dockerfile).hexdigest(), "context": context,
            "build_args": dict(sorted(build_args.items())), "labels": dict(sorted(labels.items())),
            "platform": platform,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


_DIRECTIVE = re.compile(r"#\s*([a-z]+)\s*=\s*(\S+)", re.IGNORECASE)


def labelled_dockerfile(text: str, labels: Mapping[str, str]) -> str:
    """``text`` with one ``LABEL`` line for all ``labels`` appended (it applies to the final stage).

    Values are double-quoted with the Dockerfile's escape character (``\\`` unless an ``# escape=``
    directive says otherwise) before quotes, escapes and ``$`` (LABEL expands variables).
    """
    if not labels:
        return text
    escape = "\\"
    for line in text.splitlines():  # parser directives (# syntax=, # escape=) come before anything else
        directive = _DIRECTIVE.fullmatch(line.strip())
        if directive is None:
            break
        if directive.group(1).lower() == "escape":
            escape = directive.group(2)[0]

    def quoted(value: str) -> str:
        for special in (escape, '"', "$"):
            value = value.replace(special, escape + special)
        return '"' + value.replace("\n", " ") + '"'

    pairs = " ".join(f"{quoted(key)}={quoted(value)}" for key, value in labels.items())
    return text.rstrip("\n") + "\n" + f"LABEL {pairs}\n"


_AUTH = re.compile(
    r"unauthorized|authentication required|denied|forbidden|\b401\b|\b403\b|"
    r"no basic auth credentials|incorrect username or password",
    re.IGNORECASE,
)
_TRANSIENT = re.compile(
    r"\b5\d\d\b|service unavailable|bad gateway|gateway time-?out|internal server error|"
    r"toomanyrequests|too many requests|\b429\b|connection reset|connection refused|"
    r"broken pipe|\bEOF\b|timed? ?out|timeout|i/o timeout|tls handshake|"
    r"server closed|connection aborted|remote end closed|temporar",
    re.IGNORECASE,
)


def is_transient_push_error(message: str) -> bool:
    """Whether another push attempt may succeed. Auth and denial never are."""
    if _AUTH.search(message):
        return False
    return bool(_TRANSIENT.search(message))


def failed_step(lines: Iterable[str]) -> str:
    """The last ``Step N/M : ...`` line of a legacy-builder log, or ``""``."""
    step = ""
    for line in lines:
        if line.startswith("Step "):
            step = line.strip()
    return step


# -- the engine -----------------------------------------------------------------

_ENGINE_FIX = "start dockerd (bash scripts/setup.sh does) or point DOCKER_HOST at a running engine"


def push_stall_seconds() -> float:
    """How long a push may go without a word from the engine before it counts as hung (and is retried)."""
    return float(os.environ.get("FMA_PUSH_STALL_SECONDS") or 300)


# The API version each engine speaks, asked once per process (``version="auto"`` costs a request).
_api_versions: dict[str, str] = {}
_build_slots: dict[str, threading.BoundedSemaphore] = {}
_slots_lock = threading.Lock()


def _tls(target: Engine) -> docker.tls.TLSConfig | bool:
    if not target.tls_cert_path:
        return False
    certs = Path(target.tls_cert_path)
    return docker.tls.TLSConfig(
        client_cert=(str(certs / "cert.pem"), str(certs / "key.pem")), ca_cert=str(certs / "ca.pem"), verify=True
    )


@contextmanager
def engine(target: Engine = DEFAULT_ENGINE, timeout: float = 3600) -> Iterator[docker.APIClient]:
    """A Docker API client of this task's own for ``target``, checked with a ping.

    ``timeout`` bounds each read: a build can be silent for long (a slow RUN step), a push streams
    progress all along, so a silent push has hung.
    """
    base_url = target.address()
    fix = _ENGINE_FIX if target == DEFAULT_ENGINE else f"start it or fix engine {target.name!r} in the release config"
    try:
        client = docker.APIClient(
            base_url=base_url, version=_api_versions.get(base_url, "auto"), timeout=timeout, tls=_tls(target)
        )
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as err:
        raise EngineError(f"cannot reach the Docker engine at {redact(base_url)}: {fix}") from err
    _api_versions[base_url] = str(client.api_version)
    try:
        yield client
    finally:
        client.close()


@contextmanager
def build_slot(target: Engine) -> Iterator[None]:
    """Hold one of the engine's ``max_builds`` slots (no cap when 0). Per process: with a task runner
    spread over machines, each process keeps its own count."""
    if not target.max_builds:
        yield
        return
    key = f"{target.address()}#{target.max_builds}"
    with _slots_lock:
        slot = _build_slots.setdefault(key, threading.BoundedSemaphore(target.max_builds))
    with slot:
        yield


def build_image(client: docker.APIClient, spec: ImageSpec, log: Any) -> BuiltImage:
    """Build ``spec`` for its platform with the legacy builder, streaming its output into ``log``.

    Base images are pinned to the platform's digests in a staging copy of the Dockerfile
    (:func:`tasks.bases.staged_dockerfile`); the ``TARGET*``/``BUILD*`` args the Dockerfile
    declares are passed as BuildKit defines them. The labels go in as one LABEL line appended to
    that copy (the SDK sends it along): the engine's own ``labels`` option costs one build step, a
    container and a layer commit, per label.
    """
    with tempfile.TemporaryDirectory(prefix="fma-dockerfile-") as staging:
        try:
            text = spec.dockerfile.read_text(encoding="utf-8")
            platform_args = platform_build_args(spec.platform, engine_platform(client))
            declared = declared_args(text)
            build_args = {**{k: v for k, v in platform_args.items() if k in declared}, **spec.build_args}
            dockerfile = staged_dockerfile(client, spec.name, spec.dockerfile, build_args, spec.platform, spec.ref,
                                           Path(staging), log)
            labelled = Path(staging) / "Dockerfile.labelled"
            labelled.write_text(labelled_dockerfile(dockerfile.read_text(encoding="utf-8"), spec.labels),
                                encoding="utf-8")
            dockerfile = labelled
        except (requests.exceptions.RequestException, docker.errors.DockerException) as err:
            raise EngineError(f"lost the Docker engine while preparing {spec.label}: {_ENGINE_FIX}") from err
        # The legacy builder's layer cache ignores the platform: a FROM scratch step whose files are
        # the same for two platforms can come from the other platform's build (then the image says
        # that platform, or a later step fails). Such a build is done once more, without the cache.
        wanted = parse_platform(spec.platform)
        try:
            built = _build(client, spec, dockerfile, build_args, log)
            came_out = local_platform(client, built.image_id)
            if came_out == (wanted.os, wanted.architecture):
                return built
            found = "/".join(came_out or ("an unknown",))
        except ImageBuildError as err:
            if "does not match the specified platform" not in str(err):
                raise
            found = "another platform's"
        log.info("%s | the engine's layer cache gave a %s image: building again without the cache", spec.label, found)
        built = _build(client, spec, dockerfile, build_args, log, nocache=True)
        came_out = local_platform(client, built.image_id)
        if came_out != (wanted.os, wanted.architecture):
            raise ImageBuildError(
                spec.name,
                f"image {spec.label} came out as {'/'.join(came_out or ('an unknown platform',))}, "
                f"not {spec.platform}: after FROM scratch put a COPY before any ARG or LABEL (a legacy builder limit)",
            )
        return built


def _build(client: docker.APIClient, spec: ImageSpec, dockerfile: Path, build_args: dict[str, str],
           log: Any, nocache: bool = False) -> BuiltImage:
    lines: list[str] = []
    image_id = ""
    try:
        stream = client.build(
            path=str(spec.context),
            dockerfile=str(dockerfile),
            tag=spec.ref,
            buildargs=build_args,
            platform=spec.platform,
            rm=True,
            forcerm=True,
            nocache=nocache,
            pull=False,
            decode=True,
        )
        for item in stream:
            if "stream" in item:
                for line in str(item["stream"]).splitlines():
                    if line.strip():
                        lines.append(line)
                        log.info("%s | %s", spec.label, redact(line))
            if "aux" in item and isinstance(item["aux"], dict) and "ID" in item["aux"]:
                image_id = str(item["aux"]["ID"])
            if "error" in item or "errorDetail" in item:
                detail = item.get("errorDetail") or {}
                message = str(item.get("error") or detail.get("message") or "unknown error")
                step = failed_step(lines)
                hint = exec_format_hint([*lines, message], spec.platform)
                raise ImageBuildError(
                    spec.name,
                    f"image {spec.label} failed to build at {step or 'the first step'}: "
                    + (hint or f"{redact(message.strip())}; fix the Dockerfile {spec.dockerfile.name} and re-run"),
                )
    except docker.errors.APIError as err:
        raise ImageBuildError(
            spec.name,
            f"image {spec.label} failed to build: {redact(str(err.explanation or err))}; "
            "fix the Dockerfile or build context and re-run",
        ) from err
    except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, docker.errors.DockerException) as err:
        raise EngineError(f"lost the Docker engine while building {spec.label}: {_ENGINE_FIX}") from err
    if not image_id:
        image_id = str(client.inspect_image(spec.ref)["Id"])
    return BuiltImage(name=spec.name, ref=spec.ref, image_id=image_id, platform=spec.platform, label=spec.label,
                      engine=spec.engine)


def push_image(client: docker.APIClient, built: BuiltImage, log: Any) -> PushedImage:
    """Push ``built.ref``; the digest comes from the stream's ``aux.Digest``."""
    repository, tag = built.ref.rsplit(":", 1)
    creds = registry_credentials()
    digest = ""
    try:
        stream = client.push(
            repository,
            tag=tag,
            stream=True,
            decode=True,
            auth_config=creds.docker_auth() if creds else None,
        )
        for item in stream:
            status = str(item.get("status", ""))
            if status.startswith("Retrying"):
                log.info("%s | %s (the engine retries the layer itself)", built.name, status)
            if "aux" in item and isinstance(item["aux"], dict) and "Digest" in item["aux"]:
                digest = str(item["aux"]["Digest"])
            if "error" in item or "errorDetail" in item:
                detail = item.get("errorDetail") or {}
                message = redact(str(item.get("error") or detail.get("message") or "unknown error"))
                raise _push_error(built.name, built.ref, message)
    except docker.errors.APIError as err:
        raise _push_error(built.name, built.ref, redact(str(err.explanation or err))) from err
    except (requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError) as err:
        raise _push_error(
            built.name, built.ref, f"no progress for {push_stall_seconds():.0f}s: the push timed out (hung registry?)"
        ) from err
    except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError) as err:
        raise _push_error(built.name, built.ref, f"connection to the engine failed: {err}") from err
    if not digest:
        raise ImagePushError(
            built.name, f"push of {built.ref} reported no digest; re-run the release", transient=True
        )
    return PushedImage(name=built.name, ref=built.ref, digest=digest, platform=built.platform, label=built.label)


def _push_error(name: str, ref: str, message: str) -> ImagePushError:
    transient = is_transient_push_error(message)
    if transient:
        fix = "the registry failed; it is retried, re-run the release if it keeps failing"
    elif _AUTH.search(message):
        fix = "check FMA_REGISTRY_USERNAME / FMA_REGISTRY_PASSWORD and the token's push rights"
    else:
        fix = "check the registry address and that it accepts pushes"
    return ImagePushError(name, f"push of {ref} failed: {message.strip()}; {fix}", transient=transient)


# -- resume ---------------------------------------------------------------------


def published_digest(ref: str, fingerprint: str) -> str:
    """The registry's digest of ``ref`` when it holds exactly this build, else ``""``."""
    target = Reference.parse(ref)
    with RegistryAPI(target.host) as api:
        found = api.manifest(target.repository, target.tag)
        if found is None or "config" not in found[1]:
            return ""
        config = json.loads(api.blob(target.repository, found[1]["config"]["digest"]))
    labels = (config.get("config") or {}).get("Labels") or {}
    return found[0] if fingerprint and labels.get(FINGERPRINT_LABEL) == fingerprint else ""


def local_image_id(client: docker.APIClient, ref: str) -> str:
    """The engine's image id for ``ref``, or ``""`` when the engine does not have it."""
    try:
        return str(client.inspect_image(ref)["Id"])
    except docker.errors.ImageNotFound:
        return ""


def build_cache_key(context: Any, parameters: dict[str, Any]) -> str:
    """Prefect cache key of a build: its inputs' fingerprint on this engine."""
    spec: ImageSpec = parameters["spec"]
    engine_id = spec.engine.address()
    return f"fma-build-{spec.fingerprint}-{hashlib.sha256(engine_id.encode()).hexdigest()[:8]}"


# -- tasks ----------------------------------------------------------------------


@task(
    name="build",
    task_run_name="build {spec.label}",
    cache_key_fn=build_cache_key,
    persist_result=True,
)
def build_task(spec: ImageSpec) -> BuiltImage:
    """Build one image from the checkout at the tag.

    The result is cached by the build inputs' fingerprint (Prefect result
    storage: PREFECT_LOCAL_STORAGE_PATH), so a re-run does not build again;
    images the registry already holds are not even submitted (the flow asks first).
    """
    install_log_filter()  # a no-op here; in a Dask worker's process it is the first task's job
    log = get_run_logger()
    try:
        with build_slot(spec.engine):
            progress.report(spec.label, "building", "" if spec.engine == DEFAULT_ENGINE else f"on {spec.engine.name}")
            with engine(spec.engine) as client:
                built = build_image(client, spec, log)
    except Exception as err:
        progress.report(spec.label, "failed", str(err))
        raise
    progress.report(spec.label, "built", built.image_id[:19])
    return BuiltImage(name=built.name, ref=built.ref, image_id=built.image_id, fingerprint=spec.fingerprint,
                      platform=spec.platform, label=spec.label, engine=spec.engine)


@task(
    name="push",
    task_run_name="push {built.label}",
    cache_policy=NONE,
    **RetryPolicy().task_options(),
)
def push_task(built: BuiltImage) -> PushedImage:
    """Push one image; transient faults are retried (a retry first asks whether the last attempt landed),
    auth errors are not."""
    install_log_filter()
    log = get_run_logger()
    attempt = current_task_run.run_count
    item = built.label or built.name
    try:
        # The flow asked the registry just before submitting this push. A retry asks again: an
        # earlier attempt's manifest PUT may have succeeded with its answer lost.
        digest = published_digest(built.ref, built.fingerprint) if attempt > 1 else ""
        if digest:
            log.info("%s is already in the registry with the same inputs (%s): not pushed", built.ref, digest)
            progress.report(item, "already published", digest)
            return PushedImage(name=built.name, ref=built.ref, digest=digest, status="already published",
                               platform=built.platform, label=built.label)
        progress.report(item, "retrying" if attempt > 1 else "pushing",
                        f"attempt {attempt}" if attempt > 1 else "")
        with engine(built.engine, timeout=push_stall_seconds()) as client:
            if not built.image_id or local_image_id(client, built.ref) != built.image_id:
                raise ImageMissingError(
                    built.name, f"image {built.ref} is not in the Docker engine any more; it will be rebuilt"
                )
            pushed = push_image(client, built, log)
    except (ImagePushError, RegistryError) as err:
        progress.report(item, "push failed" if err.transient else "failed", str(err))
        raise
    except Exception as err:
        progress.report(item, "failed", str(err))
        raise
    progress.report(item, "pushed", pushed.digest)
    return pushed
