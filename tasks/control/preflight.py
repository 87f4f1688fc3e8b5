"""The preflight: what a run learns and checks in well under a second, before anything is checked
out or built. Its answer is a value (:class:`~tasks.run.context.RunFacts`, and the recorded result
when this exact release is still published); the flow builds the run's context from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from tasks.control.records import published_release, release_key
from tasks.core import progress
from tasks.core.sandbox import build_user
from tasks.core.status import Status
from tasks.oci.references import Reference
from tasks.run.config import configured_engines
from tasks.run.context import ReleaseRequest, RunFacts, RunServices
from tasks.run.result import ReleaseResult
from tasks.supplychain import sbom
from tasks.supplychain.signer import load_signer, signing_decision

NOTHING_CHANGED = "nothing changed: every image and chart of this tag was already published"


@dataclass(frozen=True)
class Preflight:
    """What the preflight found: the run's facts, and the recorded result of a release still published."""

    facts: RunFacts
    recorded: ReleaseResult | None = None


def check_registries(request: ReleaseRequest, services: RunServices) -> None:
    """One ``GET /v2/`` per registry with the credentials: unreachable or refused fails here, once."""
    for ref in dict.fromkeys([request.registry, request.chart_remote.removeprefix("oci://")]):
        target = Reference.parse(ref)
        with services.registries.api(target.host) as api:
            api.check_access(target.repository)


def check_engines_and_registries(request: ReleaseRequest, services: RunServices) -> None:
    """Every Docker engine answers and, unless a dry run, the registries accept the credentials.

    Reads only, a few tens of milliseconds: the flow calls it before any task (a task run would
    cost more than the checks), so a run that cannot succeed fails before anything starts.
    """
    for target in configured_engines(request.config):
        with services.engines.client(target):
            pass
    if not request.dry_run:
        check_registries(request, services)


def preflight(request: ReleaseRequest, services: RunServices, revision: str) -> Preflight:
    """Open the signing key (a bad key or password fails before any build), name the release's
    record from the tagged ``revision`` and the config, answer from the record when this exact
    release is still published, else check engines and registries (and start the SBOM scanner of a
    signed release with a Dockerfile image)."""
    services.settings.all_credentials()  # credentials bound to no host fail here, before anything is built
    if any(image.builder == "ko" for image in request.config.images):
        build_user(services.settings.build_user)  # so does a missing build user
    signs, note = signing_decision(configured=services.settings.signing_configured, no_sign=request.no_sign,
                                   config_sign=request.config.sign)
    signer = load_signer(services.settings) if signs else None
    if not signs and not request.dry_run:
        progress.report(progress.RUN, Status.WARNING, note)
    if request.dry_run:
        check_engines_and_registries(request, services)
        return Preflight(RunFacts(revision=revision, signer=signer, unsigned_note=note))
    # A release that is still published needs no engine and pushes nothing, so the other checks come after.
    key = release_key(
        tag=request.tag, revision=revision, config=request.config, config_bytes=request.config_path.read_bytes(),
        registry=request.registry, chart_remote=request.chart_remote,
        signing=signer.fingerprint if signer else "",
    )
    facts = RunFacts(revision=revision, record_key=key, signer=signer, unsigned_note=note)
    recorded = None if request.force else published_release(services.settings.state_dir, key, services.registries)
    if recorded is None:
        check_engines_and_registries(request, services)
        if signer is not None and any(image.builder != "ko" for image in request.config.images):
            sbom.warm()  # syft's start-up is paid while the images build; ko writes its own SBOMs
        return Preflight(facts)
    return Preflight(facts, recorded.as_already_published(NOTHING_CHANGED))
