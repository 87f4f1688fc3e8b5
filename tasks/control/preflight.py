"""The preflight: what a run learns and checks in well under a second, before anything is checked
out or built. Its answer is a value (:class:`~tasks.run.context.RunFacts`, and the recorded result
when this exact release is still published); the flow builds the run's context from it.
"""

from __future__ import annotations

import functools
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from tasks.control.records import published_release, release_key
from tasks.core import progress
from tasks.core.sandbox import build_user
from tasks.core.status import Status
from tasks.oci.references import Reference
from tasks.run.config import configured_engines
from tasks.run.context import ReleaseRequest, RunFacts, RunServices
from tasks.run.result import ReleaseResult
from tasks.supplychain import sbom
from tasks.supplychain.runkey import key_directory, remove_key_directory
from tasks.supplychain.signer import load_signer, open_signer, signing_decision

NOTHING_CHANGED = "nothing changed: every image and chart of this tag was already published"


@dataclass(frozen=True)
class Preflight:
    """What the preflight found: the run's facts, the recorded result of a release still published, and
    the check of the signing key's password when it is still running (:meth:`key_opened` waits for it)."""

    facts: RunFacts
    recorded: ReleaseResult | None = None
    key_check: Future[None] | None = None
    key_directory: Path | None = None  # where the run's copy of its signing key is: removed by close()

    def key_opened(self) -> None:
        """Return once the signing key has opened with its password; its one-line SigningError if it did not."""
        if self.key_check is not None:
            self.key_check.result()

    def close(self) -> None:
        """Remove the run's copy of its signing key (when the run has ended)."""
        remove_key_directory(self.key_directory)


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


def preflight(request: ReleaseRequest, services: RunServices, revision: str, *, tasks_here: bool = True) -> Preflight:
    """Open the signing key (a bad key or password fails before any build: at once, or, for a key this
    machine has opened before, when the flow waits on :meth:`Preflight.key_opened`), name the release's
    record from the tagged ``revision`` and the config, answer from the record when this exact
    release is still published, else check engines and registries (and start the SBOM scanner of a
    signed release with a Dockerfile image). ``tasks_here``: the run's tasks run in this machine's processes
    (threads, or a local Dask cluster), so they can read the run's copy of the key; a run whose tasks may run on
    other machines signs with the configured key itself, as they find it."""
    services.settings.all_credentials()  # credentials bound to no host fail here, before anything is built
    if any(image.builder == "ko" for image in request.config.images):
        build_user(services.settings.build_user)  # so does a missing build user
    signs, note = signing_decision(configured=services.settings.signing_configured, no_sign=request.no_sign,
                                   config_sign=request.config.sign)
    if not signs and not request.dry_run:
        progress.report(progress.RUN, Status.WARNING, note)
    directory = key_directory() if signs and tasks_here else None
    try:
        return _checked(request, services, revision, note=note, directory=directory, signs=signs)
    except BaseException:
        remove_key_directory(directory)
        raise


def _checked(request: ReleaseRequest, services: RunServices, revision: str, *, note: str,
             directory: Path | None, signs: bool) -> Preflight:
    signer, key_check = (open_signer(services.settings, directory) if directory
                         else (load_signer(services.settings) if signs else None, None))
    opened = functools.partial(Preflight, key_check=key_check, key_directory=directory)
    if request.dry_run:
        check_engines_and_registries(request, services)
        return opened(RunFacts(revision=revision, signer=signer, unsigned_note=note))
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
        return opened(facts)
    return opened(facts, recorded.as_already_published(NOTHING_CHANGED))
