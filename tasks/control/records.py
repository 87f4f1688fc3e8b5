"""Release records: what a finished release published, to answer a re-release at once.

A record is keyed by everything that decides a release's outcome: the tag (which
names the images and the chart's version: two tags of one commit are two releases),
the tagged commit (which fixes every file of the source), the release config's bytes, the
bytes of this project's files the config uses (Dockerfiles and charts with
``from: project``), the registry and the chart registry. A re-release with
the same key whose every digest is still in the registry changes nothing, so
it is answered from the record without a checkout or a build. A record is the
release's :class:`~tasks.run.result.ReleaseResult` as JSON, in the settings'
``state_dir`` (``$FMA_STATE_DIR``, default ``$PREFECT_HOME/fma-release``).
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydantic import ValidationError

from tasks.core.project import PROJECT_ROOT
from tasks.oci.references import Reference
from tasks.oci.registry import Registries
from tasks.run.config import ReleaseConfig
from tasks.run.result import ReleaseResult


def _tree_digest(path: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path.parent)).encode())
        digest.update(file.read_bytes() if file.exists() else b"")
    return digest.hexdigest()


def release_key(  # noqa: PLR0913 - each keyword is one input the key depends on, all keyword-only
    *, tag: str, revision: str, config: ReleaseConfig, config_bytes: bytes, registry: str, chart_remote: str,
    project_root: Path = PROJECT_ROOT, signing: str = "",
) -> str:
    """The key of a release's record (pure but for reading this project's files the config uses);
    ``signing``: the fingerprint of the key the release is signed with, "" when unsigned."""
    project_files = sorted(
        {i.dockerfile for i in config.images if i.dockerfile_from == "project" and i.dockerfile}
        | {c.path for c in config.charts if c.origin == "project"}
    )
    payload = {
        "tag": tag,
        "revision": revision,
        "config": hashlib.sha256(config_bytes).hexdigest(),
        "project": {p: _tree_digest(project_root / p) for p in project_files},
        "registry": registry,
        "chart_remote": chart_remote,
    }
    if signing:  # a signed release of the same inputs is another outcome than an unsigned one
        payload["signing"] = signing
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:40]


def _path(state_dir: Path, key: str) -> Path:
    return state_dir / "releases" / f"{key}.json"


def save_record(state_dir: Path, key: str, result: ReleaseResult) -> None:
    path = _path(state_dir, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(result.model_dump_json(indent=2), encoding="utf-8")
    tmp.replace(path)


def _still_published(result: ReleaseResult, registries: Registries) -> bool:
    """Every image tag and chart version of the record still points at the recorded digest."""
    wanted: list[tuple[Reference, str]] = []
    for image in result.images:
        # A multi-platform image's platform tags too, not only its index.
        wanted.append((Reference.parse(image.ref), image.digest))
        wanted += [(Reference.parse(p.ref), p.digest) for p in image.platforms if p.ref != image.ref]
    wanted += [(Reference.parse(f"{c.ref}:{c.version}"), c.digest) for c in result.charts]

    def matches(item: tuple[Reference, str]) -> bool:
        ref, digest = item
        with registries.api(ref.host) as api:
            return api.digest(ref.repository, ref.reference) == digest

    if not wanted:
        return True
    with ThreadPoolExecutor(max_workers=min(16, len(wanted))) as pool:  # reads only: ask all at once
        return all(pool.map(matches, wanted))


def published_release(state_dir: Path, key: str, registries: Registries) -> ReleaseResult | None:
    """The recorded result of this exact release when everything in it is still published.

    A few milliseconds (a file and one HEAD request per reference): the flow calls it directly,
    not as a task, so that a re-release of a published tag costs one task run.
    """
    path = _path(state_dir, key)
    if not path.is_file():
        return None
    try:
        recorded = ReleaseResult.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, ValidationError):
        return None
    return recorded if _still_published(recorded, registries) else None
