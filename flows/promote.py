"""The promotion flow: a published release copied to another registry, without rebuilding anything.

    preflight ─► package charts ─┬─► copy image A (+ signatures, attestations, referrers) ─┐
    (source, key,  (for the       ├─► copy image B ───────────────────────────────────────────┼─► push charts
     destination)   destination)  └─► copy image C ───────────────────────────────────────────┘   ─► sign ─► verify
                                                                                                   ─► summary

The charts are packaged for the destination first (a chart that cannot go stops the promotion before
anything is copied), the images are copied in parallel, each by digest (tasks/oci/copy.py), and the
charts are pushed only when every image and its signatures are at the destination, so the destination
never holds an installable chart whose images are missing. A failed image is one line each, and no
chart is pushed; a re-run copies only what is missing.

Three ways in, one promotion:

- ``promote_flow`` (the ``promote-release`` flow and deployment; called from another flow it is a
  subflow of that run);
- :func:`promote`, from synchronous code (the CLI, tests, benchmarks): runs the flow;
- :func:`promote_release`, from inside another flow's run (a staged release): the same steps as tasks
  of that run, with no flow of its own.
"""

from __future__ import annotations

import asyncio
import shutil
from typing import Any

from prefect import flow, get_run_logger
from prefect.context import SyncClientContext
from prefect.runtime import flow_run

from flows.fanout import outcome
from flows.pinned import refuse_pinned_changes
from flows.runners import task_runner
from tasks.core import progress
from tasks.core.errors import ImagesFailedError, ReleaseError
from tasks.core.redact import install_log_filter
from tasks.core.status import Status
from tasks.oci.registry import Registries
from tasks.promote.context import PromotionRequest, PromotionRun
from tasks.promote.plan import CopiedImage, Promoted, image_moves, promotion_result
from tasks.promote.preflight import promotion_preflight
from tasks.promotion import (
    copy_image_task,
    package_chart_task,
    promotion_summary_task,
    push_chart_task,
    sign_chart_task,
    verify_task,
)
from tasks.run.options import PROMOTE_OPTIONS, with_options
from tasks.run.result import ExternalImageResult, ReleaseResult
from tasks.run.settings import Settings


@flow(
    name="promote-release",
    flow_run_name="promote {tag} to {to_registry}",
    task_runner=task_runner(),
    validate_parameters=True,
)
@with_options("Promote a published release to another registry: images by digest with their signatures and "
              "attestations, the charts packaged for it and signed, then verified there.", PROMOTE_OPTIONS)
async def promote_flow(**parameters: Any) -> ReleaseResult:
    # Async for the same reason as the release flow: a sync flow costs Prefect about a second a run.
    install_log_filter()
    request = PromotionRequest.from_parameters(parameters)
    settings = Settings.from_env()
    await refuse_pinned_changes(parameters, settings.form_fields, PROMOTE_OPTIONS)
    ui_url = flow_run.ui_url or ""
    progress.run_started(flow_run.id, ui_url if ui_url.startswith("http") else "")
    try:
        return await asyncio.to_thread(promote_release, request, settings)
    except ReleaseError as err:
        progress.report(progress.RUN, Status.FAILED, str(err))
        raise


def promote(runner: Any = None, **parameters: Any) -> ReleaseResult:
    """Run the promotion flow to completion from synchronous code; ``runner``: a task runner instead of the
    flow's own (flows/runners.py). Its parameters are those of :data:`tasks.run.options.PROMOTE_OPTIONS`."""
    flow_ = promote_flow if runner is None else promote_flow.with_options(task_runner=runner)
    result: ReleaseResult = asyncio.run(flow_(**parameters))
    return result


def promote_release(request: PromotionRequest, settings: Settings,
                    registries: Registries | None = None) -> ReleaseResult:
    """The preflight, then the promotion's steps as tasks of the current flow run (this one's, or the one that
    calls it: a staged release promotes its proven release this way). The destination's summary is the result."""
    registries = registries or Registries(settings)
    facts = promotion_preflight(request, settings, registries)  # reads only: nothing is copied before it passes
    if facts.unsigned_note:
        progress.report(progress.RUN, Status.WARNING, facts.unsigned_note)
    run = PromotionRun(request, settings, registries, facts)
    # One API client for every task run of the promotion (as the release does).
    with SyncClientContext.get_or_create():
        try:
            return _promotion_steps(run)
        finally:
            shutil.rmtree(run.workspace, ignore_errors=True)


def _promotion_steps(run: PromotionRun) -> ReleaseResult:
    log = get_run_logger()
    request, facts = run.request, run.facts
    policy = request.retry.task_options()
    # The charts are packaged for the destination first (pulled, values set, checked, and refused when their
    # version is there with other files), so a chart that cannot go stops the promotion before any copy.
    packager = package_chart_task.with_options(**policy)
    packages = [packager(name, run) for name, _ in facts.charts]
    moves = image_moves([name for name, _ in facts.images], tag=request.tag, from_registry=request.from_registry,
                        to_registry=request.to_registry)
    log.info("promoting %s from %s to %s: %d image(s), %d chart(s), %s", request.tag, request.from_registry,
             request.to_registry, len(moves), len(facts.charts), "signed" if run.signs else "unsigned")
    copier = copy_image_task.with_options(**policy)
    futures = {move.name: copier.submit(move, run) for move in moves}
    images: list[CopiedImage] = []
    failures: dict[str, str] = {}
    for name, future in futures.items():
        copied, error = outcome(future)
        if error is None:
            images.append(copied)
        else:
            failures[name] = str(error)
            progress.report(name, Status.FAILED, str(error))
    if failures:
        raise ImagesFailedError(failures)

    # Every image and its signatures are at the destination: now the charts, which make it installable.
    pusher = push_chart_task.with_options(**policy)
    charts = [pusher(package, run) for package in packages]
    signer = sign_chart_task.with_options(**policy)
    chart_signatures = [signer(chart, run) for chart in charts] if run.signs else []
    verify_task(run, images, charts)

    external = tuple(ExternalImageResult(chart=e.chart, image=e.image, pinned=e.pinned)
                     for package in packages for e in package.external)
    result = promotion_result(
        Promoted(images=tuple(images), charts=tuple(charts), chart_signatures=tuple(chart_signatures),
                 external=external),
        tag=request.tag, version=request.version.version, prerelease=request.version.prerelease,
        to_registry=request.to_registry, chart_to=request.chart_to, from_registry=request.from_registry,
        same_host=request.same_host, revision=facts.revision, config_path=request.config_path,
        public_key=facts.signer.fingerprint if facts.signer else "",
        notes=(facts.unsigned_note,) if facts.unsigned_note else (),
    )
    promotion_summary_task(result)
    progress.report(progress.RUN, Status.DONE, "")
    return result
