"""The promotion's steps: copy an image (with its signatures and attestations), package a chart for the
destination and push it, sign it, verify the destination, publish the summary.

Each is a thin task around tasks/oci/copy.py and tasks/promote/: the decisions live there. A copy or
a chart push that meets a transient fault is retried by the run's policy (tasks/run/retry.py), and
each attempt sends only what the destination still lacks.
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE
from prefect.runtime import task_run as current_task_run

from tasks.core import progress
from tasks.core.errors import SigningError, VerificationError
from tasks.core.redact import install_log_filter
from tasks.core.status import Status
from tasks.helm.chart import PackagedChart, existing_chart, publish_chart
from tasks.oci.copy import ImageCopier, children
from tasks.oci.layout import platform_name
from tasks.oci.references import Reference
from tasks.promote.chart import chart_repository, pull_chart, repackage_chart
from tasks.promote.context import PromotionRun
from tasks.promote.plan import CopiedImage, ImageMove, artifact_key
from tasks.run.result import PublishedChart, ReleaseResult, SignatureResult
from tasks.run.retry import RetryPolicy
from tasks.summary import render_summary
from tasks.supplychain.cosign import Cosign
from tasks.supplychain.signer import ensure_signed
from tasks.supplychain.verify import Check, VerifyRequest, failure_line, verify_release

VERIFY = "verify"  # the progress item of the destination's verification


def copy_image(move: ImageMove, run: PromotionRun) -> CopiedImage:
    """Copy one image's tag, by digest, with what is attached to each of its manifests."""
    source_api, source = run.registries.for_ref(move.source)
    target_api, target = run.registries.for_ref(move.target)
    with source_api, target_api:
        copier = ImageCopier(source_api, source.repository, target_api, target.repository,
                             spool=run.open_workspace())
        copied = copier.copy_tag(source.tag)
        # A single-platform image's platform is its config's (the summary lists it, as a release's does).
        alone = None if children(copied.manifest) else target_api.manifest_and_config(target.repository,
                                                                                       copied.digest)
    platform = platform_name(alone.config) if alone is not None else ""
    return CopiedImage(name=move.name, target=move.target, copied=copied, platform=platform)


@task(name="copy image", task_run_name="copy {move.name}", cache_policy=NONE,
      **RetryPolicy().task_options())  # the flow sets the run's own (with_options)
def copy_image_task(move: ImageMove, run: PromotionRun) -> CopiedImage:
    """Copy one image of the release to the destination; transient faults are retried, and a retry sends
    only what is still missing."""
    install_log_filter()
    attempt = current_task_run.run_count
    with progress.reporting(move.name, transient_state=Status.PUSH_FAILED):
        progress.report(move.name, Status.RETRYING if attempt > 1 else Status.COPYING,
                        f"attempt {attempt}" if attempt > 1 else "")
        copied = copy_image(move, run)
    counts = copied.copied.counts
    get_run_logger().info("%s -> %s@%s: %s", move.source, move.target, copied.copied.digest, counts.describe())
    progress.report(move.name, Status.COPIED if counts.wrote else Status.ALREADY_PUBLISHED, copied.copied.digest)
    return copied


@task(name="package chart", task_run_name="package chart {name}", cache_policy=NONE,
      **RetryPolicy().task_options())  # reads only: a transient fault of the source is retried
def package_chart_task(name: str, run: PromotionRun) -> PackagedChart:
    """Pull chart ``name`` from the source and package it for the destination (values, lint, render, images
    checked); a version already at the destination with other files is refused here, before any copy."""
    request = run.request
    item = f"chart {name}"
    log = get_run_logger()
    with progress.reporting(item):
        progress.report(item, Status.PACKAGING)
        workspace = run.open_workspace()
        host, repository = chart_repository(request, name)
        with run.registries.api(host) as api:
            chart_dir = pull_chart(api, repository, request.version.version, workspace / "pulled" / name)
        package = repackage_chart(chart_dir, workspace / "charts", request)
        existing_chart(package, request.chart_to, run.registries)
    for warning in package.warnings:
        log.warning("%s", warning)
        progress.report(item, Status.WARNING, warning)
    progress.report(item, Status.PACKAGED, package.archive.name)
    return package


@task(name="push chart", task_run_name="push chart {package.name}", cache_policy=NONE,
      **RetryPolicy().task_options())  # the flow sets the run's own (with_options)
def push_chart_task(package: PackagedChart, run: PromotionRun) -> PublishedChart:
    """Push the chart packaged for the destination; the same files there already: kept."""
    with progress.reporting(package.item, transient_state=Status.PUSH_FAILED):
        progress.report(package.item, Status.PUSHING)
        published = publish_chart(package, run.request.chart_to, run.registries, settings=run.settings,
                                  workdir=run.open_workspace())
    get_run_logger().info("%s: %s:%s (%s)", published.status, published.ref, published.version, published.digest)
    progress.report(package.item, published.status, published.digest)
    return published


@task(name="sign chart", task_run_name="sign chart {chart.name}", cache_policy=NONE,
      **RetryPolicy().task_options())
def sign_chart_task(chart: PublishedChart, run: PromotionRun) -> SignatureResult:
    """Sign the chart at the destination with the release's key, unless it is signed with it already."""
    signer = run.facts.signer
    item = f"chart {chart.name}"
    if signer is None:
        raise SigningError(f"cannot sign {item}: the promotion has no signing key")
    target = Reference.parse(f"{chart.ref}:{chart.version}")
    with progress.reporting(item), Cosign(run.settings, target.host, schemes=run.registries.schemes,
                                          key=signer.key, public_pem=signer.public_pem) as tool, \
            run.registries.api(target.host) as api:
        progress.report(item, Status.SIGNING)
        status = ensure_signed(tool, api, target.repository, chart.digest)
    progress.report(item, status, chart.digest)
    return SignatureResult(artifact=item, ref=f"{target.path}@{chart.digest}", digest=chart.digest, signature=status)


@task(name="verify destination", task_run_name="verify {run.request.tag} at {run.request.to_registry}",
      cache_policy=NONE)
def verify_task(run: PromotionRun, images: list[CopiedImage], charts: list[PublishedChart]) -> list[Check]:
    """Check the destination as ``fma-release verify`` would (every signature and attestation, with the
    release's key), and that every tag there is the source's digest; one line naming each failure."""
    progress.report(VERIFY, Status.VERIFYING, run.request.to_registry)
    with progress.reporting(VERIFY):
        checks = _verify(run, images, charts)
    progress.report(VERIFY, Status.VERIFIED, f"{len(checks)} signed artifact(s)" if checks else "digests")
    return checks


def _verify(run: PromotionRun, images: list[CopiedImage], charts: list[PublishedChart]) -> list[Check]:
    request = run.request
    wrong = []
    for image in images:
        api, target = run.registries.for_ref(image.target)
        with api:
            found = api.digest(target.repository, target.tag)
        if found != image.copied.digest:
            wrong.append(f"{image.target} is {found or 'missing'}, not {image.copied.digest}")
    for chart in charts:
        api, target = run.registries.for_ref(f"{chart.ref}:{chart.version}")
        with api:
            if api.digest(target.repository, chart.version) != chart.digest:
                wrong.append(f"chart {chart.name} {chart.version} is not at {chart.ref} as pushed")
    if wrong:
        raise VerificationError(f"the destination does not hold the release as copied: {'; '.join(wrong)}; "
                                "re-run the promotion")
    checks: list[Check] = []
    signer = run.facts.signer
    if signer is not None:
        key = run.open_workspace() / "cosign.pub"
        key.write_text(signer.public_pem)
        checks = verify_release(VerifyRequest(
            tag=request.tag, public_key=key, registry=request.to_registry, config=request.config,
            chart_registry=request.chart_to, charts=tuple(c.name for c in charts)), run.settings)
        failed = failure_line(checks)
        if failed:
            raise VerificationError(f"at {request.to_registry}: {failed}")
    get_run_logger().info("verified %s at %s: %d image(s), %d chart(s), %d signed artifact(s)", request.tag,
                          request.to_registry, len(images), len(charts), len(checks))
    return checks


@task(name="promotion summary", task_run_name="summary {result.tag} at {result.registry}", cache_policy=NONE)
def promotion_summary_task(result: ReleaseResult) -> str:
    """The destination's summary as the run's markdown artifact; its text."""
    text = render_summary(result)
    create_markdown_artifact(key=artifact_key(result.version, result.registry), markdown=text,
                             description=f"fma-release promote {result.tag} to {result.registry}",
                             _sync=True)  # type: ignore[call-arg]  # the flow body's thread looks async to Prefect
    return text
