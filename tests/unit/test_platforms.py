"""Platforms in the config, the per-platform specs, the image index and its summary (pure parts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.core.errors import ConfigError
from tasks.core.status import Status
from tasks.oci.platforms import (
    INDEX_MEDIA_TYPE,
    IndexEntry,
    Platform,
    config_platform,
    exec_format_hint,
    image_index,
    index_entries,
    manifest_digest,
    parse_platform,
    platform_build_args,
    platform_tag,
    select_platform,
)
from tasks.run.config import parse_config
from tasks.run.facts import Checkout
from tasks.run.plan import FINGERPRINT_LABEL, image_specs
from tasks.run.result import ImageResult, PushedImage, ReleaseResult
from tasks.summary import release_notes, render_summary

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


@pytest.mark.parametrize(
    ("text", "platform"),
    [
        ("linux/amd64", Platform("linux", "amd64")),
        ("linux/arm64", Platform("linux", "arm64")),
        ("linux/arm/v7", Platform("linux", "arm", "v7")),
        ("windows/amd64", Platform("windows", "amd64")),
    ],
)
def test_parse_platform(text: str, platform: Platform) -> None:
    """os/arch[/variant] parses and prints back unchanged."""
    assert parse_platform(text) == platform
    assert str(platform) == text


@pytest.mark.parametrize("text", ["linux", "linux/", "/amd64", "linux/arm/v7/x", "Linux/AMD64", "linux/arm 64", ""])
def test_parse_platform_refuses_malformed(text: str) -> None:
    """Anything but lowercase os/arch[/variant] is refused, with an example of the right form."""
    with pytest.raises(ValueError, match=r"must be os/arch or os/arch/variant .*e\.g\. linux/arm64"):
        parse_platform(text)


def config_with(platforms: str) -> str:
    return f"images:\n  - name: a\n    dockerfile: D\n    platforms: {platforms}\n"


@pytest.mark.parametrize(
    ("platforms", "message"),
    [
        ("[linux]", r"images\.0\.platforms: platform 'linux' must be os/arch"),
        ("[linux/amd64, linux/arm64, linux/amd64]", r"platform linux/amd64 appears twice in platforms; list each"),
        ("[]", r"platforms is empty: list at least one, e\.g\. \[linux/amd64\], or leave it out"),
        ("linux/arm64", r"platforms must be a list, e\.g\. \[linux/arm64\]"),
    ],
)
def test_config_platforms_errors_name_the_fix(platforms: str, message: str) -> None:
    """A bad platforms list is one line naming the field and the fix."""
    with pytest.raises(ConfigError, match=message) as caught:
        parse_config(config_with(platforms))
    assert "\n" not in str(caught.value)


def test_config_platforms_default_and_given() -> None:
    """Without platforms an image is linux/amd64; a list is kept in its order."""
    assert parse_config("images:\n  - name: a\n    dockerfile: D\n").images[0].platforms == ("linux/amd64",)
    assert parse_config(config_with("[linux/arm64, linux/amd64]")).images[0].platforms == (
        "linux/arm64", "linux/amd64")


def test_specs_one_per_platform_with_own_tag_and_fingerprint(tmp_path: Path) -> None:
    """A 2-platform image: two specs pushed under <tag>-<os>-<arch>, the index at the tag; one platform: as before."""
    (tmp_path / "D").write_text("FROM scratch\n")
    config = parse_config(
        "images:\n  - name: a\n    dockerfile: D\n    platforms: [linux/amd64, linux/arm64]\n"
        "  - name: b\n    dockerfile: D\n"
    )
    checkout = Checkout(path=tmp_path, source="s", tag="v0.3.1", revision="a" * 40, created="2026-11-25T10:00:00Z")
    specs = image_specs(config, checkout, "reg.example/fma")
    assert [(s.label, s.ref, s.index_ref) for s in specs] == [
        ("a linux/amd64", "reg.example/fma/a:v0.3.1-linux-amd64", "reg.example/fma/a:v0.3.1"),
        ("a linux/arm64", "reg.example/fma/a:v0.3.1-linux-arm64", "reg.example/fma/a:v0.3.1"),
        ("b", "reg.example/fma/b:v0.3.1", ""),
    ]
    assert len({s.fingerprint for s in specs}) == 3
    assert all(s.labels[FINGERPRINT_LABEL] == s.fingerprint for s in specs)
    assert all(s.labels["org.opencontainers.image.revision"] == "a" * 40 for s in specs)


def test_platform_tag_and_build_args() -> None:
    """goreleaser-style platform tags; TARGET*/BUILD* args as BuildKit defines them."""
    assert platform_tag("v0.3.1", "linux/arm/v7") == "v0.3.1-linux-arm-v7"
    assert platform_build_args("linux/arm/v7", "linux/amd64") == {
        "BUILDPLATFORM": "linux/amd64", "BUILDOS": "linux", "BUILDARCH": "amd64",
        "TARGETPLATFORM": "linux/arm/v7", "TARGETOS": "linux", "TARGETARCH": "arm", "TARGETVARIANT": "v7",
    }


def test_image_index_from_configs() -> None:
    """Entries carry each config's os/architecture/variant, in order; the digest is of the exact bytes."""
    arm = config_platform({"architecture": "arm64", "os": "linux", "variant": "v8", "config": {}})
    amd = config_platform({"architecture": "amd64", "os": "linux"})
    body = image_index([
        IndexEntry("sha256:" + "1" * 64, 525, DOCKER_MANIFEST, amd),
        IndexEntry("sha256:" + "2" * 64, 527, DOCKER_MANIFEST, arm),
    ])
    index = json.loads(body)
    assert index == {
        "schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [
            {"mediaType": DOCKER_MANIFEST, "digest": "sha256:" + "1" * 64, "size": 525,
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": DOCKER_MANIFEST, "digest": "sha256:" + "2" * 64, "size": 527,
             "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
        ],
    }
    assert index_entries(index) == [("sha256:" + "1" * 64, amd), ("sha256:" + "2" * 64, arm)]
    assert manifest_digest(body).startswith("sha256:") and len(manifest_digest(body)) == 71
    assert index_entries({"config": {}, "layers": []}) == []


def test_select_platform_matches_arm64_with_or_without_v8() -> None:
    """An index's arm64 entry serves linux/arm64 whether or not it says v8; no entry gives ''."""
    index = {"manifests": [
        {"digest": "sha256:a", "platform": {"os": "linux", "architecture": "amd64"}},
        {"digest": "sha256:b", "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
    ]}
    assert select_platform(index, parse_platform("linux/arm64")) == "sha256:b"
    assert select_platform(index, parse_platform("linux/amd64")) == "sha256:a"
    assert select_platform(index, parse_platform("linux/s390x")) == ""


def test_exec_format_hint_names_the_emulator_and_the_fixes() -> None:
    """An exec format error explains the missing qemu handler in one line; other failures get no hint."""
    hint = exec_format_hint(["Step 3/4 : RUN x", "exec /bin/sh: exec format error"], "linux/arm64")
    assert "qemu-aarch64" in hint and "scripts/setup.sh" in hint and "remove linux/arm64 from 'platforms'" in hint
    assert exec_format_hint(["returned a non-zero code: 1"], "linux/arm64") == ""


def pushed(platform: str, digest: str, status: Status = Status.PUSHED) -> PushedImage:
    """A platform image as it is pushed: by its digest, with no tag of its own."""
    return PushedImage(name="requester", ref=f"reg.example/fma/requester@{digest}", digest=digest, status=status,
                       platform=platform, label=f"requester {platform}")


def test_summary_lists_the_index_and_each_platform_digest() -> None:
    """JSON and markdown carry the index digest and each platform's reference and digest."""
    members = (pushed("linux/amd64", "sha256:" + "1" * 64, Status.ALREADY_PUBLISHED),
               pushed("linux/arm64", "sha256:" + "2" * 64))
    index = PushedImage(name="requester", ref="reg.example/fma/requester:v0.3.1", digest="sha256:" + "9" * 64,
                        platforms=members)
    single = PushedImage(name="launcher", ref="reg.example/fma/launcher:v0.3.1", digest="sha256:" + "3" * 64,
                         platform="linux/amd64")
    result = ReleaseResult(tag="v0.3.1", version="0.3.1", prerelease=False, registry="reg.example/fma",
                           source_revision="c" * 40, images=(ImageResult.of(index), ImageResult.of(single)),
                           notes=release_notes([index, single], []))
    summary = result.summary()
    assert summary["images"][0]["digest"] == "sha256:" + "9" * 64
    assert summary["images"][0]["platforms"] == [
        {"platform": "linux/amd64", "ref": "reg.example/fma/requester@sha256:" + "1" * 64,
         "digest": "sha256:" + "1" * 64, "status": "already published"},
        {"platform": "linux/arm64", "ref": "reg.example/fma/requester@sha256:" + "2" * 64,
         "digest": "sha256:" + "2" * 64, "status": "pushed"},
    ]
    assert summary["images"][1]["platforms"] == [
        {"platform": "linux/amd64", "ref": single.ref, "digest": single.digest, "status": "pushed"}]
    assert summary["notes"] == ["already in the registry, not rebuilt or pushed: requester linux/amd64"]
    text = render_summary(result)
    assert "| requester | index of linux/amd64, linux/arm64 | `reg.example/fma/requester:v0.3.1` | `sha256:999" in text
    assert f"| | linux/arm64 | `reg.example/fma/requester@sha256:{'2' * 64}` | `sha256:222" in text
    assert "| launcher | linux/amd64 | `reg.example/fma/launcher:v0.3.1` | `sha256:333" in text


def test_an_image_kept_whole_is_named_once_in_the_notes() -> None:
    """A kept ko index lists its platforms in the summary, but the note names the image once; a pushed index
    with a kept platform names that platform."""
    ko = PushedImage(name="dual-pods-controller", ref="reg.example/fma/dual-pods-controller:v0.3.1",
                     digest="sha256:" + "7" * 64, status=Status.ALREADY_PUBLISHED,
                     platforms=(pushed("linux/amd64", "sha256:" + "5" * 64, Status.ALREADY_PUBLISHED),
                                pushed("linux/arm64", "sha256:" + "6" * 64, Status.ALREADY_PUBLISHED)))
    index = PushedImage(name="requester", ref="reg.example/fma/requester:v0.3.1", digest="sha256:" + "9" * 64,
                        platforms=(pushed("linux/amd64", "sha256:" + "1" * 64, Status.ALREADY_PUBLISHED),
                                   pushed("linux/arm64", "sha256:" + "2" * 64)))
    assert release_notes([ko, index], []) == (
        "already in the registry, not rebuilt or pushed: dual-pods-controller, requester linux/amd64",)
    assert [p.platform for p in ImageResult.of(ko).platforms] == ["linux/amd64", "linux/arm64"]
