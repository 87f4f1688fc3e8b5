"""Image and chart references, parsed one way everywhere (pure).

``host[:port]/repository[:tag][@digest]``: :meth:`Reference.parse` reads a reference that must
name its registry (the release's images and charts, ``oci://`` or not); :meth:`Reference.docker`
reads one as Docker does, where no host means Docker Hub and a one-word name is under
``library/`` (base images in FROM lines, images a chart renders).
"""

from __future__ import annotations

from dataclasses import dataclass

from tasks.errors import RegistryError

DOCKER_HUB = "registry-1.docker.io"


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
        """``image`` as Docker reads it: no registry host means Docker Hub (``library/`` for one-word names)."""
        name, tag, digest = cls._split(image)
        first, _, rest = name.partition("/")
        if rest and _is_host(first):
            host, repository = first, rest
        else:
            host, repository = DOCKER_HUB, name if "/" in name else f"library/{name}"
        if host == "docker.io":
            host = DOCKER_HUB
        return cls(host=host, repository=repository, tag=tag, digest=digest, name=name)
