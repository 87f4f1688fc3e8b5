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

Beside them, build records: for each image manifest a run published, the builds that made it
(:class:`~tasks.run.facts.BuildFacts`: the run, its start and finish, the bases, GOFLAGS), keyed by
the manifest's digest. A later run that signs an image it found already published (a release first
made unsigned) names the run that built it from there, not itself.

A platform image of a multi-platform image is pushed by digest, with no tag of its own: until its
image's index is in place, nothing in the registry leads to it. Each one pushed is noted
(:func:`note_platform`: its repository, its build's fingerprint and its digest), so a run that failed
before the index finds it again (:func:`noted_platform`) and neither rebuilds nor pushes it.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from tasks.core.project import PROJECT_ROOT
from tasks.oci.references import Reference
from tasks.oci.registry import Registries
from tasks.run.config import ReleaseConfig
from tasks.run.facts import BuildFacts
from tasks.run.result import PushedImage, ReleaseResult

_BUILDS = TypeAdapter(tuple[BuildFacts, ...])


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
    if not _names_real_platforms(recorded):
        return None
    return recorded if _still_published(recorded, registries) else None


# -- build records: which run built a published manifest -----------------------------------------


def _build_path(state_dir: Path, digest: str) -> Path:
    algorithm, _, hex_part = digest.partition(":")
    return state_dir / "builds" / f"{algorithm}-{hex_part}.json"


def build_records(image: PushedImage, builds: tuple[BuildFacts, ...]) -> dict[str, tuple[BuildFacts, ...]]:
    """What to record of a published ``image`` built by ``builds`` (pure): its tag's manifest -> every
    build, and each platform manifest of an index -> the build of that platform."""
    if not builds or not image.digest:
        return {}
    records = {image.digest: builds}
    for platform in image.platforms:
        own = tuple(b for b in builds if b.platform == platform.platform)
        if own and platform.digest:
            records[platform.digest] = own
    return records


def save_builds(state_dir: Path, records: dict[str, tuple[BuildFacts, ...]]) -> None:
    """Write build records (see :func:`build_records`), each replacing the one of its digest."""
    for digest, builds in records.items():
        path = _build_path(state_dir, digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_bytes(_BUILDS.dump_json(builds, indent=2))
        tmp.replace(path)


def recorded_builds(state_dir: Path, image: PushedImage) -> tuple[BuildFacts, ...]:
    """The recorded builds of a published ``image``: those of its tag's manifest, else those of each of
    its platform manifests; ``()`` when no run recorded it here (an unreadable record counts as none)."""
    found: list[BuildFacts] = []
    for digest in (image.digest, *(p.digest for p in image.platforms)):
        path = _build_path(state_dir, digest) if digest else None
        if path is None or not path.is_file():
            continue
        try:
            builds = _BUILDS.validate_json(path.read_bytes())
        except (OSError, ValueError):
            continue
        found += [b for b in builds if b.platform not in {f.platform for f in found}]
        if digest == image.digest:
            break
    return tuple(found)

def _names_real_platforms(result: ReleaseResult) -> bool:
    """Whether a record lists each image's real platforms: one written before a kept image's platforms were
    read from the registry names a ko image's platform ``all``; that release is read from the registry
    again (and its record written anew), never answered with a row that says ``all``."""
    return all(p.platform and p.platform != "all" for image in result.images for p in image.platforms)


def _platform_path(state_dir: Path, repository: str, fingerprint: str) -> Path:
    key = hashlib.sha256(f"{repository}\n{fingerprint}".encode()).hexdigest()[:40]
    return state_dir / "platforms" / f"{key}.json"


def note_platform(state_dir: Path, repository: str, fingerprint: str, digest: str) -> None:
    """Note that ``repository`` (``host/path``) holds the build ``fingerprint`` as ``digest``."""
    if not fingerprint:
        return
    path = _platform_path(state_dir, repository, fingerprint)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps({"repository": repository, "fingerprint": fingerprint, "digest": digest}),
                   encoding="utf-8")
    tmp.replace(path)


def noted_platform(state_dir: Path, repository: str, fingerprint: str) -> str:
    """The digest a run noted for the build ``fingerprint`` in ``repository``, ``""`` when none did
    (the caller asks the registry whether it is still there)."""
    try:
        noted = json.loads(_platform_path(state_dir, repository, fingerprint).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    same = isinstance(noted, dict) and noted.get("repository") == repository and noted.get("fingerprint") == fingerprint
    return str(noted.get("digest") or "") if same else ""


# -- build times: how long each build's chain took to its push, the next run's order -----------------

_TIMES = TypeAdapter(dict[str, float])


def _times_path(state_dir: Path) -> Path:
    return state_dir / "build-times.json"


def build_times(state_dir: Path) -> dict[str, float]:
    """Seconds from the start of the builds to each build's push, by label, as the runs here last
    measured them; ``{}`` when none did (an unreadable file counts as none: it only orders builds)."""
    try:
        return _TIMES.validate_json(_times_path(state_dir).read_bytes())
    except (OSError, ValueError):
        return {}


def save_build_times(state_dir: Path, measured: dict[str, float]) -> None:
    """Note ``measured`` (see :func:`build_times`), each label replacing its earlier figure."""
    if not measured:
        return
    path = _times_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_bytes(_TIMES.dump_json({**build_times(state_dir), **measured}, indent=2))
    tmp.replace(path)
