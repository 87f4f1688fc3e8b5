"""The proof step of a staged release (tasks/proof/): what the stage registry holds, proven before anything
is promoted.

- Each staged chart (pulled from the stage, as it would be installed) is linted and rendered with its
  defaults and with each values switch flipped.
- Every container those renders run from one of the release's images is started from its staged image on
  every platform the image has (arm64 under qemu), with the chart's command, args and plain env; an image
  no chart runs is started with its entrypoint, or with the release config's ``smoke: {command: [...]}``.
- When the release config asks (``proof: {kubernetes: true, ...}``), each chart is installed on a
  Kubernetes API server built from source and its controllers run against it (tasks/proof/kubernetes.py).

The checks are a table in the summary and a Prefect artifact. A proof passes when every check that ran
passed; a check that could not run here (no Kubernetes built) is listed as skipped.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE

from tasks.core import progress
from tasks.core.errors import ChartError
from tasks.core.status import Status
from tasks.helm.chart import published_chart_contents
from tasks.oci.references import Reference
from tasks.promote.chart import unpack_chart
from tasks.proof.checks import Proof, ProofCheck, not_run
from tasks.proof.containers import ContainerToStart, unrun_images
from tasks.proof.smoke import chart_checks, image_starts
from tasks.run.config import DEFAULT_ENGINE
from tasks.summary import artifact_key

if TYPE_CHECKING:
    from tasks.run.context import RunContext
    from tasks.run.result import ImageResult, PublishedChart, ReleaseResult

ITEM = progress.PROOF


def _pull_chart(chart: PublishedChart, run: RunContext, into: Path) -> Path:
    target = Reference.parse(chart.ref)
    with run.registries.api(target.host) as api:
        found = published_chart_contents(api, target.repository, chart.version)
    if found is None:
        raise ChartError(f"chart {chart.name} {chart.version} is not at the stage ({chart.ref}): run the release again")
    return unpack_chart(found[1], into)


def _platform_refs(images: tuple[ImageResult, ...]) -> dict[str, dict[str, str]]:
    """Each staged image reference, as the charts render it, with the reference by digest of each platform."""
    found: dict[str, dict[str, str]] = {}
    for image in images:
        repository = Reference.parse(image.ref).name
        found[image.ref] = {(p.platform or "linux/amd64"): f"{repository}@{p.digest}" for p in image.platforms}
    return found


def _kubernetes(staged: ReleaseResult, charts: list[Path], run: RunContext, *, source: Path | None,
                parent: Path) -> list[ProofCheck]:
    import docker

    from tasks.proof.kubernetes import KubeProof, prove_on_kubernetes

    proof = run.request.config.proof
    if proof.crds and source is None:
        return [ProofCheck("kubernetes", False, "the CRDs of proof.crds need the source at the tag, which this "
                           "run has not checked out: run the release again")]
    crds = tuple(source / path for path in proof.crds) if source else ()
    missing = [str(path) for path, crd in zip(proof.crds, crds, strict=True) if not crd.is_file()]
    if missing:
        return [ProofCheck("kubernetes", False, f"proof.crds names {', '.join(missing)}, which the source at "
                           f"{staged.tag} does not have: fix proof.crds in the release config")]
    client = docker.DockerClient(base_url=run.engines.address(DEFAULT_ENGINE))
    try:
        return prove_on_kubernetes(
            KubeProof(charts=tuple(charts), images=_platform_refs(staged.images), values=proof.values, crds=crds,
                      objects=proof.objects, settle_seconds=proof.settle_seconds),
            client, parent=parent, say=lambda line: progress.report(ITEM, Status.PROVING, line))
    finally:
        client.close()


def prove(staged: ReleaseResult, run: RunContext, source: Path | None) -> Proof:
    """Every check of the proof of ``staged`` (the release at the stage); ``source``: the checkout at the tag
    (the CRDs the Kubernetes proof applies), or None."""
    config = run.request.config
    checks: list[ProofCheck] = []
    with tempfile.TemporaryDirectory(prefix="fma-proof-") as tmp:
        charts = [_pull_chart(chart, run, Path(tmp) / "charts" / chart.name) for chart in staged.charts]
        refs = {image.ref: image.name for image in staged.images}
        starts: list[ContainerToStart] = []
        for chart, directory in zip(staged.charts, charts, strict=True):
            chart_found, chart_starts = chart_checks(chart.name, directory, refs)
            checks += chart_found
            starts += chart_starts
        smoke = {image.name: image.smoke.command for image in config.images if image.smoke and image.smoke.command}
        starts += unrun_images([image.name for image in staged.images], starts, smoke)
        by_image: dict[str, list[ContainerToStart]] = defaultdict(list)
        for start in starts:
            by_image[start.image].append(start)
        with run.engines.client() as client:
            for image in staged.images:
                progress.report(ITEM, Status.PROVING, f"starting {image.name} on {len(image.platforms)} platform(s)")
                checks += image_starts(client, image, by_image[image.name], registries=run.registries,
                                       bound=config.proof.start_seconds)
        if config.proof.kubernetes:
            failed = [c for c in checks if not c.passed and not c.skipped]
            if failed:  # the controllers would run from images that cannot start, or charts that do not render
                checks.append(not_run(f"{len(failed)} check(s) above failed; fix them first"))
            else:
                checks += _kubernetes(staged, charts, run, source=source, parent=Path(tmp))
    return Proof.of(checks)


@task(name="prove", task_run_name="prove {staged.tag}", cache_policy=NONE)
def prove_task(staged: ReleaseResult, run: RunContext, source: Path | None) -> Proof:
    """The proof of the staged release, as a task: its table is a Prefect artifact."""
    log = get_run_logger()
    progress.report(ITEM, Status.PROVING, f"the staged release at {staged.registry}")
    proof = prove(staged, run, source)
    create_markdown_artifact(markdown=f"# Proof of {staged.tag} at {staged.registry}\n\n{proof.table()}\n",
                             key=artifact_key(staged.version).replace("release-", "proof-", 1),
                             description=f"The proof of {staged.tag} before promotion")
    ran, failed = len(proof.ran), len(proof.failures)
    if proof.passed:
        log.info("proof of %s: %d check(s) passed", staged.tag, ran)
        progress.report(ITEM, Status.PROVEN, f"{ran} check(s) passed")
    else:
        log.error("proof of %s failed: %s", staged.tag, proof.failure_line())
        progress.report(ITEM, Status.FAILED, f"{failed} of {ran} check(s) failed")
    return proof
