"""A promotion's decisions (pure): what is attached to a digest, what a copy writes for referrers, which charts
are the release's, whether a promotion may go on unsigned, what a request accepts, and the destination's summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tasks.core.errors import ChartError, ReleaseError, SigningError
from tasks.core.status import Status
from tasks.oci.copy import (
    CopiedTag,
    CopyCounts,
    blobs,
    children,
    cosign_tags,
    is_index,
    merged_referrers,
    platform_tag_candidates,
    referrers_tag,
)
from tasks.promote.chart import unpack_chart
from tasks.promote.context import PromotionRequest
from tasks.promote.plan import (
    CopiedImage,
    Promoted,
    artifact_key,
    chart_names,
    copy_note,
    image_moves,
    image_result,
    left_at_source,
    promotion_result,
    signature_results,
    signing_requirement,
)
from tasks.run.config import DEFAULT_CONFIG
from tasks.run.options import PROMOTE_OPTIONS, form_fields, pinned_changes
from tasks.run.result import PublishedChart
from tasks.supplychain.verify import verify_command_line

D1, D2, D3, D4 = (f"sha256:{c * 64}" for c in "1234")
INDEX = "application/vnd.oci.image.index.v1+json"
IMAGE = "application/vnd.oci.image.manifest.v1+json"


def test_cosign_and_referrers_tags_of_a_digest() -> None:
    """cosign keeps a digest's signatures, attestations and SBOMs at sha256-<hex>.sig/.att/.sbom; the referrers
    tag schema at sha256-<hex>."""
    assert cosign_tags(D1) == [f"sha256-{'1' * 64}.sig", f"sha256-{'1' * 64}.att", f"sha256-{'1' * 64}.sbom"]
    assert referrers_tag(D1) == f"sha256-{'1' * 64}"
    with pytest.raises(ValueError, match="not a digest"):
        cosign_tags("latest")


def test_blobs_and_children_of_a_manifest() -> None:
    """An image names its config and layers (a foreign layer with urls stays where it is); an index its manifests."""
    image = {"config": {"digest": D1}, "layers": [{"digest": D2}, {"digest": D3, "urls": ["https://x"]}]}
    assert [b["digest"] for b in blobs(image)] == [D1, D2]
    index = {"manifests": [{"digest": D1, "platform": {}}, {"nodigest": 1}, "junk"]}
    assert [c["digest"] for c in children(index)] == [D1]
    assert is_index(INDEX, {}) and is_index("", index) and not is_index(IMAGE, image)


@given(st.lists(st.sampled_from([D1, D2, D3, D4]), max_size=4), st.lists(st.sampled_from([D1, D2, D3, D4]),
                                                                          max_size=4))
def test_the_referrers_index_gains_only_what_it_lacks(have: list[str], wanted: list[str]) -> None:
    """The target's referrers tag keeps its own entries and gains each wanted one it lacks; nothing to add: None."""
    existing = {"manifests": [{"digest": d, "mediaType": IMAGE} for d in dict.fromkeys(have)]} if have else None
    merged = merged_referrers(existing, [{"digest": d, "mediaType": IMAGE} for d in dict.fromkeys(wanted)])
    if set(wanted) <= set(have):
        assert merged is None
        return
    assert merged is not None
    body = json.loads(merged)
    assert body["mediaType"] == INDEX
    assert [m["digest"] for m in body["manifests"]] == list(dict.fromkeys([*have, *wanted]))


def test_platform_tags_are_the_tag_with_a_platform_after_it() -> None:
    """Candidates for an index's platform tags: <tag>-<os>..., not the tag itself, another tag or cosign's."""
    tags = ["v0.6.4", "v0.6.4-linux-amd64", "v0.6.4-linux-arm64-v8", "v0.6.40", "v0.6.4-1", "sha256-ab.sig",
            "v0.6.4-linux-amd64.sig", "v0.6.3-linux-amd64"]
    assert platform_tag_candidates(tags, "v0.6.4") == ["v0.6.4-linux-amd64", "v0.6.4-linux-arm64-v8"]


def test_each_image_moves_from_its_tag_to_the_same_tag_at_the_destination() -> None:
    (move,) = image_moves(["requester"], tag="v1.0.0", from_registry="a.io/x/", to_registry="b.io/y")
    assert (move.source, move.target, move.tag) == ("a.io/x/requester:v1.0.0", "b.io/y/requester:v1.0.0", "v1.0.0")


def test_chart_names_are_the_repositories_right_under_the_chart_path() -> None:
    listed = ["org/fma/charts/fma-controllers", "org/fma/charts/other", "org/fma/charts/a/deeper",
              "org/fma/requester", "org/fma/chartsx/no", "other/charts/x"]
    assert chart_names(listed, "org/fma/charts") == ["fma-controllers", "other"]


def test_left_at_source_names_the_release_images_still_at_the_source() -> None:
    rendered = ["ghcr.io/org/fma/dual-pods-controller:v1.0.0", "new.io/fma/launcher-populator:v1.0.0",
                "busybox:1.36", "ghcr.io/org/fma/unrelated:v1"]
    assert left_at_source(rendered, from_registry="ghcr.io/org/fma",
                          names=["dual-pods-controller", "launcher-populator"]) == \
        ["ghcr.io/org/fma/dual-pods-controller:v1.0.0"]
    assert left_at_source(rendered[1:], from_registry="ghcr.io/org/fma", names=["dual-pods-controller"]) == []


@pytest.mark.parametrize(("signed", "key", "note"), [
    (False, False, "unsigned: the release v1.0.0 at a.io/x is not signed, so neither is its promotion"),
    (False, True, "unsigned: the release v1.0.0 at a.io/x is not signed, so neither is its promotion"),
    (True, True, ""),
])
def test_an_unsigned_release_goes_unsigned_and_a_signed_one_with_its_key(signed: bool, key: bool, note: str) -> None:
    assert signing_requirement(signed=signed, key_configured=key, tag="v1.0.0", source="a.io/x") == note


def test_a_signed_release_without_a_key_is_one_line_naming_the_fix() -> None:
    with pytest.raises(SigningError) as err:
        signing_requirement(signed=True, key_configured=False, tag="v1.0.0", source="a.io/x")
    message = str(err.value)
    assert "\n" not in message and "is signed" in message and "FMA_SIGNING_KEY" in message
    assert message.endswith("nothing was copied")


# -- the request -----------------------------------------------------------------------------------


def parameters(**changes: Any) -> dict[str, Any]:
    return {"tag": "v1.0.0", "from_registry": "a.io/org/fma", "to_registry": "b.io/fma", **changes}


def test_a_request_fills_in_the_chart_registries() -> None:
    request = PromotionRequest.from_parameters(parameters(charts=["fma-controllers", "fma-controllers"]))
    assert (request.chart_from, request.chart_to) == ("oci://a.io/org/fma/charts", "oci://b.io/fma/charts")
    assert request.charts == ("fma-controllers",) and request.config_path == DEFAULT_CONFIG
    assert not request.same_host
    assert PromotionRequest.from_parameters(parameters(to_registry="a.io/other/")).same_host
    assert PromotionRequest.from_parameters(parameters(to_registry="a.io/other/")).to_registry == "a.io/other"


@pytest.mark.parametrize(("changes", "needle"), [
    ({"tag": "1.0"}, "invalid release tag"),
    ({"to_registry": "a.io/org/fma"}, "--from and --to are both a.io/org/fma"),
    ({"to_registry": "a.io/org/fma", "chart_registry_to": "oci://c.io/charts"}, "copied onto themselves"),
    ({"to_registry": "fma"}, "--to 'fma' names no registry host"),
    ({"from_registry": "oci://a.io/x"}, "write it without oci://"),
    ({"chart_registry_to": "c.io/charts"}, "must start with oci://"),
    ({"charts": ["../etc"]}, "is not a chart name"),
    ({"push_attempts": 0}, "at least 1"),
    ({"retry_base_delay": -1}, "must not be negative"),
])
def test_bad_requests_are_one_line(changes: dict[str, Any], needle: str) -> None:
    with pytest.raises(ReleaseError) as err:
        PromotionRequest.from_parameters(parameters(**changes))
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_a_promote_deployments_run_may_change_the_tag_and_retries_only() -> None:
    """Registries are the operator's; FMA_FORM_FIELDS may open them, and may name a promotion's options."""
    deployed = {"from_registry": "a.io/x", "to_registry": "b.io/y"}
    run = {**deployed, "tag": "v1.0.0", "to_registry": "evil.io/y", "push_attempts": 2}
    assert pinned_changes(run, deployed, form_fields("", PROMOTE_OPTIONS), PROMOTE_OPTIONS) == ["to_registry"]
    assert pinned_changes(run, deployed, form_fields("to_registry", PROMOTE_OPTIONS), PROMOTE_OPTIONS) == []
    assert form_fields("to_registry") == form_fields("")  # known, though no option of a release


def test_unpacking_a_chart_refuses_paths_out_of_it(tmp_path: Path) -> None:
    good = {"fma/Chart.yaml": b"name: fma\n", "fma/templates/a.yaml": b"x: 1\n"}
    assert unpack_chart(good, tmp_path / "ok") == tmp_path / "ok" / "fma"
    assert (tmp_path / "ok" / "fma" / "templates" / "a.yaml").read_bytes() == b"x: 1\n"
    for number, (files, needle) in enumerate((({**good, "fma/../../evil": b""}, "outside the chart"),
                                              ({**good, "other/Chart.yaml": b""}, "2 top directories"),
                                              ({"fma/values.yaml": b""}, "no fma/Chart.yaml"))):
        with pytest.raises(ChartError, match=needle):
            unpack_chart(files, tmp_path / f"bad{number}")
    assert not (tmp_path / "bad0").exists()  # refused before anything was written


# -- the destination's summary ---------------------------------------------------------------------


def copied(*, index: bool, wrote: bool = True, attached: tuple[str, ...] = ()) -> CopiedTag:
    manifest: dict[str, Any] = {"manifests": [
        {"digest": D2, "platform": {"os": "linux", "architecture": "amd64"}},
        {"digest": D3, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}}]} if index else \
        {"config": {"digest": D4}, "layers": []}
    counts = CopyCounts(manifests=3 if wrote else 0, blobs_mounted=4 if wrote else 0)
    tags = tuple((tag, D4) for digest in (D1, D2, D3) for tag in cosign_tags(digest)[:2]
                 if tag.endswith(attached))
    return CopiedTag(tag="v1.0.0", digest=D1, media_type=INDEX if index else IMAGE, manifest=manifest,
                     counts=counts, platform_tags=(("v1.0.0-linux-arm64", D3),) if index else (), attached=tags)


def test_an_index_in_the_summary_lists_each_platform_with_its_tag_or_digest() -> None:
    image = image_result(CopiedImage(name="requester", target="b.io/fma/requester:v1.0.0",
                                     copied=copied(index=True)))
    assert (image.digest, image.status) == (D1, Status.COPIED)
    assert [(p.platform, p.ref, p.digest) for p in image.platforms] == [
        ("linux/amd64", f"b.io/fma/requester@{D2}", D2),
        ("linux/arm64/v8", "b.io/fma/requester:v1.0.0-linux-arm64", D3)]
    alone = image_result(CopiedImage(name="launcher", target="b.io/fma/launcher:v1.0.0",
                                     copied=copied(index=False, wrote=False), platform="linux/amd64"))
    assert alone.status == Status.ALREADY_PUBLISHED and not alone.is_index
    assert [(p.platform, p.ref) for p in alone.platforms] == [("linux/amd64", "b.io/fma/launcher:v1.0.0")]


def test_signatures_in_the_summary_follow_what_was_attached() -> None:
    image = CopiedImage(name="requester", target="b.io/fma/requester:v1.0.0",
                        copied=copied(index=True, attached=(".sig", ".att")))
    results = signature_results(image)
    assert [(r.artifact, r.signature, r.provenance, r.sbom) for r in results] == [
        ("requester", Status.COPIED, Status.COPIED, None),
        ("requester linux/amd64", Status.COPIED, Status.COPIED, Status.COPIED),
        ("requester linux/arm64/v8", Status.COPIED, Status.COPIED, Status.COPIED)]
    unsigned = CopiedImage(name="requester", target="b.io/fma/requester:v1.0.0", copied=copied(index=True))
    assert signature_results(unsigned) == []


def test_the_destination_summary_names_the_destination_and_how_to_verify_it() -> None:
    images = (CopiedImage(name="requester", target="b.io/fma/requester:v1.0.0",
                          copied=copied(index=True, attached=(".sig", ".att"))),)
    chart = PublishedChart(name="fma-controllers", ref="oci://b.io/fma/charts/fma-controllers", version="1.0.0",
                           digest=D4)
    result = promotion_result(
        Promoted(images=images, charts=(chart,)), tag="v1.0.0", version="1.0.0", prerelease=False,
        to_registry="b.io/fma", chart_to="oci://b.io/fma/charts", from_registry="a.io/x", same_host=False,
        revision="abc", config_path=DEFAULT_CONFIG, public_key="sha256:" + "f" * 64)
    assert result.registry == "b.io/fma" and result.signed
    assert result.verify_command == ("fma-release verify v1.0.0 --key cosign.pub --registry b.io/fma "
                                     "--chart fma-controllers")
    assert result.notes[0] == "promoted from a.io/x: 1 of 1 image(s) copied by digest, 0 blob(s) uploaded (0 bytes)"
    assert copy_note(images, from_registry="a.io/x", same_host=True).endswith(
        "4 blob(s) mounted, 0 uploaded (0 bytes)")


def test_the_verify_command_is_the_releases_own_when_nothing_differs() -> None:
    assert verify_command_line("v1.0.0", registry="a.io/x", chart_registry="oci://a.io/x/charts",
                               config_path=DEFAULT_CONFIG, charts=["c"], source="/src") == \
        "fma-release verify v1.0.0 --key cosign.pub --registry a.io/x --source /src --chart c"
    assert "--chart-registry oci://c.io/charts --config /x.yaml" in verify_command_line(
        "v1.0.0", registry="a.io/x", chart_registry="oci://c.io/charts", config_path=Path("/x.yaml"), charts=[])


def test_the_artifact_key_is_a_prefect_key() -> None:
    key = artifact_key("0.6.4-rc.1", "127.0.0.1:5000/Org/FMA")
    assert key == "promotion-0-6-4-rc-1-127-0-0-1-5000-org-fma"
