"""The release summary: rendered from the release result (pure), then written (the artifact)."""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from prefect import task
from prefect.artifacts import acreate_markdown_artifact, create_markdown_artifact
from prefect.cache_policies import NONE

from tasks.core.errors import ConfigError
from tasks.core.status import Status
from tasks.helm.chart import install_command
from tasks.oci.references import chart_remote
from tasks.run.config import DEFAULT_CONFIG
from tasks.run.result import ImageResult, PublishedChart, PushedImage, ReleaseResult

if TYPE_CHECKING:
    from tasks.run.context import ReleaseRequest

NOTHING_CHANGED = "nothing changed: every image and chart of this tag was already published"


def artifact_key(version: str) -> str:
    """A Prefect artifact key for a release: lowercase letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", f"release-{version}".lower()).strip("-")


def release_notes(images: Sequence[PushedImage], charts: Sequence[PublishedChart]) -> tuple[str, ...]:
    """What a re-run found already done, in words."""
    statuses = [i.status for i in images] + [c.status for c in charts]
    if statuses and all(s == Status.ALREADY_PUBLISHED for s in statuses):
        return (NOTHING_CHANGED,)
    notes = []
    kept = [p.item for i in images for p in (i.platforms or (i,)) if p.status == Status.ALREADY_PUBLISHED]
    if kept:
        notes.append(f"already in the registry, not rebuilt or pushed: {', '.join(kept)}")
    notes += [f"chart {c.name} {c.version} was already published" for c in charts
              if c.status == Status.ALREADY_PUBLISHED]
    notes += [f"chart {c.name} {c.version} replaced an existing version (--force)" for c in charts
              if c.status == Status.REPLACED]
    return tuple(notes)


def already_published(recorded: ReleaseResult) -> ReleaseResult:
    """A recorded release, as the answer to releasing the same thing again."""
    return recorded.as_already_published(NOTHING_CHANGED)


def verify_command(request: ReleaseRequest, charts: Sequence[str]) -> str:
    """The command that checks this release's signatures and attestations from the registry (pure)."""
    parts = ["fma-release", "verify", request.tag, "--key", "cosign.pub", "--registry", request.registry]
    if request.chart_remote != chart_remote(request.registry, None):
        parts += ["--chart-registry", request.chart_remote]
    if request.config_path.resolve() != DEFAULT_CONFIG.resolve():
        parts += ["--config", str(request.config_path)]
    for chart in charts:
        parts += ["--chart", chart]
    return " ".join(shlex.quote(part) for part in parts)


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
                  "| chart | image | pinned by digest |", "| --- | --- | --- |"]
        lines += [f"| {e.chart} | `{e.image}` | {'yes' if e.pinned else 'no'} |" for e in result.external_images]
    lines += _signature_lines(result)
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


@task(name="summary", cache_policy=NONE)
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
