"""The container-start proof, acting: lint and render each staged chart (defaults, and each values switch
flipped), then start each container it runs from its staged image on the Docker engine, per platform.

Every start is a container of its own with no network, removed afterwards. A platform image is pulled
by its digest from the stage (``name@sha256:…`` for that platform), so what starts is exactly what
would be promoted.
"""

from __future__ import annotations

import contextlib
import io
import posixpath
import tarfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker
import docker.errors
import helm_python as helm
import requests

from tasks.builders.bases import pull_by_digest
from tasks.core.errors import RegistryError
from tasks.core.redact import redact
from tasks.helm.chart import first_line, switch_name, switch_values, value_switches
from tasks.oci.references import Reference
from tasks.proof.checks import ProofCheck
from tasks.proof.containers import (
    ContainerToStart,
    Outcome,
    architecture_mismatch,
    chart_containers,
    first_lines,
    judge_start,
)

if TYPE_CHECKING:
    from tasks.oci.registry import Registries
    from tasks.run.result import ImageResult


DEFAULT_BOUND = 5.0  # seconds a started container may run before it counts as running


def chart_checks(name: str, directory: Path, release_refs: Mapping[str, str]) -> tuple[list[ProofCheck],
                                                                                       list[ContainerToStart]]:
    """Lint the staged chart (unpacked in ``directory``) and render it with its defaults and with each boolean
    value flipped: a check per render, and every container of a release image that some render runs."""
    checks: list[ProofCheck] = []
    starts: dict[tuple[object, ...], ContainerToStart] = {}
    began = time.monotonic()
    report = helm.lint(directory)
    errors = list(report.get("errors") or [])
    checks.append(ProofCheck(f"chart {name}: lint", not errors,
                             first_line(Exception(errors[0])) if errors else "no errors", time.monotonic() - began))
    chart = helm.Chart.load(directory)
    try:
        renders: list[tuple[str, dict[str, Any]]] = [("defaults", {})]
        renders += [(switch_name(path, not value), switch_values(path, not value))
                    for path, value in value_switches(chart.values or {})]
        for label, values in renders:
            began = time.monotonic()
            try:
                manifests = chart.render(values, name="fma", namespace="default", is_install=True)
            except helm.HelmError as err:
                checks.append(ProofCheck(f"chart {name}: render with {label}", False, first_line(err),
                                         time.monotonic() - began))
                continue
            found = chart_containers(name, manifests, release_refs)
            checks.append(ProofCheck(f"chart {name}: render with {label}", True,
                                     f"{len(found)} container(s) of the release", time.monotonic() - began))
            for start in found:
                starts.setdefault((start.image, start.command, start.args, start.env), start)
    finally:
        chart.close()
    return checks, list(starts.values())


def _read_head(client: docker.APIClient, container: str, path: str, hops: int = 5) -> tuple[str, bytes]:
    """The first bytes of ``path`` in a created container, following symbolic links."""
    for _ in range(hops):
        stream, _stat = client.get_archive(container, path)
        data = b"".join(stream)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            member = tar.next()
            if member is None:
                return path, b""
            if member.issym():
                target = member.linkname
                path = target if target.startswith("/") else posixpath.normpath(posixpath.join(posixpath.dirname(path),
                                                                                               target))
                continue
            handle = tar.extractfile(member)
            return path, handle.read(20) if handle else b""
    return path, b""


def _has_command(config: Mapping[str, Any]) -> bool:
    return bool(config.get("Entrypoint") or config.get("Cmd"))


def _executable(start: ContainerToStart, config: Mapping[str, Any]) -> str:
    argv = list(start.command) if start.command is not None else list(config.get("Entrypoint") or [])
    if not argv:
        argv = list(start.args) if start.args is not None else list(config.get("Cmd") or [])
    return argv[0] if argv else ""


def _search_path(exe: str, config: Mapping[str, Any]) -> Iterator[str]:
    if exe.startswith("/"):
        yield exe
        return
    path = next((e.split("=", 1)[1] for e in config.get("Env") or [] if e.startswith("PATH=")),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    for directory in path.split(":"):
        yield posixpath.join(directory, exe)


def _architecture_check(client: docker.APIClient, container: str, exe: str, *, config: Mapping[str, Any],
                        platform: str) -> str | None:
    for candidate in _search_path(exe, config):
        try:
            resolved, head = _read_head(client, container, candidate)
        except docker.errors.NotFound:
            continue
        return architecture_mismatch(resolved, head, platform)
    return None  # not found: the start itself says so


def start_container(client: docker.APIClient, pinned: str, platform: str, start: ContainerToStart, *,
                    bound: float) -> Outcome:
    """Start ``start`` from the image ``pinned`` (already in the engine) for ``platform``; what it showed."""
    config = client.inspect_image(pinned).get("Config") or {}
    created = client.create_container(
        pinned, entrypoint=list(start.command) if start.command is not None else None,
        command=list(start.args) if start.args is not None else ([] if start.command is not None else None),
        environment=[f"{k}={v}" for k, v in start.env], network_disabled=True, platform=platform,
        host_config=client.create_host_config(network_mode="none"),
    )
    container = created["Id"]
    try:
        exe = _executable(start, config)
        mismatch = _architecture_check(client, container, exe, config=config, platform=platform) if exe else None
        if mismatch:
            return Outcome(exit_code=None, start_error=mismatch)
        try:
            client.start(container)
        except docker.errors.APIError as err:
            return Outcome(exit_code=127, start_error=redact(str(err.explanation or err)))
        try:
            code: int | None = int(client.wait(container, timeout=bound)["StatusCode"])
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            code = None
        output = client.logs(container, stdout=True, stderr=True, tail=20).decode("utf-8", "replace")
        return Outcome(exit_code=code, output=redact(output))
    finally:
        with contextlib.suppress(docker.errors.APIError):
            client.remove_container(container, force=True)


def image_starts(client: docker.APIClient, image: ImageResult, starts: Sequence[ContainerToStart], *,
                 registries: Registries, bound: float = DEFAULT_BOUND) -> list[ProofCheck]:
    """Each start of ``image``, on each of its platforms, as a check."""
    checks = []
    repository = Reference.parse(image.ref).name
    for platform in image.platforms:
        pinned = f"{repository}@{platform.digest}"
        os_arch = platform.platform or "linux/amd64"
        for start in starts:
            name = f"start {image.name} {os_arch} ({start.where})"
            began = time.monotonic()
            try:
                pull_by_digest(client, pinned, os_arch, registries=registries)
                if start.command is None and not _has_command(client.inspect_image(pinned).get("Config") or {}):
                    checks.append(ProofCheck(name, False, "not started: the image has no entrypoint or command "
                                             "(a Pod that runs it sets one); name one in the release config "
                                             f"(images: {image.name}: smoke: {{command: [...]}}) to start it",
                                             time.monotonic() - began, skipped=True))
                    continue
                outcome = start_container(client, pinned, os_arch, start, bound=bound)
            except (RegistryError, docker.errors.APIError) as err:
                checks.append(ProofCheck(name, False, f"could not start: {first_lines(redact(str(err)))}",
                                         time.monotonic() - began))
                continue
            passed, detail = judge_start(outcome, bound)
            checks.append(ProofCheck(name, passed, detail, time.monotonic() - began))
    return checks
