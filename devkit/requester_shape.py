"""A build context shaped like FMA's requester image, for BuildKit tests and the bench.

Upstream's requester Dockerfile compiles its Go binary in a stage ``FROM --platform=$BUILDPLATFORM``
(the build machine's own platform, cross-compiling with GOOS/GOARCH from ``TARGETOS``/``TARGETARCH``)
and copies the binary into a final stage of the target platform. Here the builder stage records the
machine it ran on and the target it was asked for, and can be given CPU work of the kind a compile does
(a shell loop and a checksum over generated data); the final stage records its own machine.
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

DOCKERFILE = "Dockerfile.requester"


@dataclass(frozen=True)
class Work:
    """CPU work for the builder stage: a busybox ``sh`` loop of ``loops`` turns and an md5 of ``megabytes``."""

    loops: int = 0
    megabytes: int = 0


def builder_script(nonce: str, work: Work = Work()) -> str:
    """The builder stage's script (``$TARGETOS``/``$TARGETARCH`` come from its ARGs)."""
    lines = [
        "set -e",
        f"# build {nonce}",
        "/bin/busybox mkdir -p bin",
        "/bin/busybox uname -m > bin/builder-arch",
        'echo "$TARGETOS/$TARGETARCH" > bin/target',
    ]
    if work.loops:
        lines.append(f"i=0; while [ $i -lt {work.loops} ]; do i=$((i+1)); done")
    if work.megabytes:
        lines.append(f"/bin/busybox dd if=/dev/zero bs=1048576 count={work.megabytes} 2>/dev/null "
                     "| /bin/busybox md5sum > bin/work")
    lines.append("/bin/busybox cp src/main.txt bin/requester")
    return "\n".join(lines) + "\n"


def dockerfile_text(base: str) -> str:
    """The requester-shaped Dockerfile: a native builder stage, a final stage of the target platform."""
    return (
        f"FROM --platform=$BUILDPLATFORM {base} AS builder\n"
        "ARG TARGETOS\n"
        "ARG TARGETARCH\n"
        "WORKDIR /workspace\n"
        "COPY build.sh build.sh\n"
        "COPY src/ src/\n"
        'RUN ["/bin/busybox", "sh", "build.sh"]\n'
        "\n"
        f"FROM {base}\n"
        "WORKDIR /\n"
        "COPY --from=builder /workspace/bin/ /app/\n"
        'RUN ["/bin/busybox", "sh", "-c", "/bin/busybox uname -m > /app/final-arch"]\n'
        'ENTRYPOINT ["/bin/busybox", "cat", "/app/requester"]\n'
    )


def make_requester_context(path: Path, base: str, nonce: str, work: Work = Work()) -> Path:
    """Write the context (Dockerfile, build script, a source file) to ``path``; its Dockerfile's path."""
    (path / "src").mkdir(parents=True, exist_ok=True)
    (path / "src" / "main.txt").write_text(f"requester {nonce}\n")
    (path / "build.sh").write_text(builder_script(nonce, work))
    dockerfile = path / DOCKERFILE
    dockerfile.write_text(dockerfile_text(base))
    return dockerfile


def saved_files(saved: bytes) -> dict[str, bytes]:
    """The file system of an image written by ``docker save`` (engine ``get_image``): its layers in order."""
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(saved)) as outer:
        manifest = json.loads(_member(outer, "manifest.json"))
        for layer in manifest[0]["Layers"]:
            with tarfile.open(fileobj=io.BytesIO(_member(outer, layer))) as inner:
                for member in inner.getmembers():
                    if member.isfile():
                        files["/" + member.name.removeprefix("./")] = _member(inner, member.name)
    return files


def _member(archive: tarfile.TarFile, name: str) -> bytes:
    found = archive.extractfile(name)
    if found is None:
        raise ValueError(f"{name} is not a file in the saved image")
    return found.read()
