"""The chart steps: package each chart (values set, checked, packaged: tasks/helm/) while images
build, and push it once every image is published (and signed)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from tasks.core import progress
from tasks.core.status import Status
from tasks.helm.chart import PackagedChart, existing_chart, prepare_chart, publish_chart
from tasks.run.plan import image_ref
from tasks.run.result import PublishedChart
from tasks.run.retry import RetryPolicy

if TYPE_CHECKING:
    from tasks.run.context import RunContext


def push_chart(package: PackagedChart, run: RunContext) -> PublishedChart:
    """Push a packaged chart; an existing version is kept when identical and refused when not (unless --force)."""
    return publish_chart(package, run.request.chart_remote, run.registries, settings=run.settings,
                         workdir=run.open_workspace(), force=run.request.force)


# -- tasks ----------------------------------------------------------------------


@task(name="package chart", task_run_name="package {chart_dir.name}", cache_policy=NONE)
def package_chart_task(chart_dir: Path, run: RunContext) -> PackagedChart:
    """Set image values in a staging copy, lint, check rendered images, package; then, unless a dry
    run, refuse a version that is already published with other content (before any push)."""
    request = run.request
    item = f"chart {chart_dir.name}"
    progress.report(item, Status.PACKAGING)
    images = {image.name: image_ref(request.registry, image.name, request.tag) for image in request.config.images}
    with progress.reporting(item):
        packaged = prepare_chart(
            chart_dir, run.open_workspace() / "charts", registry=request.registry, tag=request.tag,
            version=request.version.version, images=images, policy=request.config.external_images,
        )
        if not request.dry_run:
            existing_chart(packaged, request.chart_remote, run.registries, force=request.force)
    log = get_run_logger()
    for warning in packaged.warnings:
        log.warning("%s", warning)
        progress.report(item, Status.WARNING, warning)
    log.info("packaged %s %s as %s", packaged.name, packaged.version, packaged.archive.name)
    progress.report(item, Status.PACKAGED, packaged.archive.name)
    return packaged


@task(name="push chart", task_run_name="push chart {package.name}", cache_policy=NONE,
      **RetryPolicy().task_options())  # the flow sets the run's own (with_options)
def push_chart_task(package: PackagedChart, run: RunContext) -> PublishedChart:
    """Push the chart to the OCI chart registry; an existing version is never silently replaced."""
    progress.report(package.item, Status.PUSHING)
    with progress.reporting(package.item):
        published = push_chart(package, run)
    get_run_logger().info("%s: %s:%s (%s)", published.status, published.ref, published.version, published.digest)
    progress.report(package.item, published.status, published.digest)
    return published
