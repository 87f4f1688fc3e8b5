"""Per-tag limit names, the flow wrapper, and the release event payloads (no server needed)."""

from __future__ import annotations

import inspect

import pytest

from flows.events import failure_payload, release_resource, success_payload
from tasks.control.concurrency import limit_name, one_run_per_tag
from tasks.core.errors import InvalidTagError
from tasks.core.redact import register
from tasks.run.result import ImageResult, PublishedChart, ReleaseResult


@pytest.mark.parametrize(
    ("tag", "name"),
    [("v0.3.1", "release-v0.3.1"), ("v0.3.0-rc.1", "release-v0.3.0-rc.1"), ("v1/../x y", "release-v1-..-x-y")],
)
def test_limit_name(tag: str, name: str) -> None:
    """One limit per tag, named release-<tag>, nothing a limit name may not hold."""
    assert limit_name(tag) == name


def test_a_namespace_gives_the_tag_a_limit_of_its_own() -> None:
    """FMA_SLOT_NAMESPACE: the same tag in two namespaces, two limits (and two holder records)."""
    from tasks.control.slots import holder_variable
    from tasks.run.settings import Settings

    namespace = Settings.from_env({"FMA_SLOT_NAMESPACE": "staging"}).slot_namespace
    assert limit_name("v0.3.1", namespace) == "release-staging-v0.3.1"
    assert limit_name("v0.3.1", "a b") == "release-a-b-v0.3.1"
    assert Settings.from_env({}).slot_namespace == ""
    names = {limit_name("v0.3.1"), limit_name("v0.3.1", "gw0"), limit_name("v0.3.1", "gw1")}
    assert len(names) == 3 and len({holder_variable(n) for n in names}) == 3


def test_wrapper_keeps_signature_and_docs() -> None:
    """Prefect builds the UI form from the wrapped function: signature and docstring stay."""

    def release(tag: str, source: str, dry_run: bool = False) -> str:
        """Release it.

        Args:
            tag: the tag.
        """
        return tag

    wrapped = one_run_per_tag(release)
    assert inspect.signature(wrapped) == inspect.signature(release)
    assert wrapped.__doc__ == release.__doc__ and wrapped.__name__ == "release"


def test_wrapper_refuses_bad_tag_before_any_limit() -> None:
    """A malformed tag fails before a limit is created (no Prefect API is touched)."""

    @one_run_per_tag
    def release(tag: str) -> str:
        raise AssertionError("the body must not run")

    with pytest.raises(InvalidTagError):
        release("v1.4")


def test_success_payload_lists_references() -> None:
    """The success event carries each image reference with its digest and the chart."""
    result = ReleaseResult(
        tag="v0.3.1", version="0.3.1", prerelease=False, registry="r", source_revision="c" * 40,
        images=(ImageResult(name="a", ref="r/a:v0.3.1", digest="sha256:1"),),
        charts=(PublishedChart(name="fma-controllers", ref="oci://r/charts/fma-controllers", version="0.3.1",
                               digest="sha256:2"),),
    )
    payload = success_payload(result)
    assert payload["images"] == ["r/a:v0.3.1@sha256:1"]
    assert payload["charts"] == ["oci://r/charts/fma-controllers:0.3.1"]
    assert success_payload(None) == {}


def test_failure_payload_is_one_masked_line() -> None:
    """The failure event carries the first line of the error, secrets masked."""
    register("s3cr3t-value")
    assert failure_payload("push failed: s3cr3t-value\ntraceback") == {"error": "push failed: ***"}
    assert failure_payload(None) == {"error": "the release failed"}


def test_release_resource() -> None:
    """The resource is the tag."""
    assert release_resource("v0.3.1") == {"prefect.resource.id": "fma.release.v0.3.1",
                                          "prefect.resource.name": "v0.3.1", "fma.release.tag": "v0.3.1"}
