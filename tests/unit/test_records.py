"""Release record keys: what decides whether a re-release can be answered from a record."""

from __future__ import annotations

from pathlib import Path

from tasks.control.records import build_records, recorded_builds, release_key, save_builds
from tasks.run.config import parse_config
from tasks.run.facts import BaseUse, BuildFacts
from tasks.run.result import PushedImage

CONFIG = "images:\n  - name: a\n    dockerfile: d/Dockerfile\n    dockerfile_from: project\ncharts: []\n"


def key(
    root: Path, revision: str = "a" * 40, config_text: str = CONFIG, registry: str = "r.example/x",
    chart_remote: str = "oci://r.example/x/charts",
) -> str:
    return release_key(
        revision=revision, config=parse_config(config_text), config_bytes=config_text.encode(),
        registry=registry, chart_remote=chart_remote, project_root=root,
    )


def test_key_is_stable_and_changes_with_every_input(tmp_path: Path) -> None:
    """Same inputs, same key; another commit, config, registry, chart registry or project file: another key."""
    (tmp_path / "d").mkdir()
    (tmp_path / "d/Dockerfile").write_text("FROM scratch\n")
    base = key(tmp_path)
    assert key(tmp_path) == base
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
