"""The pure parts of signing: what gets signed, the provenance predicate, when a run signs, verify's verdicts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tasks.control.preflight import NOTHING_CHANGED
from tasks.core.status import Status
from tasks.run.config import DEFAULT_CONFIG, ReleaseConfig
from tasks.run.context import ReleaseRequest
from tasks.run.facts import BaseUse, BuildFacts, ReleaseFacts, SigningKey
from tasks.run.result import (
    BuiltImage,
    ImageResult,
    PlatformResult,
    PublishedChart,
    PushedImage,
    ReleaseResult,
    SignatureResult,
)
from tasks.signing import builder_sbom
from tasks.summary import artifacts_markdown, release_notes, render_summary, verify_command
from tasks.supplychain.provenance import (
    BASE_DIGEST,
    BASE_NAME,
    Manifest,
    build_for,
    manifests_to_sign,
    provenance_predicate,
    subjects_match,
)
from tasks.supplychain.signer import UNSIGNED, build_facts, signing_decision
from tasks.supplychain.verify import OK, Check, failure_line, render_table

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
C = "sha256:" + "c" * 64
FACTS = ReleaseFacts(tag="v0.6.4", source="https://example.test/fma.git", registry="r.test/fma",
                     config_path="release.yaml", config_digest="d" * 64, revision="1" * 40, run_id="run-1",
                     run_url="http://prefect.test/flow-runs/flow-run/run-1", versions=(("cosign", "v2.6.5"),))


def index(*entries: tuple[str, str], annotations: dict[str, str] | None = None) -> dict[str, object]:
    return {"mediaType": "application/vnd.oci.image.index.v1+json", "annotations": annotations or {},
            "manifests": [{"digest": d, "platform": {"os": p.split("/")[0], "architecture": p.split("/")[1]}}
                          for p, d in entries]}


def test_an_index_is_signed_with_each_platform_manifest_and_only_platforms_want_an_sbom() -> None:
    found = manifests_to_sign(A, index(("linux/amd64", B), ("linux/arm64", C)))
    assert [(m.digest, m.platform, m.is_index, m.wants_sbom) for m in found] == [
        (A, "", True, False), (B, "linux/amd64", False, True), (C, "linux/arm64", False, True)]
    assert found[0].entries == (("linux/amd64", B), ("linux/arm64", C))


def test_a_single_image_is_one_manifest_that_wants_an_sbom() -> None:
    (only,) = manifests_to_sign(A, {"config": {"digest": B}, "layers": []})
    assert (only.digest, only.is_index, only.wants_sbom) == (A, False, True)


def test_provenance_names_tag_source_config_commit_bases_run_and_times() -> None:
    cuda = BaseUse(f"r.test/cuda@{B}", written="nvcr.io/nvidia/cuda:12.8", where="dockerfiles/Dockerfile.requester:9",
                   mirror="r.test/cuda:12.8")
    build = BuildFacts(name="requester", builder="dockerfile", fingerprint="f1", platform="linux/arm64",
                       bases=(cuda, BaseUse("r.test/tools:1", platform="linux/amd64")),
                       started="2026-12-02T10:00:00Z", finished="2026-12-02T10:01:00Z")
    manifest = Manifest(digest=A, platform="linux/arm64")
    predicate = provenance_predicate(FACTS, build, manifest, image="r.test/fma/requester", builder="dockerfile")
    definition = predicate["buildDefinition"]
    assert definition["externalParameters"]["tag"] == "v0.6.4"
    assert definition["externalParameters"]["config"]["digest"] == {"sha256": "d" * 64}
    assert definition["externalParameters"]["platform"] == "linux/arm64"
    commit, cuda, tools = definition["resolvedDependencies"]
    assert commit == {"uri": "git+https://example.test/fma.git@refs/tags/v0.6.4", "digest": {"gitCommit": "1" * 40}}
    assert cuda["digest"] == {"sha256": "b" * 64} and cuda["uri"].endswith("?platform=linux%2Farm64")
    # pulled from the mirror, written in the source as the FROM line says
    assert cuda["annotations"] == {"writtenAs": "nvcr.io/nvidia/cuda:12.8",
                                   "writtenIn": "dockerfiles/Dockerfile.requester:9", "mirror": "r.test/cuda:12.8"}
    # a builder stage's FROM --platform is its own; an unpinned base says so instead of a digest
    assert tools["uri"].endswith("?platform=linux%2Famd64") and "digest" not in tools
    assert tools["annotations"] == {"pinned": False}
    details = predicate["runDetails"]
    assert details["builder"] == {"id": FACTS.run_url, "version": {"cosign": "v2.6.5"}}
    assert details["metadata"] == {"invocationID": "run-1", "startedOn": "2026-12-02T10:00:00Z",
                                   "finishedOn": "2026-12-02T10:01:00Z"}


def test_ko_annotations_name_the_base_and_an_index_lists_its_platforms() -> None:
    annotations = ((BASE_DIGEST, C), (BASE_NAME, f"r.test/static@{B}"))
    top = Manifest(digest=A, is_index=True, entries=(("linux/amd64", B),), annotations=annotations)
    predicate = provenance_predicate(FACTS, None, top, image="r.test/fma/ctl", builder="ko")
    deps = predicate["buildDefinition"]["resolvedDependencies"]
    assert deps[1]["digest"] == {"sha256": "c" * 64} and deps[1]["name"] == "r.test/static"
    assert deps[2] == {"uri": f"pkg:oci/r.test/fma/ctl@{B}", "name": "linux/amd64", "digest": {"sha256": "b" * 64}}
    # built by an earlier run with the same inputs: no times, no fingerprint, still the run's builder id
    assert "startedOn" not in predicate["runDetails"]["metadata"]
    assert predicate["buildDefinition"]["internalParameters"] == {"builder": "ko"}


def test_a_ko_base_is_named_as_built_on_and_as_ko_yaml_writes_it_with_goflags_and_cover() -> None:
    """ko's annotations give the base pulled (the mirror's) and its digest; the build's record says how
    .ko.yaml writes it; the GOFLAGS the build compiled with and its cover exclusions are internal parameters."""
    annotations = ((BASE_DIGEST, C), (BASE_NAME, f"mirror.test/cgr.dev/chainguard/static@{C}"))
    base = BaseUse(f"mirror.test/cgr.dev/chainguard/static@{C}", written=f"cgr.dev/chainguard/static@{C}",
                   where=".ko.yaml", mirror=f"mirror.test/cgr.dev/chainguard/static@{C}")
    build = BuildFacts(name="ctl", builder="ko", fingerprint="f2", bases=(base,), run_id="run-1",
                       goflags=("-cover", "-coverpkg=m/a,m/b"), cover_exclude=("pkg/generated",))
    manifest = Manifest(digest=B, platform="linux/arm64", annotations=annotations)
    predicate = provenance_predicate(FACTS, build, manifest, image="r.test/fma/ctl", builder="ko")
    (_, dep) = predicate["buildDefinition"]["resolvedDependencies"]
    assert dep["name"] == "mirror.test/cgr.dev/chainguard/static" and dep["digest"] == {"sha256": "c" * 64}
    assert dep["annotations"] == {"writtenAs": f"cgr.dev/chainguard/static@{C}", "writtenIn": ".ko.yaml",
                                  "mirror": f"mirror.test/cgr.dev/chainguard/static@{C}"}
    assert predicate["buildDefinition"]["internalParameters"] == {
        "builder": "ko", "fingerprint": "f2", "goflags": "-cover -coverpkg=m/a,m/b",
        "cover": {"exclude": ["pkg/generated"]}}
    plain = provenance_predicate(FACTS, BuildFacts(name="p", builder="ko"), manifest, image="r.test/fma/p",
                                 builder="ko")
    assert plain["buildDefinition"]["internalParameters"] == {"builder": "ko"}


def test_late_provenance_names_the_run_that_built_the_image_and_its_times() -> None:
    """Signed by a later run (FACTS: run-1), a build recorded by run-0 names run-0 as builder and invocation,
    with its own start and finish; an index of builds from one run names that run, of two runs this one."""
    amd = BuildFacts("req", "dockerfile", platform="linux/amd64", started="2026-12-01T09:00:00Z",
                     finished="2026-12-01T09:02:00Z", run_id="run-0", run_url="http://prefect.test/run-0")
    arm = BuildFacts("req", "dockerfile", platform="linux/arm64", run_id="run-0", run_url="http://prefect.test/run-0")
    late = provenance_predicate(FACTS, amd, Manifest(digest=B, platform="linux/amd64"), image="r.test/fma/req",
                                builder="dockerfile", builds=(amd, arm))
    assert late["runDetails"]["builder"]["id"] == "http://prefect.test/run-0"
    assert late["runDetails"]["metadata"] == {"invocationID": "run-0", "startedOn": "2026-12-01T09:00:00Z",
                                              "finishedOn": "2026-12-01T09:02:00Z"}
    top = Manifest(digest=A, is_index=True, entries=(("linux/amd64", B), ("linux/arm64", C)))
    index = provenance_predicate(FACTS, None, top, image="r.test/fma/req", builder="dockerfile", builds=(amd, arm))
    assert index["runDetails"]["builder"]["id"] == "http://prefect.test/run-0"
    assert index["runDetails"]["metadata"] == {"invocationID": "run-0"}
    other = dataclasses.replace(arm, run_id="run-9", run_url="http://prefect.test/run-9")
    mixed = provenance_predicate(FACTS, None, top, image="r.test/fma/req", builder="dockerfile", builds=(amd, other))
    assert mixed["runDetails"]["builder"]["id"] == FACTS.run_url
    # a build that recorded no run (a result cached before runs were recorded) is named as this run's
    unknown = provenance_predicate(FACTS, BuildFacts("req", "dockerfile", platform="linux/amd64"),
                                   Manifest(digest=B, platform="linux/amd64"), image="r.test/fma/req",
                                   builder="dockerfile")
    assert unknown["runDetails"]["metadata"]["invocationID"] == "run-1"


def test_a_build_cached_before_bases_were_recorded_as_written_still_signs() -> None:
    """A BuiltImage whose bases are (image, platform) pairs gives BuildFacts whose bases are as pulled only."""
    built = BuiltImage(name="req", ref="r.test/fma/req:v1", bases=((f"r.test/cuda@{B}", ""),))  # type: ignore[arg-type]
    (base,) = build_facts(built, "dockerfile").bases
    assert base == BaseUse(image=f"r.test/cuda@{B}")


def test_the_notes_say_what_a_run_signed_of_images_already_published() -> None:
    """A run that found images published and signed them says so; with nothing signed it changed nothing."""
    kept = PushedImage(name="ctl", ref="r.test/fma/ctl:v1", digest=A, status=Status.ALREADY_PUBLISHED)
    built = PushedImage(name="req", ref="r.test/fma/req:v1", digest=B)
    chart = PublishedChart(name="c", ref="oci://r.test/fma/charts/c", version="1.0.0", digest=C,
                           status=Status.ALREADY_PUBLISHED)
    signed = SignatureResult(artifact="ctl linux/arm64", ref=f"r.test/fma/ctl@{A}", digest=A, signature=Status.SIGNED)
    old = SignatureResult(artifact="ctl", ref=f"r.test/fma/ctl@{A}", digest=A, signature=Status.ALREADY_SIGNED)
    assert release_notes([kept], [chart], [old]) == (NOTHING_CHANGED,)
    assert release_notes([kept], [chart], [signed])[0].startswith(
        "every image and chart was already published; signed or attested 1 of its manifest(s)")
    notes = release_notes([kept, built], [chart], [signed])
    assert "signed or attested 1 manifest(s) of images already published: ctl" in notes


@pytest.mark.parametrize(("subjects", "expected"), [
    ([{"digest": {"sha256": "a" * 64}}], True),
    ([{"digest": {"sha256": "b" * 64}}], False),
    ([{"digest": {"sha256": "a" * 64}}, {"digest": {"sha256": "b" * 64}}], False),
    ([], False),
])
def test_subjects_must_be_exactly_the_digest(subjects: list[dict[str, object]], expected: bool) -> None:
    assert subjects_match({"subject": subjects}, A) is expected


def test_the_build_of_a_manifest_is_its_platforms_or_the_only_one() -> None:
    amd = BuildFacts("x", "dockerfile", platform="linux/amd64")
    arm = BuildFacts("x", "dockerfile", platform="linux/arm64")
    assert build_for((amd, arm), Manifest(digest=A, platform="linux/arm64")) is arm
    assert build_for((amd, arm), Manifest(digest=A, is_index=True)) is None
    ko = BuildFacts("c", "ko")
    assert build_for((ko,), Manifest(digest=A, platform="linux/arm64")) is ko
    assert build_for((), Manifest(digest=A)) is None


def test_kos_sbom_file_is_found_by_platform(tmp_path: Path) -> None:
    for name in ("ctl-linux-amd64.spdx.json", "ctl-linux-arm64.spdx.json", "ctl-index.spdx.json"):
        (tmp_path / name).write_text("{}")
    files = tuple(sorted(tmp_path.iterdir()))
    assert builder_sbom(files, "linux/arm64") == tmp_path / "ctl-linux-arm64.spdx.json"
    assert builder_sbom(files, "linux/s390x") is None
    assert builder_sbom(files, "") is None


@pytest.mark.parametrize(("configured", "no_sign", "config_sign", "signs", "note"), [
    (True, False, True, True, ""),
    (False, False, True, False, UNSIGNED),
    (True, True, True, False, "unsigned: --no-sign"),
    (True, False, False, False, "unsigned: the release config says sign: false"),
])
def test_when_a_run_signs(configured: bool, no_sign: bool, config_sign: bool, signs: bool, note: str) -> None:
    assert signing_decision(configured=configured, no_sign=no_sign, config_sign=config_sign) == (signs, note)


def test_a_secret_block_key_travels_in_the_environment_only() -> None:
    from pydantic import SecretStr

    key = SigningKey(pem=SecretStr("PEM"), password=SecretStr("pw"))
    assert key.ref == "env://FMA_COSIGN_PRIVATE_KEY"
    assert key.env() == {"COSIGN_PASSWORD": "pw", "FMA_COSIGN_PRIVATE_KEY": "PEM"}
    assert "PEM" not in repr(key) and "pw" not in repr(key)
    assert SigningKey(path="/k/cosign.key").ref == "/k/cosign.key"


def test_the_verify_command_names_what_differs_from_the_defaults(tmp_path: Path) -> None:
    plain = ReleaseRequest(tag="v0.6.4", source="s", registry="r.test/fma", chart_remote="oci://r.test/fma/charts")
    assert verify_command(plain, ["fma-controllers"]) == (
        "fma-release verify v0.6.4 --key cosign.pub --registry r.test/fma --source s --chart fma-controllers")
    other = ReleaseRequest(tag="v0.6.4", source="s", registry="r.test/fma", chart_remote="oci://c.test/charts",
                           config_path=tmp_path / "my release.yaml")
    command = verify_command(other, [])
    assert "--chart-registry oci://c.test/charts" in command and f"--config '{tmp_path}/my release.yaml'" in command
    assert str(DEFAULT_CONFIG) not in command


def test_verify_names_each_failed_artifact_and_why() -> None:
    checks = [Check("launcher", A, OK, OK, OK), Check("requester linux/arm64", B, "missing", OK, "bad signature"),
              Check("chart c", C, "invalid signature when validating ASN.1 encoded signature")]
    line = failure_line(checks)
    assert line.startswith("2 of 3 artifact(s) failed verification: ")
    assert "requester linux/arm64 (signature: missing; SBOM: bad signature)" in line
    assert "chart c (signature: inv" in line
    assert "launcher" not in line
    table = render_table(checks).splitlines()
    assert table[0].split() == ["artifact", "digest", "signature", "provenance", "sbom"]
    assert table[3].split()[-3:] == ["FAILED", "-", "-"]
    assert failure_line(checks[:1]) == ""


def signed_result() -> ReleaseResult:
    image = ImageResult(name="requester", ref="r.test/fma/requester:v0.6.4", digest=A, platforms=(
        PlatformResult(platform="linux/amd64", ref="r.test/fma/requester:v0.6.4-linux-amd64", digest=B,
                       status=Status.PUSHED),
        PlatformResult(platform="linux/arm64", ref="r.test/fma/requester:v0.6.4-linux-arm64", digest=C,
                       status=Status.PUSHED)))
    chart = PublishedChart(name="fma-controllers", ref="oci://r.test/fma/charts/fma-controllers", version="0.6.4",
                           digest="sha256:" + "e" * 64)
    return ReleaseResult(tag="v0.6.4", version="0.6.4", prerelease=False, registry="r.test/fma", source_revision="1",
                         images=(image,), charts=(chart,), signed=True, public_key="sha256:" + "f" * 64,
                         signatures=(SignatureResult(artifact="requester", ref=f"r.test/fma/requester@{A}", digest=A,
                                                     signature=Status.SIGNED, provenance=Status.SIGNED),),
                         verify_command="fma-release verify v0.6.4 --key cosign.pub --registry r.test/fma")


def test_summary_and_release_notes_list_every_digest_and_the_verify_command() -> None:
    result = signed_result()
    for text in (render_summary(result), artifacts_markdown(result)):
        assert all(d in text for d in (A, B, C, "sha256:" + "e" * 64))
        assert result.verify_command in text
    assert "| requester | `" + A + "` | signed | signed | - |" in render_summary(result)
    again = result.as_already_published("nothing changed")
    assert again.signatures[0].signature == Status.ALREADY_SIGNED and again.signatures[0].sbom is None
    unsigned = result.model_copy(update={"signed": False, "signatures": (), "verify_command": ""})
    assert "not signed" in artifacts_markdown(unsigned) and "## Signatures" not in render_summary(unsigned)


def test_the_release_config_can_turn_signing_off() -> None:
    assert ReleaseConfig().sign is True
    assert ReleaseConfig.model_validate({"sign": False}).sign is False


def test_cosign_stores_a_digests_signatures_and_attestations_under_its_own_tags() -> None:
    from tasks.supplychain.provenance import cosign_tag

    digest = "sha256:" + "ab" * 32
    assert cosign_tag(digest, "sig") == "sha256-" + "ab" * 32 + ".sig"
    assert cosign_tag(digest, "att") == "sha256-" + "ab" * 32 + ".att"
    for bad in (("latest", "sig"), (digest, "sbom")):
        with pytest.raises(ValueError, match="not a digest"):
            cosign_tag(*bad)
