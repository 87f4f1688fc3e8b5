"""Base images of a Dockerfile and the staging copy that pins them by digest (pure)."""

from __future__ import annotations

import pytest

from tasks.builders.bases import base_uses
from tasks.builders.dockerfile import BaseImage, base_images, declared_args, expand, instruction_line, pin_bases
from tasks.oci.references import Reference
from tasks.run.facts import BaseUse

GO = """\
# syntax comment
ARG GO_IMAGE=golang:1.24
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM ${GO_IMAGE} AS build
RUN go build
FROM build AS test
RUN go test
FROM --platform=$BUILDPLATFORM \\
     127.0.0.1:5000/tools/busybox:1 AS tools
FROM scratch AS empty
FROM ${RUNTIME_IMAGE}
COPY --from=build /out /out
"""


def test_base_images_expand_global_args_and_skip_scratch_and_stages() -> None:
    """Global ARG defaults (build args win) are expanded; scratch and earlier stages are no base."""
    bases = base_images(GO, {"RUNTIME_IMAGE": "127.0.0.1:5000/base/static:2", "BUILDPLATFORM": "linux/amd64"})
    assert bases == [
        BaseImage(line=4, end=5, image="golang:1.24", platform="", stage="AS build"),
        BaseImage(line=8, end=10, image="127.0.0.1:5000/tools/busybox:1", platform="linux/amd64", stage="AS tools"),
        BaseImage(line=11, end=12, image="127.0.0.1:5000/base/static:2", platform="", stage=""),
    ]


def test_pin_bases_rewrites_only_the_pinned_from_lines() -> None:
    """Each pinned FROM names its digest and keeps its stage name; every other line is untouched and keeps its
    number (a FROM of two lines becomes one and a blank one)."""
    bases = base_images(GO, {"BUILDPLATFORM": "linux/amd64"})
    pins = {
        bases[0].line: "golang@sha256:" + "a" * 64,
        bases[1].line: "--platform=linux/amd64 127.0.0.1:5000/tools/busybox@sha256:" + "b" * 64,
        bases[2].line: "gcr.io/distroless/static-debian12@sha256:" + "c" * 64,
    }
    lines = pin_bases(GO, pins).splitlines()
    assert lines[4] == "FROM golang@sha256:" + "a" * 64 + " AS build"
    assert lines[8] == "FROM --platform=linux/amd64 127.0.0.1:5000/tools/busybox@sha256:" + "b" * 64 + " AS tools"
    assert lines[9] == ""
    assert lines[10] == "FROM scratch AS empty"
    assert lines[11] == "FROM gcr.io/distroless/static-debian12@sha256:" + "c" * 64
    assert lines[:4] == GO.splitlines()[:4] and lines[12] == "COPY --from=build /out /out"
    assert len(lines) == len(GO.splitlines())
    assert pin_bases(GO, {}) == GO


def test_each_base_is_known_as_the_source_writes_it_and_as_pulled_from_its_mirror() -> None:
    """Every FROM's image as written (ARGs expanded) with its file:line, beside the pinned reference the
    build pulled, and the mirror reference when a mirror rewrote it."""
    args = {"BUILDPLATFORM": "linux/amd64"}
    mirrors = {"docker.io": "127.0.0.1:5000/hub", "gcr.io": "127.0.0.1:5000/gcr"}
    bases = base_images(GO, args)
    pins = {
        bases[0].line: "127.0.0.1:5000/hub/library/golang@sha256:" + "a" * 64,
        bases[1].line: "--platform=linux/amd64 127.0.0.1:5000/tools/busybox@sha256:" + "b" * 64,
        bases[2].line: "127.0.0.1:5000/gcr/distroless/static-debian12@sha256:" + "c" * 64,
    }
    golang, tools, runtime = base_uses(GO, pin_bases(GO, pins), build_args=args, mirrors=mirrors,
                                       where="dockerfiles/Dockerfile.go")
    assert golang == BaseUse(image="127.0.0.1:5000/hub/library/golang@sha256:" + "a" * 64, written="golang:1.24",
                             where="dockerfiles/Dockerfile.go:5", mirror="127.0.0.1:5000/hub/library/golang:1.24")
    assert (tools.platform, tools.written, tools.where, tools.mirror) == (
        "linux/amd64", "127.0.0.1:5000/tools/busybox:1", "dockerfiles/Dockerfile.go:9", "")
    assert (runtime.written, runtime.where, runtime.mirror) == (
        "gcr.io/distroless/static-debian12:nonroot", "dockerfiles/Dockerfile.go:12",
        "127.0.0.1:5000/gcr/distroless/static-debian12:nonroot")


def test_scratch_only_dockerfile_has_no_base() -> None:
    """A FROM scratch Dockerfile needs no resolution at all."""
    assert base_images("FROM scratch\nCOPY busybox /bin/busybox\n", {}) == []


@pytest.mark.parametrize(
    ("image", "name"),
    [
        ("golang:1.24", ("golang", "registry-1.docker.io", "library/golang", "1.24")),
        ("busybox", ("busybox", "registry-1.docker.io", "library/busybox", "latest")),
        ("docker.io/x/y:1", ("docker.io/x/y", "registry-1.docker.io", "x/y", "1")),
        ("gcr.io/distroless/static:nonroot", ("gcr.io/distroless/static", "gcr.io", "distroless/static",
                                                        "nonroot")),
        ("127.0.0.1:5000/a/b@sha256:" + "ab" * 32,
         ("127.0.0.1:5000/a/b", "127.0.0.1:5000", "a/b", "sha256:" + "ab" * 32)),
        ("localhost:5000/x", ("localhost:5000/x", "localhost:5000", "x", "latest")),
    ],
)
def test_image_name(image: str, name: tuple[str, str, str, str]) -> None:
    """Docker's reading of an image reference: default host, library/ prefix, tag or digest."""
    ref = Reference.docker(image)
    assert (ref.name, ref.host, ref.repository, ref.reference) == name


def test_expand_and_declared_args() -> None:
    """${VAR:-default} and ${VAR:+alt} expand as in a Dockerfile; ARG names are collected."""
    assert expand("${A:-x}-${B:+y}-$C", {"B": "1", "C": "c"}) == "x-y-c"
    assert declared_args(GO + "ARG TARGETARCH=amd64 TARGETOS\n") >= {"GO_IMAGE", "TARGETARCH", "TARGETOS"}


@pytest.mark.parametrize(
    ("step", "line"),
    [
        ("[build 2/2] RUN go build", 6),
        ("[test 2/2] RUN go test", 8),
        ("[stage-4 2/2] COPY --from=build /out /out", 13),
        ("[2/2] COPY --from=build /out /out", 13),
        ("[tools 2/3] RUN apk add   make \\\n gcc", 0),  # no such instruction
        ("[build 1/2] FROM golang:1.24", 0),  # BuildKit names a FROM pinned: not told
        ("load build definition from Dockerfile", 0),
        ("[test 2/2] RUN go build", 0),  # in another stage
    ],
)
def test_instruction_line_finds_a_buildkit_step_in_its_stage(step: str, line: int) -> None:
    """A step's instruction is found in the stage BuildKit names (by name, stage-N, or any), at its first line."""
    assert instruction_line(GO, step) == line


def test_instruction_line_joins_continuations_expands_variables_and_refuses_twins() -> None:
    """A RUN of several lines is found at its first; a build arg BuildKit expanded in the name still matches;
    an instruction written twice in the stage is not told."""
    text = ("FROM x AS b\nRUN echo a && \\\n    echo b\nRUN true\nRUN true\n"
            'ARG TARGETOS\nRUN ["sh", "-c", "echo for ${TARGETOS}/$TARGETARCH $(uname -m)"]\n')
    assert instruction_line(text, "[b 1/3] RUN echo a &&     echo b") == 2
    assert instruction_line(text, "[b 2/3] RUN true") == 0
    assert instruction_line(text, '[b 4/4] RUN ["sh", "-c", "echo for linux/arm64 $(uname -m)"]') == 7
    assert instruction_line(text, '[b 4/4] RUN ["sh", "-c", "echo for ${TARGETOS}/$TARGETARCH $(uname -m)"]') == 7
    assert instruction_line(text, '[b 4/4] RUN ["sh", "-c", "echo from linux/arm64 $(uname -m)"]') == 0
