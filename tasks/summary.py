"""The release summary: rendered from the release result (pure), then written (the artifact)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import task
from prefect.artifacts import acreate_markdown_artifact, create_markdown_artifact
from prefect.cache_policies import NONE

from tasks.control.outage import note_if_server_gone, server_gone, server_unreachable
from tasks.control.preflight import NOTHING_CHANGED
from tasks.core.errors import ConfigError
from tasks.core.status import Status
from tasks.helm.chart import install_command
from tasks.run.result import (
    ExternalImageResult,
    ImageResult,
    PublishedChart,
    PushedImage,
    ReleaseResult,
    SignatureResult,
)
from tasks.supplychain.verify import verify_command_line

if TYPE_CHECKING:
    from tasks.helm.chart import PackagedChart
    from tasks.run.context import ReleaseRequest, RunContext


def artifact_key(version: str) -> str:
    """A Prefect artifact key for a release: lowercase letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", f"release-{version}".lower()).strip("-")


def release_notes(
    images: Sequence[PushedImage], charts: Sequence[PublishedChart], signatures: Sequence[SignatureResult] = (),
) -> tuple[str, ...]:
    """What a re-run found already done, and what it did to it (signed, attested), in words."""
    statuses = [i.status for i in images] + [c.status for c in charts]
    signed = [s for s in signatures if Status.SIGNED in (s.signature, s.provenance, s.sbom)]
    if statuses and all(s == Status.ALREADY_PUBLISHED for s in statuses) and not signed:
        return (NOTHING_CHANGED,)
    notes = []
    if signed and all(s == Status.ALREADY_PUBLISHED for s in statuses):
        notes.append(f"every image and chart was already published; signed or attested {len(signed)} of its "
                     "manifest(s) that lacked it")
    # An image kept whole is named once (a ko index lists its platforms, all kept with it); else each
    # platform that was kept.
    kept = [name for i in images for name in (
        [i.item] if i.status == Status.ALREADY_PUBLISHED
        else [p.item for p in i.platforms if p.status == Status.ALREADY_PUBLISHED])]
    if kept:
        notes.append(f"already in the registry, not rebuilt or pushed: {', '.join(kept)}")
        # An image found published that this run signed or attested (a release first made unsigned).
        found = {i.name for i in images if i.status == Status.ALREADY_PUBLISHED
                 or any(p.status == Status.ALREADY_PUBLISHED for p in i.platforms)}
        late = [s.artifact for s in signed if s.artifact.split(" ", 1)[0] in found]
        if late and not notes[0].startswith("every image"):
            notes.append(f"signed or attested {len(late)} manifest(s) of images already published: "
                         f"{', '.join(dict.fromkeys(a.split(' ', 1)[0] for a in late))}")
    notes += [f"chart {c.name} {c.version} was already published" for c in charts
              if c.status == Status.ALREADY_PUBLISHED]
    notes += [f"chart {c.name} {c.version} replaced an existing version (--force)" for c in charts
              if c.status == Status.REPLACED]
    return tuple(notes)


def verify_command(request: ReleaseRequest, charts: Sequence[str]) -> str:
    """The command that checks this release's signatures and attestations from the registry (pure)."""
    return verify_command_line(request.tag, registry=request.registry, chart_registry=request.chart_remote,
                               config_path=request.config_path, charts=charts, source=request.source)


def _signature_lines(result: ReleaseResult) -> list[str]:
    if not result.signed:
        return []
    lines = ["", "## Signatures", "", f"Signed with cosign, key `{result.public_key}` (sha256 of the public key PEM).",
             "", "| artifact | digest | signature | provenance | SBOM |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {s.artifact} | `{s.digest}` | {s.signature} | {s.provenance or '-'} | {s.sbom or '-'} |"
              for s in result.signatures]
    lines += ["", "Verify (with the release's public key):", "", "```", result.verify_command, "```"]
    return lines


def _image_rows(image: ImageResult) -> list[str]:
    if not image.is_index:
        platform = image.platforms[0].platform if image.platforms else ""
        return [f"| {image.name} | {platform} | `{image.ref}` | `{image.digest}` |"]
    listed = ", ".join(p.platform for p in image.platforms)
    rows = [f"| {image.name} | index of {listed} | `{image.ref}` | `{image.digest}` |"]
    return rows + [f"| | {p.platform} | `{p.ref}` | `{p.digest}` |" for p in image.platforms]


def _rendered_with(switches: Sequence[str]) -> str:
    return " or ".join(f"`{s}`" for s in switches) if switches else "the defaults"


def _proof_lines(result: ReleaseResult, heading: str = "### Proof") -> list[str]:
    """The staged release's proof as a table under ``heading``; nothing for a release that was not staged."""
    if not result.proof:
        return []
    lines = ["", heading, "", f"Staged at `{result.staged_at}` and proven there before it was promoted:", "",
             "| check | result | seen | seconds |", "| --- | --- | --- | ---: |"]
    return lines + [f"| {row.check} | {row.verdict} | {row.detail.replace('|', chr(92) + '|')} | {row.seconds:.1f} |"
                    for row in result.proof]


def render_summary(result: ReleaseResult) -> str:
    """Markdown listing every image with its digest, each chart, and how to install."""
    kind = "pre-release" if result.prerelease else "release"
    dry = ", dry run: nothing was pushed" if result.dry_run else ""
    lines = [
        f"# {result.tag} ({kind}{dry})",
        "",
        f"Source revision: `{result.source_revision}`  ",
        f"Registry: `{result.registry}`",
        "",
        "## Images",
        "",
        "| image | platform | reference | digest |",
        "| --- | --- | --- | --- |",
    ]
    lines += [row for image in result.images for row in _image_rows(image)]
    if not result.images:
        lines += ["| (none) | | | |"]
    lines += ["", "## Charts", ""]
    if result.charts:
        lines += ["| chart | reference | version | digest |", "| --- | --- | --- | --- |"]
        lines += [f"| {c.name} | `{c.ref}` | {c.version} | `{c.digest}` |" for c in result.charts]
        lines += ["", "## Install", "", "```"]
        lines += [install_command(c.ref.rsplit("/", 1)[0], c.name, c.version) for c in result.charts]
        lines += ["```"]
    else:
        lines += ["(no chart in this release)"]
    if result.external_images:
        lines += ["", "## External images", "", "Referenced by the charts, not built by this release:", "",
                  "| chart | image | pinned by digest | rendered with |", "| --- | --- | --- | --- |"]
        lines += [f"| {e.chart} | `{e.image}` | {'yes' if e.pinned else 'no'} | {_rendered_with(e.switches)} |"
                  for e in result.external_images]
    lines += _signature_lines(result)
    lines += _proof_lines(result, heading="## Proof")
    if result.github_release:
        lines += ["", f"GitHub release: {result.github_release}"]
    if result.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in result.notes]
    return "\n".join(lines) + "\n"


def artifacts_markdown(result: ReleaseResult) -> str:
    """The GitHub release's Artifacts section: every image and chart digest, how to install and verify (pure)."""
    lines = ["| artifact | reference | digest |", "| --- | --- | --- |"]
    for image in result.images:
        lines.append(f"| {image.name} | `{image.ref}` | `{image.digest}` |")
        if image.is_index:
            lines += [f"| {image.name} {p.platform} | `{p.ref}` | `{p.digest}` |" for p in image.platforms]
    lines += [f"| chart {c.name} {c.version} | `{c.ref}` | `{c.digest}` |" for c in result.charts]
    if result.charts:
        lines += ["", "```"]
        lines += [install_command(c.ref.rsplit("/", 1)[0], c.name, c.version) for c in result.charts]
        lines += ["```"]
    if result.signed:
        lines += ["", f"Signed with cosign (key `{result.public_key}`), with SLSA v1 provenance and SPDX SBOM "
                  "attestations. Verify with the release's public key:", "", "```", result.verify_command, "```"]
    else:
        lines += ["", "This release is not signed."]
    lines += _proof_lines(result)
    return "\n".join(lines) + "\n"


def artifacts_from_summary_file(path: Path, tag: str) -> str:
    """:func:`artifacts_markdown` of a ``--summary-json`` file of ``tag``; one-line errors otherwise."""
    try:
        result = ReleaseResult.model_validate_json(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"cannot read the summary {path}: {err.strerror}; pass a run's --summary-json file") from err
    except ValueError as err:
        raise ConfigError(f"{path} is not a summary of fma-release run --summary-json; pass that file") from err
    if result.tag != tag:
        raise ConfigError(f"{path} is the summary of {result.tag}, not {tag}: pass the summary of {tag}'s run")
    return artifacts_markdown(result)


@task(name="summary", task_run_name="summary {result.tag}", cache_policy=NONE)
def summary_task(result: ReleaseResult) -> str:
    """Publish the summary as a Prefect markdown artifact; return its text."""
    return publish_summary(result)


async def apublish_summary(result: ReleaseResult) -> str:
    """:func:`publish_summary` from the flow's event loop: it reuses the flow run's API client
    (a new client costs tens of milliseconds, a large share of a re-release's whole run)."""
    text = render_summary(result)
    await acreate_markdown_artifact(
        key=artifact_key(result.version), markdown=text, description=f"fma-release {result.tag}",
    )
    return text


def write_summary(result: ReleaseResult, log: Any) -> None:
    """The summary artifact, as the first call to the Prefect server after the data plane; with the
    server gone it is skipped with one warning (the CLI still prints the summary and writes
    --summary-json from the result)."""
    try:
        if not note_if_server_gone():
            summary_task(result)
            return
    except Exception as err:
        if not server_unreachable(err):
            raise
        server_gone()
    log.warning("the summary artifact was not written: the Prefect server cannot be reached")


def publish_summary(result: ReleaseResult) -> str:
    """The summary as the run's markdown artifact (from a flow or a task); returns its text."""
    text = render_summary(result)
    create_markdown_artifact(
        key=artifact_key(result.version),
        markdown=text,
        description=f"fma-release {result.tag}",
        _sync=True,  # type: ignore[call-arg]  # the async flow body's thread looks async to Prefect
    )
    return text


def release_result(
    run: RunContext, revision: str, images: Sequence[PushedImage], packages: Sequence[PackagedChart], *,
    charts: Sequence[PublishedChart], signatures: Sequence[SignatureResult], notes: Sequence[str] = (),
) -> ReleaseResult:
    """The release's result: the flow's return value, the release record and the summary's source (pure)."""
    request = run.request
    every_note = (*release_notes(images, charts, signatures), *notes)
    if run.facts.unsigned_note and not request.dry_run:
        every_note += (run.facts.unsigned_note,)
    if request.dry_run:
        every_note += tuple(f"chart archive kept at {p.archive}" for p in packages)
    return ReleaseResult(
        tag=request.tag, version=request.version.version, prerelease=request.version.prerelease,
        registry=request.registry, source_revision=revision, images=tuple(ImageResult.of(i) for i in images),
        charts=tuple(charts), dry_run=request.dry_run, notes=every_note,
        external_images=tuple(ExternalImageResult(chart=e.chart, image=e.image, pinned=e.pinned, switches=e.switches)
                              for p in packages for e in p.external),
        signed=run.signs, public_key=run.signer.fingerprint if run.signer else "", signatures=tuple(signatures),
        verify_command=verify_command(request, [c.name for c in charts]) if run.signs else "",
    )
