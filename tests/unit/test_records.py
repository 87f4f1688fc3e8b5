"""Release record keys: what decides whether a re-release can be answered from a record."""

from __future__ import annotations

from pathlib import Path

from tasks.control.records import note_platform, noted_platform, published_release, release_key, save_record
from tasks.run.config import parse_config
from tasks.run.result import ReleaseResult

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
