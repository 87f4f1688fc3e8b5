"""Platforms and multi-platform tags (pure).

A multi-platform image is one build per platform, each pushed under a tag of its own
(``<tag>-linux-arm64``, as goreleaser does: the engine can only push a tag), and one OCI
image index under the release tag whose entries name each platform's manifest by digest.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_PLATFORM = "linux/amd64"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"

_PART = re.compile(r"[a-z0-9_]+")
# The emulator a build of an architecture needs on another one (binfmt_misc handler names).
QEMU_ARCH = {"arm64": "aarch64", "arm": "arm", "amd64": "x86_64", "386": "i386", "ppc64le": "ppc64le",
             "s390x": "s390x", "riscv64": "riscv64"}


@dataclass(frozen=True, order=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def oci(self) -> dict[str, str]:
        """The ``platform`` object of an image index entry."""
        found = {"architecture": self.architecture, "os": self.os}
        return {**found, "variant": self.variant} if self.variant else found

    def build_args(self) -> dict[str, str]:
        """The ``TARGET*`` build args BuildKit defines for a platform (the legacy builder does not)."""
        args = {"TARGETPLATFORM": str(self), "TARGETOS": self.os, "TARGETARCH": self.architecture}
        return {**args, "TARGETVARIANT": self.variant} if self.variant else args


def parse_platform(value: str) -> Platform:
    """``os/arch[/variant]`` in lowercase; :class:`ValueError` naming the fix otherwise."""
    parts = value.split("/")
    if not 2 <= len(parts) <= 3 or not all(_PART.fullmatch(p) for p in parts):
        raise ValueError(f"platform {value!r} must be os/arch or os/arch/variant in lowercase, e.g. linux/arm64")
    return Platform(*parts)


def platform_build_args(target: str, build: str) -> dict[str, str]:
    """``TARGET*`` and ``BUILD*`` build args of a build for ``target`` on an engine of platform ``build``."""
    built_on = parse_platform(build)
    args = {"BUILDPLATFORM": str(built_on), "BUILDOS": built_on.os, "BUILDARCH": built_on.architecture}
    if built_on.variant:
        args["BUILDVARIANT"] = built_on.variant
    return {**args, **parse_platform(target).build_args()}


def platform_tag(tag: str, platform: str) -> str:
    """The tag one platform's image is pushed under: ``v0.3.1-linux-arm64``."""
    return f"{tag}-{platform.replace('/', '-')}"


def config_platform(config: Mapping[str, Any]) -> Platform:
    """An image config's platform (``os``, ``architecture``, ``variant``)."""
    os_, arch, variant = (str(config.get(key) or "") for key in ("os", "architecture", "variant"))
    return Platform(os_, arch, variant)


@dataclass(frozen=True)
class IndexEntry:
    """One platform's manifest in an image index."""

    digest: str
    size: int
    media_type: str
    platform: Platform

    def oci(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size,
                "platform": self.platform.oci()}


def image_index(entries: Iterable[IndexEntry]) -> bytes:
    """The OCI image index of ``entries`` (in their order), as the bytes to PUT."""
    body = {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": [e.oci() for e in entries]}
    return json.dumps(body, separators=(",", ":")).encode()


def manifest_digest(body: bytes) -> str:
    return f"sha256:{hashlib.sha256(body).hexdigest()}"


def index_entries(manifest: Mapping[str, Any]) -> list[tuple[str, Platform]]:
    """``(digest, platform)`` of each entry of an image index (or manifest list); ``[]`` for anything else."""
    return [
        (str(m.get("digest")), config_platform(m.get("platform") or {}))
        for m in manifest.get("manifests") or []
    ]


def select_platform(manifest: Mapping[str, Any], platform: Platform) -> str:
    """The digest an index gives for ``platform`` (a missing arm64 variant matches v8), ``""`` if none."""
    for digest, found in index_entries(manifest):
        if (found.os, found.architecture) != (platform.os, platform.architecture):
            continue
        if found.variant == platform.variant or {found.variant, platform.variant} <= {"", "v8"}:
            return digest
    return ""


def exec_format_hint(lines: Iterable[str], platform: str) -> str:
    """A one-line explanation when a build step could not run for lack of an emulator, else ``""``."""
    if not any("exec format error" in line for line in lines):
        return ""
    arch = parse_platform(platform).architecture
    handler = QEMU_ARCH.get(arch, arch)
    return (
        f"this engine cannot run {platform} programs (exec format error: no binfmt_misc handler "
        f"qemu-{handler}); run scripts/setup.sh on the engine's machine to register qemu-user-static, "
        f"use an engine of that platform, or remove {platform} from 'platforms'"
    )
