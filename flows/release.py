"""The release flow: the order of the steps, and nothing else.

    preflight ─► published already? ─► summary
      └► checkout@tag ─┬─► package charts ─────────────────────────────────────┐
                       ├─► build A ─► push A ─┐                                 │
                       ├─► build B ─► push B ─┼─► index ─► sign images ─► push charts ─► sign charts
                       └─► build C ─► push C ─┘                                      ─► record ─► summary

Every box is a task (tasks/<step>.py) or a read of the preflight (tasks/control/preflight.py).
Charts are packaged (values set, lint, rendered images checked) while images build, and every
push waits for them, so a broken chart stops the release before anything is pushed. Each push is
submitted as its own build ends (flows/fanout.py). A multi-platform image's tag is an index of its
platform images (flows/multiplatform.py). Every image is signed before a chart is pushed: the
chart makes the release installable, so a release whose signing failed is never installable.

The flow's parameters are the options of tasks/run/options.py, keyword-only; a run of a
deployment may change only the form's fields (the deployment's own parameters pin the rest).
"""

from __future__ import annotations

import asyncio
import functools
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.context import SyncClientContext
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run

from flows.chains import ImageChains
from flows.events import on_release_completed, on_release_failed
from flows.fanout import collect_charts, sign_all, signing_failed
from flows.pinned import refuse_pinned_changes
from flows.runners import runs_here, task_runner
from tasks.charts import package_chart_task, push_chart_task
from tasks.control.concurrency import afree_abandoned_slot, atag_slot
from tasks.control.outage import OUTCOME, note_if_server_gone
from tasks.control.preflight import Preflight, preflight
from tasks.control.records import save_record
from tasks.control.slots import SlotTiming, SlotWaitCancelled
from tasks.core import progress
from tasks.core.errors import ImagesFailedError, ProofError, ReleaseError
from tasks.core.project import PROJECT_ROOT
from tasks.core.redact import install_log_filter
from tasks.core.status import Status
from tasks.forge.github import DraftRelease
from tasks.github_release import on_github, open_draft_task
from tasks.gomod import go_modules_task
from tasks.helm.chart import chart_dirs, dry_run_chart
from tasks.prove import prove_task
from tasks.push import published_images
from tasks.run.context import ReleaseRequest, RunContext, RunServices, provenance_facts
from tasks.run.options import with_options
from tasks.run.plan import image_specs
from tasks.run.result import ProofRow, ReleaseResult
from tasks.source import checkout_task, resolve_tag
from tasks.summary import apublish_summary, release_result, write_summary
from tasks.supplychain.signer import chart_jobs


@flow(
    name="publish-release",
    flow_run_name="release {tag}",
    task_runner=task_runner(),  # threads, or Dask when FMA_DASK_ADDRESS is set (flows/runners.py)
    validate_parameters=True,
    on_completion=[on_release_completed],  # fma.release.succeeded / .failed for automations
    on_failure=[on_release_failed],
    on_crashed=[on_release_failed],
)
@with_options("Release a tag of the FMA source: images, charts, signatures, the summary.")
async def release_flow(**parameters: Any) -> ReleaseResult:
    # An async flow costs Prefect ~0.3 s a run where a sync one costs ~1.2 s (its heartbeat is
    # joined in 1 s steps). The steps block on git, the Docker engine and task futures, so they run
    # in a thread of their own; the event loop stays free for the tag slot's lease renewals.
    install_log_filter()
    request = ReleaseRequest.from_parameters(parameters)
    services = RunServices.from_settings()
    await refuse_pinned_changes(parameters, services.settings.form_fields)
    _announce_run()
    preflights: list[Preflight] = []  # each holds the run's copy of its signing key until the run ends
    try:
        revision = await asyncio.to_thread(resolve_tag, request.source, request.tag)
        checked = await asyncio.to_thread(preflight, request, services, revision, tasks_here=_tasks_run_here())
        preflights.append(checked)
        if checked.recorded is not None:  # this exact release is published: nothing to do, no slot needed
            return await _answer_from_record(request, services, checked, checked.recorded)
        if request.stage:  # built, pushed and signed at the stage, proven there, then promoted
            await asyncio.to_thread(checked.key_opened)
            stage_checked = await asyncio.to_thread(preflight, request.at_stage(), services, revision,
                                                    tasks_here=_tasks_run_here())
            preflights.append(stage_checked)
            run = _run_context(request.at_stage(), services, stage_checked)
            steps = functools.partial(_staged_release, request, run, stage_checked, checked)
        else:
            run = _run_context(request, services, checked)
            steps = functools.partial(_release, run, checked.key_opened)
        # One run per tag at a time; different tags run side by side.
        settings = services.settings
        async with atag_slot(request.tag, timing=SlotTiming.of(settings), namespace=settings.slot_namespace):
            draft = None
            try:
                if request.github_repo and not request.dry_run:  # a draft on GitHub before anything is built
                    draft = await asyncio.to_thread(open_draft_task, request.tag, request.github_repo)
                return await asyncio.to_thread(steps, draft=draft)
            except ReleaseError:
                note_if_server_gone()  # before the slot's release, the first call after the failure
                if draft is not None and not draft.published:
                    progress.report(progress.RUN, Status.WARNING, f"the GitHub release {request.tag} of "
                                    f"{draft.repo} stays a draft: {draft.url}")
                raise
    except SlotWaitCancelled as err:  # the run is Cancelled already: end it, with nothing done
        from prefect.exceptions import Abort

        progress.report(progress.RUN, Status.FAILED, str(err))
        raise Abort(str(err)) from err
    except ReleaseError as err:
        progress.report(progress.RUN, Status.FAILED, str(err))
        raise
    finally:
        for checked in preflights:
            checked.close()




async def _answer_from_record(request: ReleaseRequest, services: RunServices, checked: Preflight,
                              recorded: ReleaseResult) -> ReleaseResult:
    """The answer of a run whose exact release is published: its record, once the signing key has opened (as
    any run's must)..."""
    await asyncio.to_thread(checked.key_opened)
    # ...and its GitHub release, when the run has one, published if an earlier run could not
    recorded = await asyncio.to_thread(_on_github_again, request, recorded)
    OUTCOME.finished(recorded)
    # ...and a slot that a run of the tag left held (it ended while the Prefect server was away) freed
    freed = await afree_abandoned_slot(request.tag, services.settings.slot_namespace)
    if freed:
        progress.report(progress.RUN, Status.SLOT_TAKEN, freed)
    await apublish_summary(recorded)  # no task: the whole answer is this artifact
    progress.report(progress.RUN, Status.DONE, "nothing changed")
    return recorded


def release(runner: Any = None, **parameters: Any) -> ReleaseResult:
    """Run the release flow to completion from synchronous code (the CLI, tests, benchmarks);
    ``runner``: a task runner instead of the flow's own (see flows/runners.py)."""
    flow_ = release_flow if runner is None else release_flow.with_options(task_runner=runner)
    result: ReleaseResult = asyncio.run(flow_(**parameters))
    return result


def _announce_run() -> None:
    """Tell listeners (the CLI) the run's id and its page in the Prefect UI."""
    ui_url = flow_run.ui_url or ""
    progress.run_started(flow_run.id, ui_url if ui_url.startswith("http") else "")


def _run_context(request: ReleaseRequest, services: RunServices, checked: Preflight) -> RunContext:
    """The run's context, built once from what the preflight found."""
    facts = checked.facts
    ui_url = flow_run.ui_url or ""
    run_id = str(flow_run.id or "")
    # The API this run reports to: the environment's, else Prefect's own setting (a server the CLI chose
    # or started for this run), so builder.id is always an address, never a bare path.
    api = (services.settings.prefect_api_url or _reporting_api()).rstrip("/")
    run_url = ui_url if ui_url.startswith("http") else f"{api}/flow_runs/{run_id}"
    provenance = None
    if facts.signer is not None and not request.dry_run:
        provenance = provenance_facts(request, facts.revision, run_id=run_id, run_url=run_url)
    return RunContext(request, services, facts, provenance, run_id=run_id, run_url=run_url)


def _staged_release(request: ReleaseRequest, run: RunContext, stage_checked: Preflight, final: Preflight,
                    *, draft: DraftRelease | None = None) -> ReleaseResult:
    """A staged release: the release to the stage (or the stage's record), its proof, then its promotion to
    the request's registry; nothing reaches that registry unless the proof passed, and the GitHub release
    (``draft``) is published only after the promotion."""
    with SyncClientContext.get_or_create():
        def proven(at_stage: ReleaseResult, source: Path | None) -> ReleaseResult:
            return _prove_and_promote(request, run, at_stage, source=source, final=final, draft=draft)

        if stage_checked.recorded is None:
            return _release_steps(run, stage_checked.key_opened, staged=proven)
        stage_checked.key_opened()
        # The stage holds this release already (a re-run after a failed promotion): prove it again, from a
        # checkout of the tag when the proof needs the source (the CRDs of its Kubernetes proof).
        if not (request.config.proof.kubernetes and request.config.proof.crds):
            return proven(stage_checked.recorded, None)
        workspace = run.open_workspace()
        try:
            checkout = checkout_task(request.source, request.tag, workspace, run.facts.revision)
            return proven(stage_checked.recorded, checkout.path)
        finally:
            if run.own_workspace:
                shutil.rmtree(workspace, ignore_errors=True)


def _prove_and_promote(request: ReleaseRequest, run: RunContext, at_stage: ReleaseResult, *, source: Path | None,
                       final: Preflight, draft: DraftRelease | None) -> ReleaseResult:
    # Only a staged release promotes: a release straight to its registry never loads the promotion's modules.
    from flows.promote import promote_release
    from tasks.promote.context import PromotionRequest

    log = get_run_logger()
    proof = prove_task(at_stage, run, source)
    if not proof.passed:
        raise ProofError(f"the staged release {request.tag} at {request.stage} failed its proof, nothing was promoted "
                         f"to {request.registry}: {proof.failure_line()}")
    promoted: ReleaseResult = promote_release(PromotionRequest(
        tag=request.tag, from_registry=request.stage, to_registry=request.registry,
        chart_from=run.request.chart_remote, chart_to=request.chart_remote, config=request.config,
        config_path=request.config_path, retry=request.retry,
    ), run.settings, run.registries)
    rows = tuple(ProofRow(check=c.name, verdict=c.verdict, detail=c.detail, seconds=round(c.seconds, 1))
                 for c in proof.checks)
    result = promoted.model_copy(update={
        "staged_at": request.stage, "proof": rows, "source_revision": at_stage.source_revision,
        "notes": (*promoted.notes, f"staged at {request.stage} and proven there ({len(proof.ran)} check(s) passed) "
                                   f"before it was promoted to {request.registry}"),
    })
    if final.facts.record_key:  # public at the registry: a re-run is answered from here (and publishes on GitHub)
        save_record(run.settings.state_dir, final.facts.record_key, result)
    result = on_github(draft, result)
    OUTCOME.finished(result)
    write_summary(result, log)
    progress.report(progress.RUN, Status.DONE, "")
    return result


def _finish(run: RunContext, result: ReleaseResult, staged: Callable[[ReleaseResult, Path], ReleaseResult] | None,
            source: Path, *, draft: DraftRelease | None = None) -> ReleaseResult:
    """The release is published: record it, and either end the run with its GitHub release and summary or, for
    the stage of a staged release, go on to the proof and the promotion (with the checkout still there)."""
    if run.facts.record_key:  # a staged run's stage is whole too: a re-run after a failed promotion starts there
        save_record(run.settings.state_dir, run.facts.record_key, result)
    if staged is not None:
        return staged(result, source)
    result = on_github(draft, result)
    # Everything is published: from here the result must reach the caller even when the
    # Prefect server is gone (the summary artifact is an API call; tasks/control/outage.py).
    OUTCOME.finished(result)
    write_summary(result, get_run_logger())
    progress.report(progress.RUN, Status.DONE, "")
    return result


def _tasks_run_here() -> bool:
    """Whether this run's tasks run in this machine's processes (flows/runners.py)."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return runs_here(ctx.task_runner if ctx is not None else None)


def _reporting_api() -> str:
    from prefect.settings import PREFECT_API_URL

    return str(PREFECT_API_URL.value() or "")


def _on_github_again(request: ReleaseRequest, recorded: ReleaseResult) -> ReleaseResult:
    """A release answered from its record: its GitHub release published, when the run has one and an earlier run
    ended before it could publish it."""
    if not request.github_repo or request.dry_run:
        return recorded
    with SyncClientContext.get_or_create():
        return on_github(open_draft_task(request.tag, request.github_repo), recorded)


def _release(run: RunContext, key_opened: Callable[[], None], *, draft: DraftRelease | None = None) -> ReleaseResult:
    """The release's steps after the preflight, every one a task, run from this (non-event-loop) thread."""
    # One API client for every task run of the release: without it each task run makes its own, and
    # each new client builds a TLS context from the CA bundle (about 0.1 s of CPU: the largest
    # per-image cost in a profile of a 32-image release).
    with SyncClientContext.get_or_create():
        return _release_steps(run, key_opened, draft=draft)


def _release_steps(run: RunContext, key_opened: Callable[[], None],
                   staged: Callable[[ReleaseResult, Path], ReleaseResult] | None = None,
                   draft: DraftRelease | None = None) -> ReleaseResult:
    """The release's steps; ``key_opened`` returns once the signing key has opened (the preflight's check
    of its password runs while the source is checked out); ``staged``: this is the stage part of a staged
    release, and what comes after it (the proof and the promotion, given the stage's result and the
    checkout) is called while the checkout is still there, its result the run's; ``draft``: the run's
    GitHub release, published at the end."""
    log = get_run_logger()
    request = run.request
    policy = request.retry.task_options()
    workspace = run.open_workspace()
    submitted: list[PrefectFuture[Any]] = []  # what runs in the workspace: waited for before it is removed
    try:
        # This project's charts need no checkout: they are packaged while the source is checked out.
        project_charts, notes = chart_dirs(request.config, "project", PROJECT_ROOT, request.tag)
        packages = [package_chart_task.submit(d, run) for d in project_charts]
        checkout = checkout_task(request.source, request.tag, workspace, run.facts.revision)
        specs = image_specs(request.config, checkout, request.registry)
        source_charts, more = chart_dirs(request.config, "source", checkout.path, request.tag)
        packages += [package_chart_task.submit(d, run) for d in source_charts]
        for note in (notes := notes + more):
            log.warning("%s", note)
            progress.report(progress.RUN, Status.WARNING, note)
        log.info("releasing %s (%s) of %s: %d image(s) in %d build(s), %d chart(s)", request.tag,
                 checkout.revision, checkout.source, len({s.name for s in specs}), len(specs), len(packages))

        # Images the registry already holds exactly (a re-run) get no build or push step at all.
        kept = [] if request.dry_run else published_images(specs, run.registries, run.settings.state_dir)
        for image in kept:
            log.info("%s: kept as already published, not built or pushed: %s (%s) carries this build's "
                     "fingerprint (same source, Dockerfile or Go files, config and platforms)",
                     image.item, image.ref, image.digest)
        key_opened()  # a key that does not open fails the run here, before anything is built
        # A cold release downloads the Go modules of its ko images at once, while the other images build.
        to_build = [spec for spec in specs if spec.label not in {image.item for image in kept}]
        modules = [go_modules_task.submit(checkout, run)] if any(s.builder == "ko" for s in to_build) else []
        submitted += modules
        # Each image's chain (build, push, index, sign) goes on as its own steps end (flows/chains.py).
        chains = ImageChains(run, specs, packages, modules)
        try:
            ended = chains.run_all(kept)
        finally:
            submitted += chains.submitted
        chart_packages, chart_failure = collect_charts(packages)
        if chart_failure is not None:
            raise chart_failure
        if ended.failures:
            raise ImagesFailedError(ended.failures)
        if ended.sign_failures:
            raise signing_failed(ended.sign_failures)

        # Every image is published and signed: now the charts, which make the release installable.
        chart_pusher = push_chart_task.with_options(**policy)
        charts = [dry_run_chart(p, request.chart_remote) if request.dry_run else chart_pusher(p, run)
                  for p in chart_packages]
        signatures = ended.signatures + (sign_all(chart_jobs(charts), run) if run.signs else [])

        result = release_result(run, checkout.revision, ended.images, chart_packages, charts=charts,
                                signatures=signatures, notes=notes)
        return _finish(run, result, staged, checkout.path, draft=draft)
    finally:
        # A run that fails early (the Prefect server gone, say) must not pull the source from under
        # builds still running; wait() never raises.
        for future in submitted:
            future.wait()
        if run.own_workspace and not request.dry_run:
            shutil.rmtree(workspace, ignore_errors=True)
