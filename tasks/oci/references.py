"""Image and chart references, parsed one way everywhere (pure).

``host[:port]/repository[:tag][@digest]``: :meth:`Reference.parse` reads a reference that must
name its registry (the release's images and charts, ``oci://`` or not); :meth:`Reference.docker`
reads one as Docker and Kubernetes do (distribution's reference grammar and docker's
normalisation): no host means Docker Hub and a one-word name is under ``library/``; a first
component with a ``.`` or ``:``, ``localhost``, or an upper-case letter is a registry host; a
malformed reference is a :class:`ValueError` naming the part.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tasks.core.errors import ChartError, RegistryError

DOCKER_HUB = "registry-1.docker.io"  # the API host of docker.io
_HUB_NAMES = ("docker.io", "index.docker.io", DOCKER_HUB)

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?")
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
_SHA256 = re.compile(r"sha256:[0-9a-f]{64}")


def _is_host(part: str) -> bool:
    return "." in part or ":" in part or part == "localhost"


@dataclass(frozen=True)
class Reference:
    host: str  # registry host for the HTTP API (Docker Hub as registry-1.docker.io)
    repository: str
    tag: str = ""
    digest: str = ""
    name: str = ""  # as written, without tag or digest (e.g. golang, 127.0.0.1:5000/base)

    @property
    def reference(self) -> str:
        """What the registry API is asked for: the digest, else the tag, else ``latest``."""
        return self.digest or self.tag or "latest"

    @property
    def pinned(self) -> bool:
        return bool(self.digest)

    @property
    def pulled_tag(self) -> str:
        """The tag that is pulled when there is no digest: ``latest`` when none is written."""
        return self.tag or ("" if self.digest else "latest")

    @property
    def path(self) -> str:
        """``host/repository``: the reference without tag or digest."""
        return f"{self.host}/{self.repository}"

    @classmethod
    def _split(cls, ref: str) -> tuple[str, str, str]:
        """``(name, tag, digest)`` of a reference."""
        name, _, digest = ref.partition("@")
        tag = ""
        last = name.rsplit("/", 1)[-1]
        if ":" in last:
            name, _, tag = name.rpartition(":")
        return name, tag, digest

    @classmethod
    def parse(cls, ref: str) -> Reference:
        """A reference that names its registry host; :class:`RegistryError` otherwise."""
        ref = ref.removeprefix("oci://")
        name, tag, digest = cls._split(ref)
        host, _, repository = name.partition("/")
        if not repository or not _is_host(host):
            raise RegistryError(f"registry reference {ref!r} has no registry host; write it as host[:port]/path")
        return cls(host=host, repository=repository, tag=tag, digest=digest, name=name)

    @classmethod
    def docker(cls, image: str) -> Reference:
        """``image`` as Docker reads it; :class:`ValueError` when it is not a valid image reference."""
        rest, at, digest = image.partition("@")
        if at and not (_DIGEST.fullmatch(digest) and (not digest.startswith("sha256:") or _SHA256.fullmatch(digest))):
            raise ValueError(f"{image!r} has a malformed digest")
        name, tag = rest, ""
        colon = rest.rfind(":")
        if colon > rest.rfind("/"):
            name, tag = rest[:colon], rest[colon + 1:]
            if not _TAG.fullmatch(tag):
                raise ValueError(f"{image!r} has a malformed tag")
        first, slash, after = name.partition("/")
        if not slash or (not _is_host(first) and first == first.lower()):
            host, repository = DOCKER_HUB, name
        else:
            host, repository = first.lower(), after
            if not _DOMAIN.fullmatch(first):
                raise ValueError(f"{image!r} has a malformed registry host {first!r}")
        if host in _HUB_NAMES:
            host = DOCKER_HUB
            if "/" not in repository:
                repository = f"library/{repository}"
        if not repository or len(repository) > 255 or not all(
            _PATH_COMPONENT.fullmatch(part) for part in repository.split("/")
        ):
            raise ValueError(f"{image!r} has a malformed repository name (lower-case letters, digits, . _ - and /)")
        return cls(host=host, repository=repository, tag=tag, digest=digest, name=name)


def chart_remote(registry: str, chart_registry: str | None = None) -> str:
    """Where charts go: ``oci://<registry>/charts`` unless overridden."""
    remote = chart_registry or f"oci://{registry.rstrip('/')}/charts"
    if not remote.startswith("oci://"):
        raise ChartError(f"chart registry {remote!r} must start with oci://, e.g. oci://ghcr.io/org/charts")
    return remote.rstrip("/")
