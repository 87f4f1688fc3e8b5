"""Release record keys: what decides whether a re-release can be answered from a record."""

from __future__ import annotations

from pathlib import Path

from tasks.control.records import release_key
from tasks.run.config import parse_config

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
