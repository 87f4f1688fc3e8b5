"""``fma-release verify``: check a published release's signatures and attestations from the registry.

Nothing local is trusted: the images are the release config's names under the registry, each
read at the tag; an index brings its platform manifests; the charts are named on the command
line (the summary's verify command lists them) and read at the tag's version. For each manifest
cosign verifies the signature with the public key, and the provenance (and, for every image
manifest, the SBOM) attestation, whose subject must be that very digest. The provenance must also
be of this release: its tag, this image's name (the registry left out, so a release copied to
another registry still verifies) and one source at one commit for every image (the source asked
for, when one is given). A tag pointed at another release's signed image fails, naming both tags.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tasks.core.errors import ConfigError
from tasks.oci.references import Reference, chart_remote
from tasks.oci.registry import Registries
from tasks.run.config import DEFAULT_CONFIG, ReleaseConfig
from tasks.run.settings import Settings
from tasks.run.tags import parse_tag
from tasks.supplychain.cosign import PROVENANCE, SBOM, Cosign, VerifyFailed
from tasks.supplychain.provenance import manifests_to_sign, subjects_match

OK = "ok"


@dataclass(frozen=True)
class Check:
    """One manifest's verdicts: "ok", a reason, or "" where the check does not apply."""

    artifact: str
    digest: str
    signature: str
    provenance: str = ""
    sbom: str = ""

    @property
    def failures(self) -> list[str]:
        named = (("signature", self.signature), ("provenance", self.provenance), ("SBOM", self.sbom))
        return [f"{what}: {verdict}" for what, verdict in named if verdict and verdict != OK]


@dataclass(frozen=True)
class VerifyRequest:
    tag: str
    public_key: Path
    registry: str
    config: ReleaseConfig
    chart_registry: str | None = None
    charts: tuple[str, ...] = field(default_factory=tuple)
    source: str = ""  # the source the release must come from ("": any, as long as all images agree)


def provenance_mismatch(predicate: dict[str, Any], *, tag: str, name: str, source: str = "") -> str:
    """Why a provenance predicate is not of ``name`` at ``tag`` from ``source`` (pure), or ``""``."""
    external = (predicate.get("buildDefinition") or {}).get("externalParameters") or {}
    found_tag = str(external.get("tag", ""))
    if found_tag != tag:
        return (f"its provenance is of {found_tag or 'no tag'}, not {tag}: the tag points at another "
                "release's image")
    found_name = str(external.get("image", "")).rstrip("/").rsplit("/", 1)[-1]
    if found_name != name:
        return f"its provenance is of the image {found_name or '(none)'}, not {name}"
    if source and str(external.get("source", "")) != source:
        return f"its provenance is of the source {external.get('source', '')}, not {source}"
    return ""


def origin(predicate: dict[str, Any]) -> tuple[str, str]:
    """``(source, commit)`` a provenance predicate names."""
    build = predicate.get("buildDefinition") or {}
    source = str((build.get("externalParameters") or {}).get("source", ""))
    commits = [str((dep.get("digest") or {}).get("gitCommit", "")) for dep in build.get("resolvedDependencies") or []
               if isinstance(dep, dict) and (dep.get("digest") or {}).get("gitCommit")]
    return source, commits[0] if commits else ""


def _attested(tool: Cosign, ref: str, digest: str, predicate_type: str, *,
              verified: list[dict[str, Any]] | None = None) -> tuple[str, list[dict[str, Any]]]:
    """The verdict, and the predicates of the statements whose subject is ``digest``: among ``verified`` (the
    statements of the release's manifests, all verified at once) when given, else those cosign verifies on
    ``ref`` alone."""
    if verified is not None:
        statements = verified
    else:
        try:
            statements = tool.verify_attestation(ref, predicate_type)
        except VerifyFailed as failed:
            return ("missing" if failed.absent else failed.reason), []
    predicates = [s.get("predicate") or {} for s in statements if subjects_match(s, digest)]
    if not predicates:
        return f"no {predicate_type} statement has the subject {digest}", []
    return OK, predicates


def _provenance(tool: Cosign, ref: str, digest: str, *, request: VerifyRequest, name: str,
                verified: list[dict[str, Any]] | None = None) -> tuple[str, tuple[str, str] | None]:
    """The provenance verdict, and the ``(source, commit)`` of the statement that passed."""
    verdict, predicates = _attested(tool, ref, digest, PROVENANCE, verified=verified)
    if verdict != OK:
        return verdict, None
    reasons = [provenance_mismatch(p, tag=request.tag, name=name, source=request.source) for p in predicates]
    if all(reasons):
        return reasons[0], None
    good = next(p for p, reason in zip(predicates, reasons, strict=True) if not reason)
    return OK, origin(good)


def _signed(tool: Cosign, ref: str) -> str:
    try:
        tool.verify(ref)
    except VerifyFailed as failed:
        return "missing" if failed.absent else failed.reason
    return OK


@dataclass(frozen=True)
class _Item:
    """One manifest to check: where it is, and what applies to it."""

    artifact: str  # the image's (or chart's) name in the release config
    label: str  # as the table names it: "requester linux/arm64"
    host: str
    ref: str  # host/repository@digest
    digest: str
    chart: bool = False
    sbom: bool = False


MAX_PARALLEL = 4  # cosign processes at once


@dataclass(frozen=True)
class _AllAtOnce:
    """What one cosign process per kind of check found for all of a host's manifests: whether every signature
    verified, and the verified provenance and SBOM statements (None where one manifest failed: each is then
    checked alone, for its own verdict)."""

    signed: bool
    provenance: list[dict[str, Any]] | None
    sbom: list[dict[str, Any]] | None


def _all_at_once(tool: Cosign, items: Sequence[_Item]) -> _AllAtOnce:
    """A release of tens of manifests is three cosign processes when all is well, not one per check."""
    signed = [item.ref for item in items]
    attested = [item.ref for item in items if not item.chart]
    with_sbom = [item.ref for item in items if item.sbom]
    with ThreadPoolExecutor(max_workers=3) as pool:
        all_signed = pool.submit(tool.all_signed, signed)
        provenance = pool.submit(tool.attestations_of_all, attested, PROVENANCE) if attested else None
        sboms = pool.submit(tool.attestations_of_all, with_sbom, SBOM) if with_sbom else None
        return _AllAtOnce(all_signed.result(), provenance.result() if provenance else None,
                          sboms.result() if sboms else None)


def _targets(request: VerifyRequest, registries: Registries) -> list[_Item | Check]:
    """Every manifest of the release, read from the registry (a :class:`Check` for what is not there)."""
    version = parse_tag(request.tag).version
    targets = [(image.name, f"{request.registry}/{image.name}:{request.tag}", False)
               for image in request.config.images]
    remote = chart_remote(request.registry, request.chart_registry).removeprefix("oci://")
    targets += [(f"chart {name}", f"{remote}/{name}:{version}", True) for name in request.charts]
    found: list[_Item | Check] = []
    for artifact, ref, is_chart in targets:
        target = Reference.parse(ref)
        repository = f"{target.host}/{target.repository}"
        with registries.api(target.host) as api:
            manifest = api.manifest(target.repository, target.tag)
        if manifest is None:
            found.append(Check(artifact=artifact, digest="", signature=f"{ref} is not in the registry"))
        elif is_chart:
            found.append(_Item(artifact, artifact, target.host, f"{repository}@{manifest[0]}", manifest[0], chart=True))
        else:
            found += [_Item(artifact, f"{artifact} {item.platform}".strip(), target.host,
                            f"{repository}@{item.digest}", item.digest, sbom=item.wants_sbom)
                      for item in manifests_to_sign(*manifest)]
    return found


def verify_release(request: VerifyRequest, settings: Settings) -> list[Check]:
    """Every check of the release's images and charts, in order. The manifests are read first; then each
    kind of check (signature, provenance, SBOM) is one cosign process for all of a host's manifests, and
    only where that fails is each manifest checked alone (a few cosign processes at a time), for its verdict."""
    registries = Registries(settings)
    public_pem = request.public_key.read_text()
    found = _targets(request, registries)
    items = [item for item in found if isinstance(item, _Item)]
    with ExitStack() as stack:
        tools = {host: stack.enter_context(Cosign(settings, host, schemes=registries.schemes, public_pem=public_pem))
                 for host in sorted({item.host for item in items})}
        at_once = {host: _all_at_once(tool, [item for item in items if item.host == host])
                   for host, tool in tools.items()}

        def check(item: _Item | Check) -> tuple[Check, tuple[str, str] | None]:
            if isinstance(item, Check):
                return item, None
            tool, known = tools[item.host], at_once[item.host]
            signature = OK if known.signed else _signed(tool, item.ref)
            if item.chart:
                return Check(artifact=item.label, digest=item.digest, signature=signature), None
            provenance, source = _provenance(tool, item.ref, item.digest, request=request, name=item.artifact,
                                             verified=known.provenance)
            sbom = _attested(tool, item.ref, item.digest, SBOM, verified=known.sbom)[0] if item.sbom else ""
            return Check(artifact=item.label, digest=item.digest, signature=signature, provenance=provenance,
                         sbom=sbom), source

        with ThreadPoolExecutor(max_workers=max(1, min(MAX_PARALLEL, len(found)))) as pool:
            done = list(pool.map(check, found))
    origins: dict[tuple[str, str], list[str]] = {}  # (source, commit) -> the manifests whose provenance names it
    for checked, source in done:
        if source is not None:
            origins.setdefault(source, []).append(checked.artifact)
    return _one_origin([checked for checked, _ in done], origins)


def _one_origin(checks: list[Check], origins: dict[tuple[str, str], list[str]]) -> list[Check]:
    """The checks, with a provenance failure on every manifest whose source and commit are not the ones
    most of the release names: one release is one source at one commit."""
    if len(origins) < 2:
        return checks
    (source, commit), _ = max(origins.items(), key=lambda item: len(item[1]))
    odd = {label: f"its provenance is of {src} at {rev[:12]}, the rest of the release of {source} at {commit[:12]}"
           for (src, rev), labels in origins.items() if (src, rev) != (source, commit) for label in labels}
    return [replace(c, provenance=odd[c.artifact]) if c.artifact in odd else c for c in checks]


def render_table(checks: Sequence[Check]) -> str:
    """The checks as an aligned text table (pure)."""
    rows = [("artifact", "digest", "signature", "provenance", "sbom")]
    rows += [(c.artifact, c.digest[:19] if c.digest else "-", _short(c.signature), _short(c.provenance),
              _short(c.sbom)) for c in checks]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def _short(verdict: str) -> str:
    if not verdict:
        return "-"
    return verdict if verdict in (OK, "missing") else "FAILED"


def failure_line(checks: Sequence[Check]) -> str:
    """One line naming every artifact that failed and why ("" when all passed)."""
    failed = [f"{c.artifact} ({'; '.join(c.failures)})" for c in checks if c.failures]
    if not failed:
        return ""
    return f"{len(failed)} of {len(checks)} artifact(s) failed verification: " + ", ".join(failed)


def verify_command_line(tag: str, *, registry: str, chart_registry: str, config_path: Path, charts: Sequence[str],
                        source: str = "") -> str:
    """The ``fma-release verify`` command that checks a release at ``registry`` (pure): its options only
    where they differ from the defaults."""
    parts = ["fma-release", "verify", tag, "--key", "cosign.pub", "--registry", registry]
    if source:
        parts += ["--source", source]
    if chart_registry != chart_remote(registry, None):
        parts += ["--chart-registry", chart_registry]
    if config_path.resolve() != DEFAULT_CONFIG.resolve():
        parts += ["--config", str(config_path)]
    for chart in charts:
        parts += ["--chart", chart]
    return " ".join(shlex.quote(part) for part in parts)


def check_inputs(request: VerifyRequest) -> None:
    """A one-line error for input that cannot be verified at all."""
    parse_tag(request.tag)
    if not request.public_key.is_file():
        raise ConfigError(f"the public key {request.public_key} does not exist: pass the release's cosign.pub "
                            "with --key")
    if not request.config.images and not request.charts:
        raise ConfigError("nothing to verify: the release config lists no images and no --chart was given")
