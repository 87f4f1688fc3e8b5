"""The release flow: one tag of the source becomes images, charts and a summary.

The body only orchestrates; every box of the process is a task:

    preflight -> (release record: published? -> summary, done)
      -> checkout@tag -> package charts ----------------------------.
                     \\-> build A -> push A --\\                      |
                      \\-> build B -> push B ---+--> push charts --> summary
                       \\-> ...      -> ...   --/

Charts are packaged (and their rendered images checked) while images build,
so a broken chart stops the release before anything is pushed. A push waits
for its build and for every chart package; charts are pushed only when every
image push succeeded.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import helm_python as helm
from prefect import Task, flow, get_run_logger
from prefect.context import SyncClientContext
from prefect.futures import PrefectFuture, as_completed
from prefect.runtime import flow_run

from flows.events import on_release_completed, on_release_failed
from flows.multiplatform import assemble_indexes
from flows.runners import task_runner
from tasks.build import build_task
from tasks.charts import package_chart_task, push_chart_task
from tasks.control.concurrency import atag_slot
from tasks.control.outage import OUTCOME, api_reachable, server_gone, server_unreachable
from tasks.control.preflight import check_engines_and_registries
from tasks.control.records import published_release, release_key, save_record
from tasks.control.slots import SlotWaitCancelled
from tasks.core import progress, tools
from tasks.core.errors import ConfigError, ImageMissingError, ImagesFailedError, ReleaseError, SigningError
from tasks.core.project import PROJECT_ROOT, project_version
from tasks.core.redact import install_log_filter, strip_userinfo
from tasks.core.status import Status
from tasks.helm.chart import PackagedChart
from tasks.push import published_digest, push_task
from tasks.run.config import DEFAULT_REGISTRY, ReleaseConfig
from tasks.run.context import ReleaseRequest, RunContext
from tasks.run.facts import ReleaseFacts
from tasks.run.plan import ImageSpec, image_specs
from tasks.run.result import (
    BuiltImage,
    ExternalImageResult,
    ImageResult,
    PublishedChart,
    PushedImage,
    ReleaseResult,
    SignatureResult,
)
from tasks.signing import SignJob, build_facts, sign_task
from tasks.source import checkout_task, resolve_tag
from tasks.summary import already_published, apublish_summary, release_notes, summary_task, verify_command
from tasks.supplychain.provenance import config_digest
from tasks.supplychain.signer import load_signer, signing_decision


def chart_dirs(config: ReleaseConfig, origin: str, base: Path, tag: str) -> tuple[list[Path], list[str]]:
    """Where each configured chart of ``origin`` ("source": ``base`` is the checkout, "project":
    this repository) lives, and a note for each pattern (``charts/*``, as upstream packages
    ``charts/*/``) that matches no chart; :class:`ConfigError` when a named chart is missing."""
    dirs: list[Path] = []
    notes: list[str] = []
    where = f"the source at {tag}" if origin == "source" else "this project"
    for chart in config.charts:
        if chart.origin != origin:
            continue
        if any(c in chart.path for c in "*?["):
            found = sorted({p.parent.resolve() for p in base.glob(f"{chart.path}/Chart.yaml")})
            dirs += [d for d in found if d.is_relative_to(base.resolve()) and d not in dirs]
            if not found:
                notes.append(f"no chart matches {chart.path} in {where}: this release has images only")
            continue
        path = (base / chart.path).resolve()
        if not path.is_relative_to(base.resolve()):
            raise ConfigError(f"chart path {chart.path} leaves its tree; use a path inside it")
        if not (path / "Chart.yaml").is_file():
            where = f"the source at {tag}" if chart.origin == "source" else "this project"
            raise ConfigError(
                f"chart {chart.path} has no Chart.yaml in {where}: fix 'path' or 'from' in the release config"
            )
        dirs.append(path)
    return dirs, notes


def _outcome(future: PrefectFuture[Any]) -> tuple[Any, BaseException | None]:
    """``(result, None)`` or ``(None, error)`` of a finished future, never raising."""
    future.wait()
    state = future.state
    if state.is_completed():
        return future.result(), None
    if not state.is_final():  # never ran: something it waits for failed
        return None, RuntimeError(f"not run: {state.message or 'a step it waits for failed'}")
    error = future.result(raise_on_failure=False)  # the exception itself, not its message
    if isinstance(error, BaseException):
        return None, error
    return None, RuntimeError(state.message or f"task ended {state.name}")


def _collect_charts(
    packages: list[PrefectFuture[PackagedChart]],
) -> tuple[list[PackagedChart], BaseException | None]:
    """Packaged charts, and the first packaging error if any."""
    done: list[PackagedChart] = []
    failure: BaseException | None = None
    for future in packages:
        package, error = _outcome(future)
        if error is None:
            done.append(package)
        else:
            failure = failure or error
    return done, failure


def _push_as_built(
    builds: dict[str, PrefectFuture[BuiltImage]], pusher: Task[..., PushedImage], run: RunContext,
    packages: list[PrefectFuture[PackagedChart]],
) -> dict[str, PrefectFuture[PushedImage]]:
    """Each built image's push, submitted as its build finishes, with the build's result.

    Never the build's future as the push's argument: Prefect reads the state of a future argument
    that no one has waited on yet from the server (``read_task_run``), once per push, and with the
    server gone that call failed the push before it ran (a release that lost its server mid-build
    left an image unpushed). A build that failed gets no push; :func:`_collect_images` reports it.
    """
    name_of = {future: name for name, future in builds.items()}
    pushes: dict[str, PrefectFuture[PushedImage]] = {}
    for future in as_completed(list(builds.values())):
        built, error = _outcome(future)
        if error is None:
            pushes[name_of[future]] = pusher.submit(built, run, wait_for=packages)
    return pushes


def _collect_images(
    builds: dict[str, PrefectFuture[BuiltImage]],
    pushes: dict[str, PrefectFuture[PushedImage]],
    run: RunContext,
    rebuild: Callable[[str], PushedImage],
) -> tuple[list[PushedImage], dict[str, str]]:
    """Every image's outcome: the published ones, and each failure's reason by name.

    A cached build whose image is gone from the engine is built again and pushed (``rebuild``).
    """
    images: list[PushedImage] = []
    failures: dict[str, str] = {}
    for name, build in builds.items():
        built, error = _outcome(build)
        if error is None:
            if run.request.dry_run:
                images.append(_dry_run_image(built))
                continue
            pushed, error = _outcome(pushes[name])
            if isinstance(error, ImageMissingError):
                try:
                    pushed, error = rebuild(name), None
                except ReleaseError as again:
                    error = again
        if error is None:
            images.append(pushed)
        else:
            failures[name] = str(error)
            progress.report(name, Status.FAILED, str(error))
    return images, failures


def _announce_run() -> None:
    """Tell listeners (the CLI) the run's id and its page in the Prefect UI."""
    ui_url = flow_run.ui_url or ""
    progress.run_started(flow_run.id, ui_url if ui_url.startswith("http") else "")


def _published_images(specs: list[ImageSpec], run: RunContext) -> list[PushedImage]:
    """The images whose tag in the registry is exactly this build (same fingerprint label)."""
    if not specs:
        return []
    kept = []
    with ThreadPoolExecutor(max_workers=min(16, len(specs))) as pool:  # reads only: ask all at once
        digests = list(pool.map(lambda spec: published_digest(run.registries, spec.ref, spec.fingerprint), specs))
    for spec, digest in zip(specs, digests, strict=True):
        if digest:
            progress.report(spec.label, Status.ALREADY_PUBLISHED, digest)
            kept.append(PushedImage(name=spec.name, ref=spec.ref, digest=digest, status=Status.ALREADY_PUBLISHED,
                                    platform=spec.platform, label=spec.label))
    return kept


def _rebuilder(specs: list[ImageSpec], pusher: Task[..., PushedImage], run: RunContext) -> Callable[[str], PushedImage]:
    """Build an image again, ignoring the cache, and push it (its cached build's image is gone)."""
    by_name = {spec.label: spec for spec in specs}  # one build per (image, platform)

    def rebuild(name: str) -> PushedImage:
        built = build_task.with_options(refresh_cache=True)(by_name[name], run)
        return pusher(built, run)

    return rebuild


def _dry_run_image(built: BuiltImage) -> PushedImage:
    # Nothing is pushed: the local image id stands where the registry digest would.
    return PushedImage(name=built.name, ref=built.ref, digest=built.digest or built.image_id, status=Status.DRY_RUN,
                       platform=built.platform, label=built.label)


def _dry_run_chart(package: PackagedChart, remote: str) -> PublishedChart:
    return PublishedChart(
        name=package.name, ref=f"{remote}/{package.name}", version=package.version,
        digest=helm.digest(package.archive), status=Status.DRY_RUN,
    )


@flow(
    name="publish-release",
    flow_run_name="release {tag}",
    task_runner=task_runner(),  # threads, or Dask when FMA_DASK_ADDRESS is set (flows/runners.py)
    validate_parameters=True,
    on_completion=[on_release_completed],  # fma.release.succeeded / .failed for automations
    on_failure=[on_release_failed],
    on_crashed=[on_release_failed],
)
async def release_flow(  # noqa: PLR0913, PLR0917 - the parameters are the fields of the UI's run form
    tag: str,
    source: str,
    registry: str = DEFAULT_REGISTRY,
    config: str | None = None,
    chart_registry: str | None = None,
    dry_run: bool = False,
    workdir: str | None = None,
    push_attempts: int = 5,
    retry_base_delay: float = 2.0,
    force: bool = False,
    sign: bool = True,
) -> ReleaseResult:
    """Release ``tag`` of ``source``: images, then charts, then the summary.

    Args:
        tag: the release tag, e.g. v0.3.1 or v0.3.0-rc.1.
        source: git URL or local path of the FMA source repository.
        registry: image registry, e.g. ghcr.io/llm-d-incubation/llm-d-fast-model-actuation.
        config: release config file (default: this project's release.yaml).
        chart_registry: OCI URL for charts (default: oci://<registry>/charts).
        dry_run: build and package, push nothing.
        workdir: workspace directory (default: a new temporary one, removed after success).
        push_attempts: attempts per push, first included; only transient faults are retried.
        retry_base_delay: first wait between push attempts, in seconds; doubles each time.
        force: replace a chart version that exists in the registry with other content.
        sign: sign images and charts and attach provenance and SBOMs when a key is configured (FMA_SIGNING_KEY).
    """
    # An async flow costs Prefect ~0.3 s a run where a sync one costs ~1.2 s (its heartbeat is
    # joined in 1 s steps). The steps block on git, the Docker engine and task futures, so they run
    # in a thread of their own; the event loop stays free for the tag slot's lease renewals.
    install_log_filter()
    run = RunContext(ReleaseRequest.from_parameters({
        "tag": tag, "source": source, "registry": registry, "config": config, "chart_registry": chart_registry,
        "dry_run": dry_run, "workdir": workdir, "push_attempts": push_attempts,
        "retry_base_delay": retry_base_delay, "force": force, "sign": sign,
    }))
    _announce_run()
    try:
        recorded = await asyncio.to_thread(_preflight, run)
        if recorded is not None:  # this exact release is published: nothing to do, no slot needed
            OUTCOME.finished(recorded)
            await apublish_summary(recorded)  # no task: the whole answer is this artifact
            progress.report(progress.RUN, Status.DONE, "nothing changed")
            return recorded
        async with atag_slot(tag):  # one run per tag at a time; different tags run side by side
            try:
                return await asyncio.to_thread(_release, run)
            except ReleaseError:
                _note_if_server_gone()  # before the slot's release, the first call after the failure
                raise
    except SlotWaitCancelled as err:  # the run is Cancelled already: end it, with nothing done
        from prefect.exceptions import Abort

        progress.report(progress.RUN, Status.FAILED, str(err))
        raise Abort(str(err)) from err
    except ReleaseError as err:
        progress.report(progress.RUN, Status.FAILED, str(err))
        raise


def release(runner: Any = None, **parameters: Any) -> ReleaseResult:
    """Run the release flow to completion from synchronous code (the CLI, tests, benchmarks);
    ``runner``: a task runner instead of the flow's own (see flows/runners.py)."""
    flow_ = release_flow if runner is None else release_flow.with_options(task_runner=runner)
    result: ReleaseResult = asyncio.run(flow_(**parameters))
    return result


def _preflight(run: RunContext) -> ReleaseResult | None:
    """Fail fast on a missing engine, registry or tag; note the tagged commit and the release's
    record key in ``run``; return the recorded result when this exact release is still published."""
    request = run.request
    _open_signer(run)
    run.settings.all_credentials()  # credentials bound to no host fail here, before anything is built
    if any(image.builder == "ko" for image in request.config.images):
        run.build_user()  # so does a missing build user
    if request.dry_run:
        check_engines_and_registries(run)
        run.revision = resolve_tag(request.source, request.tag)
        return None
    # The tagged commit first: with the config it names the release's record. A release that is
    # still published needs no engine and pushes nothing, so the other checks come after.
    run.revision = resolve_tag(request.source, request.tag)
    run.record_key = release_key(
        revision=run.revision, config=request.config, config_bytes=request.config_path.read_bytes(),
        registry=request.registry, chart_remote=request.chart_remote,
        signing=run.signer.fingerprint if run.signer else "",
    )
    recorded = None if request.force else published_release(run.settings.state_dir, run.record_key, run.registries)
    if recorded is None:
        check_engines_and_registries(run)
        return None
    return already_published(recorded)


def _open_signer(run: RunContext) -> None:
    """Decide whether the run signs; open the key now, so a bad key or password fails before any build."""
    request = run.request
    signs, note = signing_decision(configured=run.settings.signing_configured, no_sign=request.no_sign,
                                   config_sign=request.config.sign)
    run.unsigned_note = note
    if signs:
        run.signer = load_signer(run.settings)
    else:
        progress.report(progress.RUN, Status.WARNING, note)


def _release_facts(run: RunContext) -> ReleaseFacts:
    request = run.request
    ui_url = flow_run.ui_url or ""
    run_id = str(flow_run.id or "")
    api = (run.settings.prefect_api_url or "").rstrip("/")
    return ReleaseFacts(
        tag=request.tag, source=strip_userinfo(request.source), registry=request.registry,
        config_path=str(request.config_path), config_digest=config_digest(request.config_path.read_bytes()),
        revision=run.revision, run_id=run_id,
        run_url=ui_url if ui_url.startswith("http") else f"{api}/flow_runs/{run_id}",
        versions=(("fma-release", project_version()),
                  *((name, t.version) for name, t in sorted(tools.pinned_tools().items()))),
    )


def _sign(jobs: list[SignJob], run: RunContext) -> list[SignatureResult]:
    """Sign every job at once; a :class:`SigningError` naming each artifact that could not be signed."""
    signer = sign_task.with_options(**run.request.retry.task_options())
    futures = {job.label: signer.submit(job, run) for job in jobs}
    done: list[SignatureResult] = []
    failures: dict[str, str] = {}
    for label, future in futures.items():
        results, error = _outcome(future)
        if error is None:
            done += results
        else:
            failures[label] = str(error)
            progress.report(label, Status.FAILED, str(error))
    if failures:
        listed = "; ".join(f"{name}: {reason}" for name, reason in sorted(failures.items()))
        raise SigningError(f"{len(failures)} artifact(s) could not be signed: {listed}")
    return done


def _image_jobs(images: list[PushedImage], built: list[BuiltImage], specs: list[ImageSpec]) -> list[SignJob]:
    builders = {spec.name: spec.builder for spec in specs}
    jobs = []
    for image in images:
        own = [b for b in built if b.name == image.name]
        jobs.append(SignJob(
            name=image.name, ref=image.ref, digest=image.digest, builder=builders.get(image.name, ""),
            builds=tuple(build_facts(b, builders.get(image.name, "")) for b in own),
            sboms=tuple(path for b in own for path in b.sboms),
        ))
    return jobs


def _chart_jobs(charts: list[PublishedChart]) -> list[SignJob]:
    jobs = []
    for chart in charts:
        target = chart.ref.removeprefix("oci://")
        jobs.append(SignJob(name=chart.name, ref=f"{target}:{chart.version}", digest=chart.digest, kind="chart"))
    return jobs


def _built(builds: dict[str, PrefectFuture[BuiltImage]]) -> list[BuiltImage]:
    """The builds of this run that finished."""
    return [future.result() for future in builds.values() if future.state.is_completed()]


def _charts_and_signatures(
    run: RunContext, images: list[PushedImage], chart_packages: list[PackagedChart], *,
    built: list[BuiltImage], specs: list[ImageSpec],
) -> tuple[list[PublishedChart], list[SignatureResult]]:
    """Sign the images (when the run signs), push the charts, sign the charts.

    Every image is signed and attested before a chart is pushed: the chart is what makes the
    release installable, so a release whose signing failed is never installable unsigned.
    """
    request = run.request
    signatures: list[SignatureResult] = []
    signing = run.signer is not None and not request.dry_run
    if signing:
        run.release_facts = _release_facts(run)
        signatures += _sign(_image_jobs(images, built, specs), run)
    chart_pusher = push_chart_task.with_options(**request.retry.task_options())
    published = [
        _dry_run_chart(p, request.chart_remote) if request.dry_run else chart_pusher(p, run)
        for p in chart_packages
    ]
    if signing:
        signatures += _sign(_chart_jobs(published), run)
    return published, signatures


def _note_if_server_gone() -> bool:
    """One look at the Prefect server at the end of the data plane; when it is gone, the run's remaining
    calls fail at once instead of after the client's retries (about 14 s each, tasks/control/outage.py)."""
    from prefect.settings import PREFECT_API_URL

    if api_reachable(PREFECT_API_URL.value()):
        return False
    server_gone()
    return True


def _publish_summary(result: ReleaseResult, log: Any) -> None:
    """The summary artifact; with the Prefect server gone it is skipped with one warning (the CLI still
    prints the summary and writes --summary-json from the result)."""
    try:
        if not _note_if_server_gone():  # the summary is the first API call after the data plane
            summary_task(result)
            return
    except Exception as err:
        if not server_unreachable(err):
            raise
        server_gone()
    log.warning("the summary artifact was not written: the Prefect server cannot be reached")


def _release(run: RunContext) -> ReleaseResult:
    """The release's steps after the preflight, every one a task, run from this (non-event-loop) thread."""
    # One API client for every task run of the release: without it each task run makes its own, and
    # each new client builds a TLS context from the CA bundle (about 0.1 s of CPU: the largest
    # per-image cost in a profile of a 32-image release).
    with SyncClientContext.get_or_create():
        return _release_steps(run)


def _release_steps(run: RunContext) -> ReleaseResult:
    log = get_run_logger()
    request = run.request
    policy = request.retry.task_options()
    workspace = run.open_workspace()
    submitted: list[PrefectFuture[Any]] = []  # what runs in the workspace: waited for before it is removed
    try:
        # The references this release publishes are known from the config alone, so this project's
        # charts are packaged and checked while the source is checked out.
        def package(dirs: list[Path]) -> list[PrefectFuture[PackagedChart]]:
            return [package_chart_task.submit(d, run) for d in dirs]

        project_charts, chart_notes = chart_dirs(request.config, "project", PROJECT_ROOT, request.tag)
        packages = package(project_charts)
        checkout = checkout_task(request.source, request.tag, workspace, run.revision)
        specs = image_specs(request.config, checkout, request.registry)
        source_charts, more = chart_dirs(request.config, "source", checkout.path, request.tag)
        packages += package(source_charts)
        for note in (chart_notes := chart_notes + more):
            log.warning("%s", note)
            progress.report(progress.RUN, Status.WARNING, note)
        log.info("releasing %s (%s) of %s: %d image(s), %d chart(s)",
                 request.tag, checkout.revision, checkout.source, len(specs), len(packages))

        # Images the registry already holds exactly (a re-run) get no build or push step at all.
        kept = [] if request.dry_run else _published_images(specs, run)
        to_build = [spec for spec in specs if spec.label not in {image.label for image in kept}]
        builder = build_task.with_options(**policy)  # retried only when its engine was lost (tasks/build.py)
        builds = {spec.label: builder.submit(spec, run) for spec in to_build}
        submitted += builds.values()
        pusher = push_task.with_options(**policy)
        pushes = {} if request.dry_run else _push_as_built(builds, pusher, run, packages)
        submitted += pushes.values()

        chart_packages, chart_failure = _collect_charts(packages)
        images, failures = _collect_images(builds, pushes, run, _rebuilder(specs, pusher, run))
        # A multi-platform image's tag is an image index of its platform images (flows/multiplatform.py).
        images, failures = assemble_indexes(specs, kept + images, failures, run)
        if chart_failure is not None:
            raise chart_failure
        if failures:
            raise ImagesFailedError(failures)
        signing = run.signer is not None and not request.dry_run
        published, signatures = _charts_and_signatures(run, images, chart_packages,
                                                       built=_built(builds), specs=specs)
        notes = release_notes(images, published) + tuple(chart_notes)
        if run.unsigned_note and not request.dry_run:
            notes += (run.unsigned_note,)
        if request.dry_run:
            notes += tuple(f"chart archive kept at {p.archive}" for p in chart_packages)
        version = request.version
        result = ReleaseResult(
            tag=request.tag, version=version.version, prerelease=version.prerelease, registry=request.registry,
            source_revision=checkout.revision, images=tuple(ImageResult.of(i) for i in images),
            charts=tuple(published), dry_run=request.dry_run, notes=notes,
            external_images=tuple(ExternalImageResult(chart=e.chart, image=e.image, pinned=e.pinned)
                                  for p in chart_packages for e in p.external),
            signed=signing, public_key=run.signer.fingerprint if run.signer else "",
            signatures=tuple(signatures),
            verify_command=verify_command(request, [c.name for c in published]) if signing else "",
        )
        # Everything is published: from here the result must reach the caller even when the
        # Prefect server is gone (the summary artifact is an API call; tasks/control/outage.py).
        OUTCOME.finished(result)
        if run.record_key:
            save_record(run.settings.state_dir, run.record_key, result)
        _publish_summary(result, log)
        progress.report(progress.RUN, Status.DONE, "")
        return result
    finally:
        # A run that fails early (the Prefect server gone, say) must not pull the source from under
        # builds still running; wait() never raises.
        for future in submitted:
            future.wait()
        if run.own_workspace and not request.dry_run:
            shutil.rmtree(workspace, ignore_errors=True)
