"""A Go toolchain image made from this machine's Go, for Dockerfiles whose builder stage runs ``go build``.

No Go image can be pulled here, so one is built ``FROM scratch``: a static busybox (for a shell)
and the machine's GOROOT (``go env GOROOT``; Go's own binaries are static), trimmed to what
building needs (bin/, pkg/tool/linux_amd64, pkg/include, src/ without tests, lib/, go.env,
VERSION). It is built once per engine as ``fma-sample-go:<go version>`` and, when asked,
pushed to a registry as a plain linux/amd64 image.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import docker
import docker.errors

BUSYBOX = Path("/bin/busybox")
LOCAL_NAME = "fma-sample-go"
REGISTRY_NAME = "golang"
_KEEP = ("bin", "pkg/tool/linux_amd64", "pkg/include", "src", "lib", "go.env", "VERSION")
# COPY first (the legacy builder's platform check on FROM scratch), then a shell and a /tmp.
_DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
COPY go /usr/local/go
RUN ["/bin/busybox", "sh", "-c", "/bin/busybox --install -s /bin && mkdir -p /tmp && chmod 1777 /tmp"]
ENV PATH=/usr/local/go/bin:/bin GOROOT=/usr/local/go GOPATH=/tmp/go GOCACHE=/tmp/gocache \\
    GOFLAGS=-buildvcs=false GOTOOLCHAIN=local
WORKDIR /workspace
"""


def go_env() -> tuple[Path, str]:
    """The machine's GOROOT and Go version (``1.26.8``)."""
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("no go on PATH: install Go (the polyglot machines have it at /usr/local/go/bin)")
    out = subprocess.run([go, "env", "GOROOT", "GOVERSION"], capture_output=True, text=True, check=True, timeout=60)
    goroot, version = out.stdout.split()
    return Path(goroot), version.removeprefix("go")


def _skip_tests(directory: str, names: list[str]) -> set[str]:
    return {name for name in names if name == "testdata" or name.endswith("_test.go")}


def copy_goroot(goroot: Path, target: Path) -> None:
    """Copy the parts of ``goroot`` that building needs to ``target`` (tests and test data left out)."""
    for part in _KEEP:
        source = goroot / part
        if source.is_dir():
            shutil.copytree(source, target / part, ignore=_skip_tests, symlinks=True)
        elif source.is_file():
            (target / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / part)


def go_builder_image(client: docker.APIClient, registry: str = "") -> str:
    """The Go toolchain image: built once per engine; with ``registry``, also pushed there as
    ``<registry>/golang:<version>`` (linux/amd64), and that reference is returned."""
    if registry:
        return publish_go_builder(client, registry)[0]
    return local_go_builder(client)


def local_go_builder(client: docker.APIClient) -> str:
    """``fma-sample-go:<version>`` in the engine, built when it is not there."""
    goroot, version = go_env()
    local = f"{LOCAL_NAME}:{version}"
    try:
        client.inspect_image(local)
    except docker.errors.ImageNotFound:
        _build(client, local, goroot)
    return local


def publish_go_builder(client: docker.APIClient, registry: str) -> tuple[str, str]:
    """The Go toolchain image pushed as ``<registry>/golang:<version>``: its reference and digest."""
    local = local_go_builder(client)
    version = local.rsplit(":", 1)[1]
    repository = f"{registry.rstrip('/')}/{REGISTRY_NAME}"
    client.tag(local, repository, version)
    return f"{repository}:{version}", push(client, repository, version)


def _build(client: docker.APIClient, tag: str, goroot: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="fma-go-") as tmp:
        context = Path(tmp)
        shutil.copy2(BUSYBOX, context / "busybox")
        copy_goroot(goroot, context / "go")
        (context / "Dockerfile").write_text(_DOCKERFILE)
        for item in client.build(path=str(context), tag=tag, rm=True, forcerm=True, decode=True,
                                 labels={"fma-sample.go-root": str(goroot)}):
            if "error" in item:
                raise RuntimeError(f"cannot build {tag}: {item['error']}")


def push(client: docker.APIClient, repository: str, tag: str) -> str:
    """Push ``repository:tag`` from the engine; return its manifest digest."""
    digest = ""
    for item in client.push(repository, tag=tag, stream=True, decode=True):
        if "error" in item:
            raise RuntimeError(f"cannot push {repository}:{tag}: {item['error']}")
        digest = (item.get("aux") or {}).get("Digest", digest)
    if not digest:
        raise RuntimeError(f"the push of {repository}:{tag} reported no digest")
    return str(digest)
