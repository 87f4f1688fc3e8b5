"""Release records: what a finished release published, to answer a re-release at once.

A record is keyed by everything that decides a release's outcome: the tagged
commit (which fixes every file of the source), the release config's bytes, the
bytes of this project's files the config uses (Dockerfiles and charts with
``from: project``), the registry and the chart registry. A re-release with
the same key whose every digest is still in the registry changes nothing, so
it is answered from the record without a checkout or a build. Records live in
``$FMA_STATE_DIR`` (default: ``$PREFECT_HOME/fma-release``).
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tasks.config import PROJECT_ROOT, ReleaseConfig
from tasks.registry import Reference, RegistryAPI


def state_dir() -> Path:
    explicit = os.environ.get("FMA_STATE_DIR")
    if explicit:
        return Path(explicit)
    home = os.environ.get("PREFECT_HOME") or str(Path.home() / ".prefect")
    return Path(home) / "fma-release"


def _tree_digest(path: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path.parent)).encode())
        digest.update(file.read_bytes() if file.exists() else b"")
    return digest.hexdigest()


def release_key(
    *, revision: str, config: ReleaseConfig, config_bytes: bytes, registry: str, chart_remote: str,
    project_root: Path = PROJECT_ROOT,
) -> str:
    """The key of a release's record (pure but for reading this project's files the config uses)."""
    project_files = sorted(
        {i.dockerfile for i in config.images if i.dockerfile_from == "project"}
        | {c.path for c in config.charts if c.origin == "project"}
    )
    payload = {
        "revision": revision,
        "config": hashlib.sha256(config_bytes).hexdigest(),
        "project": {p: _tree_digest(project_root / p) for p in project_files},
        "registry": registry,
        "chart_remote": chart_remote,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:40]


def _path(key: str) -> Path:
    return state_dir() / "releases" / f"{key}.json"


def save_record(key: str, summary: dict[str, Any]) -> None:
    path = _path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    tmp.replace(path)


def _still_published(summary: dict[str, Any]) -> bool:
    """Every image tag and chart version of the record still points at the recorded digest."""
    wanted: list[tuple[str, str, str]] = []
    for image in summary.get("images", []):
        # A multi-platform image's platform tags too, not only its index.
        for entry in [image, *(p for p in image.get("platforms", []) if p["ref"] != image["ref"])]:
            ref = Reference.parse(entry["ref"])
            wanted.append((ref.host, ref.repository, f"{ref.tag}={entry['digest']}"))
    for chart in summary.get("charts", []):
        ref = Reference.parse(f"{chart['ref']}:{chart['version']}")
        wanted.append((ref.host, ref.repository, f"{ref.tag}={chart['digest']}"))

    def matches(item: tuple[str, str, str]) -> bool:
        host, repository, pair = item
        tag, digest = pair.split("=", 1)
        with RegistryAPI(host) as api:
            return api.digest(repository, tag) == digest

    if not wanted:
        return True
    with ThreadPoolExecutor(max_workers=min(16, len(wanted))) as pool:  # reads only: ask all at once
        return all(pool.map(matches, wanted))


def published_release(key: str) -> dict[str, Any] | None:
    """The recorded summary of this exact release when everything in it is still published.

    A few milliseconds (a file and one HEAD request per reference): the flow calls it directly,
    not as a task, so that a re-release of a published tag costs one task run.
    """
    path = _path(key)
    if not path.is_file():
        return None
    try:
        summary: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return summary if _still_published(summary) else None
