"""``fma-release verify``: check a published release's signatures and attestations from the registry.

Nothing local is trusted: the images are the release config's names under the registry, each
read at the tag; an index brings its platform manifests; the charts are named on the command
line (the summary's verify command lists them) and read at the tag's version. For each manifest
cosign verifies the signature with the public key, and the provenance (and, for every image
manifest, the SBOM) attestation, whose subject must be that very digest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tasks.core.errors import ConfigError
from tasks.oci.references import Reference, chart_remote
from tasks.oci.registry import Registries
from tasks.run.config import ReleaseConfig
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


def _attested(tool: Cosign, ref: str, digest: str, predicate_type: str) -> str:
    try:
        statements = tool.verify_attestation(ref, predicate_type)
    except VerifyFailed as failed:
        return "missing" if failed.absent else failed.reason
    if not any(subjects_match(s, digest) for s in statements):
        return f"no {predicate_type} statement has the subject {digest}"
    return OK


def _signed(tool: Cosign, ref: str) -> str:
    try:
        tool.verify(ref)
    except VerifyFailed as failed:
        return "missing" if failed.absent else failed.reason
    return OK


def verify_release(request: VerifyRequest, settings: Settings) -> list[Check]:
    """Every check of the release's images and charts, in order."""
    version = parse_tag(request.tag).version
    registries = Registries(settings)
    public_pem = request.public_key.read_text()
    checks: list[Check] = []
    targets = [(image.name, f"{request.registry}/{image.name}:{request.tag}", False)
               for image in request.config.images]
    remote = chart_remote(request.registry, request.chart_registry).removeprefix("oci://")
    targets += [(f"chart {name}", f"{remote}/{name}:{version}", True) for name in request.charts]
    for artifact, ref, is_chart in targets:
        target = Reference.parse(ref)
        repository = f"{target.host}/{target.repository}"
        with registries.api(target.host) as api:
            found = api.manifest(target.repository, target.tag)
        if found is None:
            checks.append(Check(artifact=artifact, digest="", signature=f"{ref} is not in the registry"))
            continue
        digest, manifest = found
        with Cosign(settings, target.host, schemes=registries.schemes, public_pem=public_pem) as tool:
            if is_chart:
                signature = _signed(tool, f"{repository}@{digest}")
                checks.append(Check(artifact=artifact, digest=digest, signature=signature))
                continue
            for item in manifests_to_sign(digest, manifest):
                at = f"{repository}@{item.digest}"
                checks.append(Check(
                    artifact=f"{artifact} {item.platform}".strip(), digest=item.digest, signature=_signed(tool, at),
                    provenance=_attested(tool, at, item.digest, PROVENANCE),
                    sbom=_attested(tool, at, item.digest, SBOM) if item.wants_sbom else "",
                ))
    return checks


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


def check_inputs(request: VerifyRequest) -> None:
    """A one-line error for input that cannot be verified at all."""
    parse_tag(request.tag)
    if not request.public_key.is_file():
        raise ConfigError(f"the public key {request.public_key} does not exist: pass the release's cosign.pub "
                            "with --key")
    if not request.config.images and not request.charts:
        raise ConfigError("nothing to verify: the release config lists no images and no --chart was given")
