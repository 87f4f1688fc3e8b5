"""Release record keys: what decides whether a re-release can be answered from a record."""

from __future__ import annotations

from pathlib import Path

from tasks.control.records import (
    build_records,
    build_times,
    note_platform,
    noted_platform,
    published_release,
    recorded_builds,
    release_key,
    save_build_times,
    save_builds,
    save_record,
)
from tasks.run.config import parse_config
from tasks.run.facts import BaseUse, BuildFacts
from tasks.run.result import PushedImage, ReleaseResult

CONFIG = "images:\n  - name: a\n    dockerfile: d/Dockerfile\n    dockerfile_from: project\ncharts: []\n"


def key(
    root: Path, tag: str = "v0.6.4", revision: str = "a" * 40, config_text: str = CONFIG, registry: str = "r.example/x",
    chart_remote: str = "oci://r.example/x/charts",
) -> str:
    return release_key(
        tag=tag, revision=revision, config=parse_config(config_text), config_bytes=config_text.encode(),
        registry=registry, chart_remote=chart_remote, project_root=root,
    )


def test_key_is_stable_and_changes_with_every_input(tmp_path: Path) -> None:
    """Same inputs, same key; another tag (of the same commit: a release candidate and its release), commit,
    config, registry, chart registry or project file: another key."""
    (tmp_path / "d").mkdir()
    (tmp_path / "d/Dockerfile").write_text("FROM scratch\n")
    base = key(tmp_path)
    assert key(tmp_path) == base
    assert key(tmp_path, tag="v0.6.5") != base
    assert key(tmp_path, revision="b" * 40) != base
    assert key(tmp_path, config_text=CONFIG + "# comment\n") != base
    assert key(tmp_path, registry="r.example/y") != base
    assert key(tmp_path, chart_remote="oci://other.example/charts") != base
    (tmp_path / "d/Dockerfile").write_text("FROM scratch\nCOPY x /x\n")
    assert key(tmp_path) != base


# -- build records: which run built a published manifest ------------------------------------------

A, B, C = ("sha256:" + x * 64 for x in "abc")


def test_a_published_images_builds_are_recorded_by_digest_and_read_back(tmp_path: Path) -> None:
    """The tag's manifest records every build, each platform manifest its own; a later look-up by the tag's
    digest finds them all, and by platform digests (the index was made again) each platform's."""
    amd = BuildFacts("req", "dockerfile", platform="linux/amd64", run_id="run-0", started="t0", finished="t1",
                     bases=(BaseUse("m.test/cuda@" + C, written="nvcr.io/cuda:1", where="D:3",
                                    mirror="m.test/cuda:1"),))
    arm = BuildFacts("req", "dockerfile", platform="linux/arm64", run_id="run-0")
    image = PushedImage(name="req", ref="r.test/req:v1", digest=A, platforms=(
        PushedImage(name="req", ref="r.test/req@" + B, digest=B, platform="linux/amd64"),
        PushedImage(name="req", ref="r.test/req@" + C, digest=C, platform="linux/arm64")))
    records = build_records(image, (amd, arm))
    assert records == {A: (amd, arm), B: (amd,), C: (arm,)}
    save_builds(tmp_path, records)
    assert recorded_builds(tmp_path, image) == (amd, arm)
    reindexed = PushedImage(name="req", ref="r.test/req:v1", digest="sha256:" + "d" * 64, platforms=image.platforms)
    assert recorded_builds(tmp_path, reindexed) == (amd, arm)
    assert recorded_builds(tmp_path, PushedImage(name="x", ref="r.test/x:v1", digest="sha256:" + "e" * 64)) == ()


def test_nothing_is_recorded_without_builds_and_a_broken_record_is_none(tmp_path: Path) -> None:
    """An image no build of which is known records nothing; an unreadable record reads as no record."""
    image = PushedImage(name="ctl", ref="r.test/ctl:v1", digest=A)
    assert build_records(image, ()) == {}
    save_builds(tmp_path, build_records(image, (BuildFacts("ctl", "ko", goflags=("-cover",)),)))
    assert recorded_builds(tmp_path, image)[0].goflags == ("-cover",)
    next((tmp_path / "builds").iterdir()).write_text("{not json")
    assert recorded_builds(tmp_path, image) == ()

class NoRegistry:
    """Registries that must not be asked: a record refused before any registry read."""

    def api(self, host: str) -> None:
        raise AssertionError(f"the registry {host} was asked")


def record(platforms: list[dict[str, str]]) -> ReleaseResult:
    return ReleaseResult.model_validate({
        "tag": "v0.6.4", "version": "0.6.4", "prerelease": False, "registry": "r.example/x",
        "source_revision": "a" * 40, "images": [
            {"name": "dual-pods-controller", "ref": "r.example/x/dual-pods-controller:v0.6.4",
             "digest": "sha256:" + "1" * 64, "platforms": platforms}]})


def test_a_record_that_names_platform_all_is_not_answered_from(tmp_path: Path) -> None:
    """A record written when a kept ko image said platform `all` is read from the registry again (the run then
    lists its real platforms), never answered with a row that says `all`."""
    save_record(tmp_path, "k", record([{"platform": "all", "ref": "r.example/x/dual-pods-controller:v0.6.4",
                                         "digest": "sha256:" + "1" * 64, "status": "already published"}]))
    assert published_release(tmp_path, "k", NoRegistry()) is None  # type: ignore[arg-type]


def test_a_pushed_platform_is_noted_per_repository_and_build(tmp_path: Path) -> None:
    """The digest of a platform pushed by digest is found again by its repository and fingerprint only."""
    assert noted_platform(tmp_path, "r.example/x/requester", "f1") == ""
    note_platform(tmp_path, "r.example/x/requester", "f1", "sha256:" + "2" * 64)
    note_platform(tmp_path, "r.example/x/requester", "f2", "sha256:" + "3" * 64)
    assert noted_platform(tmp_path, "r.example/x/requester", "f1") == "sha256:" + "2" * 64
    assert noted_platform(tmp_path, "r.example/y/requester", "f1") == ""
    note_platform(tmp_path, "r.example/x/requester", "f1", "sha256:" + "4" * 64)  # a newer push of the same build
    assert noted_platform(tmp_path, "r.example/x/requester", "f1") == "sha256:" + "4" * 64
    note_platform(tmp_path, "r.example/x/requester", "", "sha256:" + "5" * 64)  # no fingerprint: nothing noted
    assert noted_platform(tmp_path, "r.example/x/requester", "") == ""


def test_build_times_are_merged_by_label_and_a_broken_file_is_none(tmp_path: Path) -> None:
    assert build_times(tmp_path) == {}
    save_build_times(tmp_path, {"launcher": 6.5, "requester linux/arm64": 9.0})
    save_build_times(tmp_path, {"launcher": 5.25})
    save_build_times(tmp_path, {})
    assert build_times(tmp_path) == {"launcher": 5.25, "requester linux/arm64": 9.0}
    (tmp_path / "build-times.json").write_text("{not json")
    assert build_times(tmp_path) == {}
    save_build_times(tmp_path, {"launcher": 1.0})  # a broken file is replaced, not a failed run
    assert build_times(tmp_path) == {"launcher": 1.0}
