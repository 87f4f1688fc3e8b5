"""The sign step: one task per published image or chart that signs, attests and attaches SBOMs to
what lacks them (tasks/supplychain/cosign.py runs the tools; whether a run signs, and its key, are
decided in the preflight by tasks/supplychain/signer.py).

What is already signed and attested with this key for a digest is read back first and left alone,
so a re-release that changes nothing pushes nothing.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from tasks.core import progress
from tasks.core.errors import SigningError
from tasks.core.status import Status
from tasks.oci.references import Reference
from tasks.run.facts import ReleaseFacts
from tasks.run.result import SignatureResult
from tasks.supplychain.cosign import PROVENANCE, SBOM, Cosign, VerifyFailed
from tasks.supplychain.provenance import (
    Manifest,
    build_for,
    cosign_tag,
    manifests_to_sign,
    provenance_predicate,
    subjects_match,
)
from tasks.supplychain.signer import SignJob, builder_sbom, ensure_all_signed, ensure_signed

if TYPE_CHECKING:
    from tasks.oci.registry import RegistryAPI
    from tasks.run.context import RunContext


MAX_PARALLEL_MANIFESTS = 4  # an image index and its platforms: usually 2-4 manifests


class _Session:
    """Signs the manifests of one artifact; what each check found is kept for the result."""

    def __init__(self, job: SignJob, tool: Cosign, api: RegistryAPI, target: Reference) -> None:
        self.job, self.tool, self.api = job, tool, api
        self.path = target.repository
        self.repository = f"{target.host}/{target.repository}"

    def ref(self, digest: str) -> str:
        return f"{self.repository}@{digest}"

    def _stored(self, digest: str, kind: str) -> bool:
        """Whether cosign's tag for ``digest`` exists: one HEAD request. Only what exists is read back
        with cosign (a process each); a first release of a digest skips every read-back."""
        return bool(self.api.digest(self.path, cosign_tag(digest, kind)))

    def signature(self, digest: str) -> Status:
        return ensure_signed(self.tool, self.api, self.path, digest)

    def signatures(self, digests: list[str]) -> dict[str, Status]:
        """Every manifest of an image signed by one cosign process (one opening of the key)."""
        return ensure_all_signed(self.tool, self.api, self.path, digests)

    def attestation(self, digest: str, predicate_type: str, make: Callable[[], bytes], *, stored: bool) -> Status:
        """Attest ``digest`` with the predicate ``make`` returns, unless cosign's .att tag was ``stored`` before
        this run attested it and holds such a statement that verifies."""
        try:
            if stored and any(
                    subjects_match(s, digest) for s in self.tool.verify_attestation(self.ref(digest), predicate_type)):
                return Status.ALREADY_SIGNED
        except VerifyFailed:
            pass
        self.tool.attest(self.ref(digest), make(), predicate_type)
        return Status.SIGNED

    def attestations(self, manifest: Manifest, facts: ReleaseFacts) -> tuple[Status, Status | None]:
        """The provenance and (for a platform manifest) the SBOM attestation of one manifest."""
        job = self.job
        build = build_for(job.builds, manifest)
        predicate = provenance_predicate(facts, build, manifest, image=self.repository,
                                         builder=job.builder, builds=job.builds)
        own = builder_sbom(job.sboms, manifest.platform) if manifest.wants_sbom else None
        digest = manifest.digest
        # Both attestations share cosign's .att tag, which each one reads and rewrites: one after the
        # other. Whether the tag was there is asked once, before either: a manifest not attested yet is
        # read back for neither. Its SBOM scan runs beside the provenance.
        stored = self._stored(digest, "att")
        with ThreadPoolExecutor(max_workers=1) as pool:
            scan = (pool.submit(self.tool.sbom, self.ref(digest))
                    if manifest.wants_sbom and own is None and not stored else None)
            provenance = self.attestation(digest, PROVENANCE, lambda: json.dumps(predicate).encode(), stored=stored)
            sbom = None
            if manifest.wants_sbom:
                sbom = self.attestation(digest, SBOM, lambda: own.read_bytes() if own else
                                        scan.result() if scan else self.tool.sbom(self.ref(digest)), stored=stored)
        return provenance, sbom

    def result(self, manifest: Manifest, signature: Status, attested: tuple[Status, Status | None]) -> SignatureResult:
        artifact = f"{self.job.name} {manifest.platform}".strip() if not manifest.is_index else self.job.name
        return SignatureResult(artifact=artifact, ref=self.ref(manifest.digest), digest=manifest.digest,
                               signature=signature, provenance=attested[0], sbom=attested[1])


def _annotated(api: RegistryAPI, repository: str, manifest: Manifest) -> Manifest:
    """An index's platform manifest with its own annotations (ko names each one's base there)."""
    if manifest.is_index or manifest.annotations or not manifest.platform:
        return manifest
    found = api.manifest(repository, manifest.digest)
    annotations = (found[1].get("annotations") or {}) if found else {}
    return dataclasses.replace(manifest, annotations=tuple(sorted((str(k), str(v)) for k, v in annotations.items())))


@task(name="sign", task_run_name="sign {job.label}", cache_policy=NONE)
def sign_task(job: SignJob, run: RunContext) -> tuple[SignatureResult, ...]:
    """Sign ``job``'s artifact: every manifest of an image (with provenance and SBOM attestations), or a chart."""
    log = get_run_logger()
    signer, facts = run.signer, run.provenance
    if signer is None or facts is None:
        raise SigningError(f"cannot sign {job.label}: the run has no signing key")
    target = Reference.parse(job.ref)
    with progress.reporting(job.label), Cosign(run.settings, target.host, schemes=run.registries.schemes,
                                               key=signer.key, public_pem=signer.public_pem) as tool, \
            run.registries.api(target.host) as api:
        progress.report(job.label, Status.SIGNING, "")
        session = _Session(job, tool, api, target)
        if job.kind == "chart":
            results: tuple[SignatureResult, ...] = (SignatureResult(
                artifact=job.label, ref=session.ref(job.digest), digest=job.digest,
                signature=session.signature(job.digest)),)
        else:
            found = api.manifest(target.repository, job.digest)
            if found is None:
                raise SigningError(f"cannot sign {job.label}: {session.ref(job.digest)} is not in the registry; "
                                   "re-run the release")
            manifests = [_annotated(api, target.repository, m) for m in manifests_to_sign(job.digest, found[1])]
            # The signatures of every manifest are one cosign process (the signature is a tag of its own),
            # beside each manifest's attestations (cosign processes of their own): all at once.
            with ThreadPoolExecutor(max_workers=1 + min(MAX_PARALLEL_MANIFESTS, len(manifests))) as pool:
                signatures = pool.submit(session.signatures, [m.digest for m in manifests])
                attested = list(pool.map(lambda manifest: session.attestations(manifest, facts), manifests))
                signed = signatures.result()
            results = tuple(session.result(m, signed[m.digest], a) for m, a in zip(manifests, attested, strict=True))
    done = [r for r in results if Status.SIGNED in (r.signature, r.provenance, r.sbom)]
    log.info("%s: %d manifest(s), %d newly signed or attested", job.label, len(results), len(done))
    progress.report(job.label, Status.SIGNED if done else Status.ALREADY_SIGNED, f"{len(results)} manifest(s)")
    return results
