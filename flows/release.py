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
import tempfile
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import helm_python as helm
from prefect import Task, flow, get_run_logger
from prefect.context import SyncClientContext
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run

from flows.events import on_release_completed, on_release_failed
from flows.multiplatform import assemble_indexes
from flows.runners import task_runner
from tasks import progress
from tasks.charts import (
    PackagedChart,
    PublishedChart,
    chart_remote,
    package_chart_task,
    push_chart_task,
)
from tasks.concurrency import atag_slot
from tasks.config import DEFAULT_CONFIG, DEFAULT_REGISTRY, PROJECT_ROOT, ReleaseConfig, load_config
from tasks.errors import ConfigError, ImageMissingError, ImagesFailedError, ReleaseError
from tasks.images import (
    BuiltImage,
    ImageSpec,
    PushedImage,
    build_task,
    configured_engines,
    image_ref,
    image_specs,
    published_digest,
    push_task,
)
from tasks.preflight import check_engines_and_registries, preflight
from tasks.records import published_release, release_key, save_record
from tasks.redact import install_log_filter
from tasks.retry import RetryPolicy
from tasks.source import checkout_task, resolve_tag
from tasks.summary import (
    ReleaseResult,
    already_published,
    apublish_summary,
    release_notes,
    summary_dict,
    summary_task,
)
from tasks.tags import parse_tag


def chart_dirs(config: ReleaseConfig, origin: str, base: Path, tag: str) -> list[Path]:
    """Where each configured chart of ``origin`` ("source": ``base`` is the checkout, "project":
    this repository) lives; :class:`ConfigError` when one is missing."""
    dirs = []
    for chart in config.charts:
        if chart.origin != origin:
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
    return dirs


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


def _collect_images(
    builds: dict[str, PrefectFuture[BuiltImage]],
    pushes: dict[str, PrefectFuture[PushedImage]],
    dry_run: bool,
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
            if dry_run:
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
            progress.report(name, "failed", str(error))
    return images, failures


def _announce_run() -> None:
    """Tell listeners (the CLI) the run's id and its page in the Prefect UI."""
    ui_url = flow_run.ui_url or ""
    progress.report("run", "id", str(flow_run.id or ""))
    progress.report("run", "started", ui_url if ui_url.startswith("http") else "")


def _workspace(workdir: str | None, tag: str) -> Path:
    """The run's workspace: the one given, or a new temporary directory."""
    path = Path(workdir) if workdir else Path(tempfile.gettempdir()) / "fma-release" / f"{tag}-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _published_images(specs: list[ImageSpec]) -> list[PushedImage]:
    """The images whose tag in the registry is exactly this build (same fingerprint label)."""
    if not specs:
        return []
    kept = []
    with ThreadPoolExecutor(max_workers=min(16, len(specs))) as pool:  # reads only: ask all at once
        digests = list(pool.map(lambda spec: published_digest(spec.ref, spec.fingerprint), specs))
    for spec, digest in zip(specs, digests, strict=True):
        if digest:
            progress.report(spec.label, "already published", digest)
            kept.append(PushedImage(name=spec.name, ref=spec.ref, digest=digest, status="already published",
                                    platform=spec.platform, label=spec.label))
    return kept


def _rebuilder(specs: list[ImageSpec], pusher: Task[..., PushedImage]) -> Callable[[str], PushedImage]:
    """Build an image again, ignoring the cache, and push it (its cached build's image is gone)."""
    by_name = {spec.label: spec for spec in specs}  # one build per (image, platform)

    def rebuild(name: str) -> PushedImage:
        built = build_task.with_options(refresh_cache=True)(by_name[name])
        return pusher(built)

    return rebuild


def _dry_run_image(built: BuiltImage) -> PushedImage:
    # Nothing is pushed: the local image id stands where the registry digest would.
    return PushedImage(name=built.name, ref=built.ref, digest=built.image_id, status="dry run",
                       platform=built.platform, label=built.label)


def _dry_run_chart(package: PackagedChart, remote: str) -> PublishedChart:
    return PublishedChart(
        name=package.name, ref=f"{remote}/{package.name}", version=package.version,
        digest=helm.digest(package.archive), status="dry run",
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
async def release_flow(
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
) -> dict[str, Any]:
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
    """
    # An async flow costs Prefect ~0.3 s a run where a sync one costs ~1.2 s (its heartbeat is
    # joined in 1 s steps). The steps block on git, the Docker engine and task futures, so they run
    # in a thread of their own; the event loop stays free for the tag slot's lease renewals.
    install_log_filter()
    parse_tag(tag)
    release_config = load_config(config)
    remote = chart_remote(registry, chart_registry)
    _announce_run()
    try:
        revision, key, recorded = await asyncio.to_thread(
            _preflight, source, tag, registry, config, release_config, remote, dry_run, force
        )
        if recorded is not None:  # this exact release is published: nothing to do, no slot needed
            await apublish_summary(recorded)  # no task: the whole answer is this artifact
            progress.report("run", "done", "nothing changed")
            return recorded
        async with atag_slot(tag):  # one run per tag at a time; different tags run side by side
            return await asyncio.to_thread(
                _release, tag, source, registry, release_config, remote, dry_run, workdir, push_attempts,
                retry_base_delay, force, revision, key,
            )
    except ReleaseError as err:
        progress.report("run", "failed", str(err))
        raise


def release(runner: Any = None, **parameters: Any) -> dict[str, Any]:
    """Run the release flow to completion from synchronous code (the CLI, tests, benchmarks);
    ``runner``: a task runner instead of the flow's own (see flows/runners.py)."""
    flow_ = release_flow if runner is None else release_flow.with_options(task_runner=runner)
    result: dict[str, Any] = asyncio.run(flow_(**parameters))
    return result


def _preflight(
    source: str, tag: str, registry: str, config: str | None, release_config: ReleaseConfig, remote: str,
    dry_run: bool, force: bool,
) -> tuple[str, str, dict[str, Any] | None]:
    """Fail fast on a missing engine, registry or tag; then the tagged commit, the release's record
    key and, when this exact release is still published, its summary."""
    engines = tuple(configured_engines(release_config))
    if dry_run:
        return preflight(source, tag, registry, remote, push=False, engines=engines), "", None
    # The tagged commit first: with the config it names the release's record. A release that is
    # still published needs no engine and pushes nothing, so the other checks come after.
    revision = resolve_tag(source, tag)
    key = release_key(
        revision=revision, config=release_config, config_bytes=Path(config or DEFAULT_CONFIG).read_bytes(),
        registry=registry, chart_remote=remote,
    )
    recorded = None if force else published_release(key)
    if recorded is None:
        check_engines_and_registries(registry, remote, push=True, engines=engines)
        return revision, key, None
    return revision, key, already_published(recorded)


def _release(
    tag: str, source: str, registry: str, release_config: ReleaseConfig, remote: str, dry_run: bool,
    workdir: str | None, push_attempts: int, retry_base_delay: float, force: bool, revision: str, key: str,
) -> dict[str, Any]:
    """The release's steps after the preflight, every one a task, run from this (non-event-loop) thread."""
    # One API client for every task run of the release: without it each task run makes its own, and
    # each new client builds a TLS context from the CA bundle (about 0.1 s of CPU: the largest
    # per-image cost in a profile of a 32-image release).
    with SyncClientContext.get_or_create():
        return _release_steps(tag, source, registry, release_config, remote, dry_run, workdir, push_attempts,
                              retry_base_delay, force, revision, key)


def _release_steps(
    tag: str, source: str, registry: str, release_config: ReleaseConfig, remote: str, dry_run: bool,
    workdir: str | None, push_attempts: int, retry_base_delay: float, force: bool, revision: str, key: str,
) -> dict[str, Any]:
    log = get_run_logger()
    version = parse_tag(tag)
    policy = RetryPolicy(attempts=push_attempts, base_delay=retry_base_delay, max_delay=max(30.0, retry_base_delay))
    own_workspace = workdir is None
    workspace = _workspace(workdir, tag)
    try:
        # The references this release publishes are known from the config alone, so this project's
        # charts are packaged and checked while the source is checked out.
        released_refs = [image_ref(registry, image.name, tag) for image in release_config.images]
        staging = workspace / "charts"

        def package(dirs: list[Path]) -> list[PrefectFuture[PackagedChart]]:
            return [
                package_chart_task.submit(d, staging, registry, tag, version.version, released_refs,
                                          None if dry_run else remote, force)
                for d in dirs
            ]

        packages = package(chart_dirs(release_config, "project", PROJECT_ROOT, tag))
        checkout = checkout_task(source, tag, workspace, revision)
        specs: list[ImageSpec] = image_specs(release_config, checkout, registry)
        packages += package(chart_dirs(release_config, "source", checkout.path, tag))
        log.info("releasing %s (%s) of %s: %d image(s), %d chart(s)",
                 tag, checkout.revision, checkout.source, len(specs), len(packages))

        # Images the registry already holds exactly (a re-run) get no build or push step at all.
        kept = [] if dry_run else _published_images(specs)
        to_build = [spec for spec in specs if spec.label not in {image.label for image in kept}]
        builds = {spec.label: build_task.submit(spec) for spec in to_build}
        pusher = push_task.with_options(**policy.task_options())
        pushes = {} if dry_run else {
            # A future stands for its result; Prefect's overloads do not say so.
            name: pusher.submit(build, wait_for=packages)  # type: ignore[call-overload]
            for name, build in builds.items()
        }

        chart_packages, chart_failure = _collect_charts(packages)
        images, failures = _collect_images(builds, pushes, dry_run, _rebuilder(specs, pusher))
        # A multi-platform image's tag is an image index of its platform images (flows/multiplatform.py).
        images, failures = assemble_indexes(specs, kept + images, failures, dry_run, policy)
        if chart_failure is not None:
            raise chart_failure
        if failures:
            raise ImagesFailedError(failures)

        published = [
            _dry_run_chart(p, remote) if dry_run else push_chart_task(p, remote, workspace, force)
            for p in chart_packages
        ]
        result = ReleaseResult(
            tag=tag, version=version.version, prerelease=version.prerelease, registry=registry,
            source_revision=checkout.revision, images=tuple(images), charts=tuple(published),
            dry_run=dry_run,
            notes=release_notes(images, published)
            + (tuple(f"chart archive kept at {p.archive}" for p in chart_packages) if dry_run else ()),
        )
        summary = summary_dict(result)
        summary_task(summary)
        if key:
            save_record(key, summary)
        progress.report("run", "done", "")
        return summary
    finally:
        if own_workspace and not dry_run:
            shutil.rmtree(workspace, ignore_errors=True)
