"""What a failed build puts on the console beside its one-line error: the step's own last lines, bounded and
masked, and a base that cannot be had named as the Dockerfile writes it (pure)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from tasks.builders.bases import _unreachable, base_failure
from tasks.builders.docker import lost_cached_image, step_output
from tasks.builders.dockerfile import BaseImage
from tasks.core import progress
from tasks.core.errors import OUTPUT_LINES, OUTPUT_WIDTH, ImageBuildError, RegistryError, bounded_output
from tasks.core.redact import register
from tasks.core.status import Status


@given(st.lists(st.text(max_size=400)), st.integers(min_value=0, max_value=10), st.integers(min_value=4, max_value=300))
def test_bounded_output_is_a_few_short_lines(lines: list[str], limit: int, width: int) -> None:
    """Never more than the limit, never a line over the width, never a blank line."""
    kept = bounded_output(lines, limit, width)
    assert len(kept) <= limit
    assert all(0 < len(line) <= width and line.strip() for line in kept)


def test_bounded_output_keeps_the_last_lines_masked() -> None:
    """The last lines are the ones kept (an error comes last); a registered secret is masked in them."""
    register("hunter2-token")
    lines = [f"line {n}" for n in range(20)] + ["auth hunter2-token refused", "", "x" * 500]
    kept = bounded_output(lines)
    assert len(kept) == OUTPUT_LINES and kept[-2] == "auth *** refused"
    assert len(kept[-1]) == OUTPUT_WIDTH and kept[-1].endswith("...")
    assert ImageBuildError("requester", "failed", output=lines).output == kept


@pytest.fixture
def reports() -> Iterator[list[tuple[str, str, str]]]:
    seen: list[tuple[str, str, str]] = []

    def listen(item: str, state: str, detail: str) -> None:
        seen.append((item, state, detail))

    progress.subscribe(listen)
    yield seen
    progress.unsubscribe(listen)


def test_a_failure_is_reported_then_its_output(reports: list[tuple[str, str, str]]) -> None:
    """The one-line failure first, then each output line; a transient error has no output to show."""
    with pytest.raises(ImageBuildError), progress.reporting("requester"):
        raise ImageBuildError("requester", "image requester failed to build", output=["a", "b"])
    with pytest.raises(RegistryError), progress.reporting("launcher", transient_state=Status.PUSH_FAILED):
        raise RegistryError("503", transient=True)
    assert reports == [("requester", Status.FAILED, "image requester failed to build"),
                       ("requester", Status.OUTPUT, "a"), ("requester", Status.OUTPUT, "b"),
                       ("launcher", Status.PUSH_FAILED, "503")]


FROM = BaseImage(line=2, end=3, image="quay.io/projectquay/golang:1.26", platform="linux/amd64", stage="AS builder")


def test_an_unreachable_base_names_its_from_line_and_mirrors() -> None:
    """Not mirrored: the registry the source names, the FROM line and its place, and mirrors: as the way out."""
    message = base_failure("requester linux/amd64", FROM, FROM.image, dockerfile="dockerfiles/Dockerfile.requester",
                           problem="cannot reach the registry quay.io (ConnectionError)", unreachable=True)
    assert message == (
        "image requester linux/amd64: cannot reach the registry quay.io for the base image of FROM "
        "quay.io/projectquay/golang:1.26 (dockerfiles/Dockerfile.requester line 3); if it cannot be reached from "
        "here, point the image at a registry that has it with mirrors: in the release config (mirrors: {quay.io: "
        "<registry>/<path>}), or change the FROM line")


def test_an_unreachable_mirror_names_the_mirror_and_its_entry() -> None:
    """Mirrored: the FROM as written, the mirror it was pulled from, and that entry of mirrors: to check."""
    mirror = "127.0.0.1:9/mirror/projectquay/golang:1.26"
    message = base_failure("launcher (linux/amd64)", FROM, mirror, dockerfile="dockerfiles/Dockerfile.launcher",
                           problem="cannot reach the registry 127.0.0.1:9", unreachable=True)
    assert message == (
        "image launcher (linux/amd64): cannot reach the registry 127.0.0.1:9 for the base image of FROM "
        "quay.io/projectquay/golang:1.26 (dockerfiles/Dockerfile.launcher line 3), from its mirror "
        f"{mirror} (mirrors: in the release config); check that entry of mirrors: and that 127.0.0.1:9 answers")
    missing = base_failure("launcher (linux/amd64)", FROM, mirror, dockerfile="D", problem="not in its registry",
                           unreachable=False)
    assert missing.endswith(f"from its mirror {mirror} (mirrors: in the release config): not in its registry "
                            "(or fix that entry of mirrors:)")


def test_only_a_registry_that_does_not_answer_is_unreachable() -> None:
    """A refused connection or a timeout is; TLS, a reply, or no cause at all is not."""
    def raised(cause: BaseException | None) -> RegistryError:
        err = RegistryError("x")
        err.__cause__ = cause
        return err

    assert _unreachable(raised(requests.exceptions.ConnectionError("refused")))
    assert _unreachable(raised(requests.exceptions.ReadTimeout("slow")))
    assert not _unreachable(raised(requests.exceptions.SSLError("x509")))
    assert not _unreachable(raised(None))


def test_legacy_builder_output_is_what_the_failing_step_printed() -> None:
    """The lines after the last `Step N/M`, without the builder's own bookkeeping lines."""
    lines = ["Step 1/3 : FROM busybox", " ---> 1234", "Step 3/3 : RUN ./fetch.sh", " ---> Running in abc",
             "attempt 1", "fetch: no route"]
    assert step_output(lines) == ("attempt 1", "fetch: no route")
    assert step_output([]) == ()


@pytest.mark.parametrize(("message", "lost"), [
    ('COPY busybox /bin/busybox: unable to find image "sha256:9e1b1a67cff8313ba10a54ff01803c301b2463edcea92ed"', True),
    ("pull access denied for upstream.invalid/static, repository does not exist", False),
    ("No such image: fma-bases/static:latest", False),
    ('The command \'/bin/sh -c false\' returned a non-zero code: 1', False),
])
def test_a_cached_image_deleted_mid_build_is_told_from_other_build_failures(message: str, lost: bool) -> None:
    assert lost_cached_image(message) is lost
