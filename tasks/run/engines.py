"""Docker engines: where builds run and engine images are pushed from.

:class:`Engine` is a configured engine (``engines`` in the release config, or the default one);
:class:`Engines` is a run's view of them: a checked client per use, the API version and platform
each engine told, and the ``max_builds`` slots. A run owns its :class:`Engines`, so runs served by
one process learn and count separately; sent to another process (a Dask worker), it starts empty.

The engine reports failures of a build, push or pull as ``{"error": ...}`` items inside its
stream, not as exceptions: :func:`stream_error` is the one reader of them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

import docker
import docker.errors
import docker.tls
import requests.exceptions

from tasks.core.errors import EngineError
from tasks.core.redact import redact
from tasks.run.config import DEFAULT_ENGINE, Engine

T = TypeVar("T")

PING_TIMEOUT = 5.0  # seconds: a build's engine asked whether it is still there
ENGINE_FIX = "start dockerd (bash scripts/setup.sh does) or point DOCKER_HOST at a running engine"





def stream_error(item: Mapping[str, Any]) -> str | None:
    """The error an engine stream item carries (``error`` / ``errorDetail``), else ``None``."""
    if "error" not in item and "errorDetail" not in item:
        return None
    detail = item.get("errorDetail") or {}
    return str(item.get("error") or detail.get("message") or "unknown error")


def tls_config(target: Engine) -> docker.tls.TLSConfig | bool:
    if not target.tls_cert_path:
        return False
    certs = Path(target.tls_cert_path)
    return docker.tls.TLSConfig(
        client_cert=(str(certs / "cert.pem"), str(certs / "key.pem")), ca_cert=str(certs / "ca.pem"), verify=True
    )


class Engines:
    """A run's engines: clients, what each engine told about itself, and the build slots."""

    def __init__(self, default_host: str) -> None:
        self.default_host = default_host
        self._api_versions: dict[str, str] = {}  # asking costs a request: once per engine
        self._platforms: dict[str, str] = {}
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._kept: dict[tuple[str, str], object] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, object]:
        return {"default_host": self.default_host}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["default_host"])  # type: ignore[misc]

    def address(self, target: Engine) -> str:
        return target.docker_host or self.default_host

    @contextmanager
    def client(self, target: Engine = DEFAULT_ENGINE, timeout: float = 3600) -> Iterator[docker.APIClient]:
        """A Docker API client of the caller's own for ``target``, checked with a ping.

        ``timeout`` bounds each read: a build can be silent for long (a slow RUN step), a push streams
        progress all along, so a silent push has hung.
        """
        base_url = self.address(target)
        fix = ENGINE_FIX if target.is_default else f"start it or fix engine {target.name!r} in the release config"
        try:
            client = docker.APIClient(
                base_url=base_url, version=self._api_versions.get(base_url, "auto"), timeout=timeout,
                tls=tls_config(target),
            )
            client.ping()
        except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as err:
            raise EngineError(f"cannot reach the Docker engine at {redact(base_url)}: {fix}") from err
        with self._lock:
            self._api_versions[base_url] = str(client.api_version)
        try:
            yield client
        finally:
            client.close()

    def unreachable(self, target: Engine) -> EngineError | None:
        """The error of a ping to ``target`` that failed (within ``PING_TIMEOUT``), or None when it answers."""
        try:
            with self.client(target, timeout=PING_TIMEOUT):
                return None
        except EngineError as err:
            return err

    @contextmanager
    def build_slot(self, target: Engine) -> Iterator[None]:
        """Hold one of the engine's ``max_builds`` slots (no cap when 0), counted in this process."""
        if not target.max_builds:
            yield
            return
        key = f"{self.address(target)}#{target.max_builds}"
        with self._lock:
            slot = self._slots.setdefault(key, threading.BoundedSemaphore(target.max_builds))
        with slot:
            yield

    def kept(self, target: Engine, kind: str, make: Callable[[], T]) -> T:
        """An object kept for ``target`` as long as the run (a builder's client: BuildKit finds its CLI once),
        made by ``make`` on first use; ``kind`` tells the builders' objects apart."""
        key = (self.address(target), kind)
        with self._lock:
            if key not in self._kept:
                self._kept[key] = make()
            return cast(T, self._kept[key])

    def platform(self, client: docker.APIClient) -> str:
        """The engine's own platform, e.g. ``linux/amd64``: the ``BUILDPLATFORM`` of its builds."""
        key = str(client.base_url)
        with self._lock:
            known = self._platforms.get(key)
        if known is None:
            version = client.version()
            known = f"{version.get('Os', 'linux')}/{version.get('Arch', 'amd64')}"
            with self._lock:
                self._platforms[key] = known
        return known


def local_image_id(client: docker.APIClient, ref: str) -> str:
    """The engine's image id for ``ref``, or ``""`` when the engine does not have it."""
    try:
        return str(client.inspect_image(ref)["Id"])
    except docker.errors.ImageNotFound:
        return ""


def local_platform(client: docker.APIClient, image: str) -> tuple[str, str] | None:
    """``(os, architecture)`` of the engine's own ``image``, or ``None`` when the engine lacks it."""
    try:
        info = client.inspect_image(image)
    except docker.errors.ImageNotFound:
        return None
    return str(info.get("Os") or ""), str(info.get("Architecture") or "")
