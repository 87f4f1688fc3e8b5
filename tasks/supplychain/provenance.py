"""What a signed release says about itself (pure): which manifests get signed, and each one's
SLSA v1 provenance predicate (docs/provenance.md describes the build type).

An image's tag points at one manifest, or at an image index of platform manifests; every one of
them is signed and gets a provenance attestation, and every platform manifest (the one a runtime
pulls) an SBOM too. The predicate is cosign's ``--type slsaprovenance1`` input: cosign wraps it in
an in-toto statement whose subject is the digest it attests.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from tasks.oci.layout import platform_name
from tasks.run.facts import BaseUse, BuildFacts, ReleaseFacts

BUILD_TYPE = "https://github.com/llm-d-incubation/fma-release/blob/main/docs/provenance.md#release-v1"
BASE_NAME = "org.opencontainers.image.base.name"  # annotations ko puts on what it builds
BASE_DIGEST = "org.opencontainers.image.base.digest"


@dataclass(frozen=True)
class Manifest:
    """One manifest to sign: an image (``platform`` set, or "" for a single-platform image whose
    platform is unknown), or an image index (``entries``: its platform manifests)."""

    digest: str
    platform: str = ""
    is_index: bool = False
    entries: tuple[tuple[str, str], ...] = ()  # (platform, digest) of an index's manifests
    annotations: tuple[tuple[str, str], ...] = ()

    @property
    def wants_sbom(self) -> bool:
        return not self.is_index


def _platform(entry: dict[str, Any]) -> str:
    platform = entry.get("platform") or {}
    return platform_name(platform) if platform.get("os") else ""


def cosign_tag(digest: str, kind: str) -> str:
    """The tag cosign stores ``digest``'s signatures (``kind`` "sig") or attestations ("att") under."""
    algorithm, _, hex_part = digest.partition(":")
    if not hex_part or kind not in ("sig", "att"):
        raise ValueError(f"not a digest and a cosign kind: {digest!r}, {kind!r}")
    return f"{algorithm}-{hex_part}.{kind}"


def manifests_to_sign(digest: str, manifest: dict[str, Any]) -> list[Manifest]:
    """The manifest ``digest`` (as read from the registry) and, for an index, each of its platform manifests."""
    annotations = tuple(sorted((str(k), str(v)) for k, v in (manifest.get("annotations") or {}).items()))
    entries = [e for e in manifest.get("manifests") or [] if isinstance(e, dict) and e.get("digest")]
    if not entries:
        return [Manifest(digest=digest, annotations=annotations)]
    listed = tuple((_platform(e), str(e["digest"])) for e in entries)
    top = Manifest(digest=digest, is_index=True, entries=listed, annotations=annotations)
    return [top, *(Manifest(digest=d, platform=p) for p, d in listed)]


def config_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _as_written(base: BaseUse | None) -> dict[str, Any]:
    """How the source writes a base, and the mirror it was pulled from instead, as annotations."""
    if base is None or not base.written:
        return {}
    found: dict[str, Any] = {"writtenAs": base.written, "writtenIn": base.where}
    if base.mirror:
        found["mirror"] = base.mirror
    return found


def _base_dependency(base: BaseUse, platform: str) -> dict[str, Any]:
    name, _, digest = base.image.partition("@")
    query = f"?platform={quote(platform, safe='')}" if platform else ""
    dep: dict[str, Any] = {"uri": f"pkg:docker/{base.image}{query}", "name": name}
    annotations = _as_written(base)
    if digest.startswith("sha256:"):
        dep["digest"] = {"sha256": digest.removeprefix("sha256:")}
    else:
        annotations = {"pinned": False, **annotations}
    if annotations:
        dep["annotations"] = annotations
    return dep


def base_dependencies(build: BuildFacts | None, manifest: Manifest) -> list[dict[str, Any]]:
    """The base images a manifest was built on: ko's annotations on it (with the build's record of how
    the source writes that base), else the build's own pins; each as pulled, and as the source writes it."""
    annotations = dict(manifest.annotations)
    if BASE_NAME in annotations and BASE_DIGEST in annotations:
        name = annotations[BASE_NAME]
        query = f"?platform={quote(manifest.platform, safe='')}" if manifest.platform else ""
        dep: dict[str, Any] = {"uri": f"pkg:docker/{name}{query}", "name": name.partition("@")[0],
                               "digest": {"sha256": annotations[BASE_DIGEST].removeprefix("sha256:")}}
        written = _as_written(build.bases[0] if build is not None and len(build.bases) == 1 else None)
        if written:
            dep["annotations"] = written
        return [dep]
    if build is None:
        return []
    return [_base_dependency(base, base.platform or build.platform or manifest.platform) for base in build.bases]


def building_run(build: BuildFacts | None, builds: tuple[BuildFacts, ...]) -> BuildFacts | None:
    """The build whose run a manifest's provenance names: its own, else (an index of several builds)
    any of ``builds`` when they all come from one run; ``None`` when no build recorded its run."""
    if build is not None:
        return build if build.run_id else None
    runs = {(b.run_id, b.run_url) for b in builds}
    return builds[0] if len(runs) == 1 and builds[0].run_id else None


def _internal(builder: str, build: BuildFacts | None) -> dict[str, Any]:
    internal: dict[str, Any] = {"builder": builder}
    if build is None:
        return internal
    if build.fingerprint:
        internal["fingerprint"] = build.fingerprint
    if build.goflags:
        internal["goflags"] = " ".join(build.goflags)
    if build.cover_exclude is not None:
        internal["cover"] = {"exclude": list(build.cover_exclude)}
    return internal


def provenance_predicate(
    release: ReleaseFacts, build: BuildFacts | None, manifest: Manifest, *, image: str, builder: str,
    builds: tuple[BuildFacts, ...] = (),
) -> dict[str, Any]:
    """The SLSA v1 provenance predicate of ``manifest`` of ``image``. ``build``: the build of it (this
    run's, or the one an earlier run recorded when this run found the image already published; ``None``
    when neither is known, or for an index); ``builds``: every build of the image. The builder is the
    run that built it (as the build records it), else this run."""
    external: dict[str, Any] = {
        "tag": release.tag,
        "source": release.source,
        "registry": release.registry,
        "image": image,
        "config": {"path": release.config_path, "digest": {"sha256": release.config_digest}},
    }
    if manifest.platform:
        external["platform"] = manifest.platform
    dependencies: list[dict[str, Any]] = [{
        "uri": f"git+{release.source}@refs/tags/{release.tag}",
        "digest": {"gitCommit": release.revision},
    }]
    dependencies += base_dependencies(build, manifest)
    dependencies += [{"uri": f"pkg:oci/{image}@{digest}", "name": platform,
                      "digest": {"sha256": digest.removeprefix("sha256:")}} for platform, digest in manifest.entries]
    made_by = building_run(build, builds)
    metadata: dict[str, Any] = {"invocationID": made_by.run_id if made_by else release.run_id}
    if build is not None and build.started:
        metadata["startedOn"] = build.started
    if build is not None and build.finished:
        metadata["finishedOn"] = build.finished
    return {
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": external,
            "internalParameters": _internal(builder, build),
            "resolvedDependencies": dependencies,
        },
        "runDetails": {
            "builder": {"id": made_by.run_url if made_by and made_by.run_url else release.run_url,
                        "version": dict(release.versions)},
            "metadata": metadata,
        },
    }


def subjects_match(statement: dict[str, Any], digest: str) -> bool:
    """Whether an in-toto statement's subjects are exactly the manifest ``digest``."""
    subjects = statement.get("subject") or []
    wanted = digest.removeprefix("sha256:")
    return bool(subjects) and all((s.get("digest") or {}).get("sha256") == wanted for s in subjects)


def build_for(builds: tuple[BuildFacts, ...], manifest: Manifest) -> BuildFacts | None:
    """This run's build of ``manifest``: the one of its platform, or the image's only build (ko builds
    every platform at once; a single-platform image has one)."""
    if manifest.platform:
        for build in builds:
            if build.platform == manifest.platform:
                return build
    return builds[0] if len(builds) == 1 or (builds and not any(b.platform for b in builds)) else None
