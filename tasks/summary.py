"""The release summary: rendered (pure), then written (the artifact, a JSON file)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from prefect import task
from prefect.artifacts import acreate_markdown_artifact, create_markdown_artifact
from prefect.cache_policies import NONE

from tasks.charts import PublishedChart, install_command
from tasks.images import PushedImage


@dataclass(frozen=True)
class ReleaseResult:
    tag: str
    version: str
    prerelease: bool
    registry: str
    source_revision: str
    images: tuple[PushedImage, ...] = ()
    charts: tuple[PublishedChart, ...] = ()
    dry_run: bool = False
    notes: tuple[str, ...] = ()


def artifact_key(version: str) -> str:
    """A Prefect artifact key for a release: lowercase letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", f"release-{version}".lower()).strip("-")


def release_notes(images: list[PushedImage], charts: list[PublishedChart]) -> tuple[str, ...]:
    """What a re-run found already done, in words."""
    statuses = [i.status for i in images] + [c.status for c in charts]
    if statuses and all(s == "already published" for s in statuses):
        return (NOTHING_CHANGED,)
    notes = []
    kept = [p.label or p.name for i in images for p in (i.platforms or (i,)) if p.status == "already published"]
    if kept:
        notes.append(f"already in the registry, not rebuilt or pushed: {', '.join(kept)}")
    notes += [f"chart {c.name} {c.version} was already published" for c in charts if c.status == "already published"]
    notes += [f"chart {c.name} {c.version} replaced an existing version (--force)" for c in charts
              if c.status == "replaced"]
    return tuple(notes)


NOTHING_CHANGED = "nothing changed: every image and chart of this tag was already published"


def already_published(recorded: dict[str, Any]) -> dict[str, Any]:
    """A recorded summary, as the answer to releasing the same thing again."""
    return {
        **recorded,
        "images": [
            {**i, "status": "already published",
             "platforms": [{**p, "status": "already published"} for p in i.get("platforms", [])]}
            for i in recorded.get("images", [])
        ],
        "charts": [{**c, "status": "already published"} for c in recorded.get("charts", [])],
        "notes": [NOTHING_CHANGED],
    }


def summary_dict(result: ReleaseResult) -> dict[str, Any]:
    """The ``--summary-json`` document."""
    return {
        "tag": result.tag,
        "version": result.version,
        "prerelease": result.prerelease,
        "registry": result.registry,
        "source_revision": result.source_revision,
        "dry_run": result.dry_run,
        "notes": list(result.notes),
        "images": [_image_dict(i) for i in result.images],
        "charts": [
            {"name": c.name, "ref": c.ref, "version": c.version, "digest": c.digest, "status": c.status}
            for c in result.charts
        ],
    }


def _image_dict(image: PushedImage) -> dict[str, Any]:
    """An image's summary entry; ``platforms`` lists each platform's own reference and digest (for a
    multi-platform image ``digest`` is its image index's, for a single-platform one its manifest's)."""
    return {
        "name": image.name, "ref": image.ref, "digest": image.digest, "status": image.status,
        "platforms": [
            {"platform": p.platform, "ref": p.ref, "digest": p.digest, "status": p.status}
            for p in (image.platforms or (image,))
        ],
    }


def _image_rows(image: dict[str, Any]) -> list[str]:
    platforms = image.get("platforms") or []
    if len(platforms) <= 1 and (not platforms or platforms[0]["ref"] == image["ref"]):
        platform = platforms[0]["platform"] if platforms else ""
        return [f"| {image['name']} | {platform} | `{image['ref']}` | `{image['digest']}` |"]
    listed = ", ".join(p["platform"] for p in platforms)
    rows = [f"| {image['name']} | index of {listed} | `{image['ref']}` | `{image['digest']}` |"]
    return rows + [f"| | {p['platform']} | `{p['ref']}` | `{p['digest']}` |" for p in platforms]


def render_summary(summary: dict[str, Any]) -> str:
    """Markdown listing every image with its digest, each chart, and how to install."""
    kind = "pre-release" if summary["prerelease"] else "release"
    dry = ", dry run: nothing was pushed" if summary.get("dry_run") else ""
    lines = [
        f"# {summary['tag']} ({kind}{dry})",
        "",
        f"Source revision: `{summary['source_revision']}`  ",
        f"Registry: `{summary['registry']}`",
        "",
        "## Images",
        "",
        "| image | platform | reference | digest |",
        "| --- | --- | --- | --- |",
    ]
    lines += [row for i in summary["images"] for row in _image_rows(i)]
    if not summary["images"]:
        lines += ["| (none) | | | |"]
    lines += ["", "## Charts", ""]
    if summary["charts"]:
        lines += ["| chart | reference | version | digest |", "| --- | --- | --- | --- |"]
        lines += [
            f"| {c['name']} | `{c['ref']}` | {c['version']} | `{c['digest']}` |" for c in summary["charts"]
        ]
        lines += ["", "## Install", "", "```"]
        lines += [
            install_command(c["ref"].rsplit("/", 1)[0], c["name"], c["version"]) for c in summary["charts"]
        ]
        lines += ["```"]
    else:
        lines += ["(no chart in this release)"]
    if summary.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in summary["notes"]]
    return "\n".join(lines) + "\n"


@task(name="summary", cache_policy=NONE)
def summary_task(summary: dict[str, Any]) -> str:
    """Publish the summary as a Prefect markdown artifact; return its text."""
    return publish_summary(summary)


async def apublish_summary(summary: dict[str, Any]) -> str:
    """:func:`publish_summary` from the flow's event loop: it reuses the flow run's API client
    (a new client costs tens of milliseconds, a large share of a re-release's whole run)."""
    text = render_summary(summary)
    await acreate_markdown_artifact(
        key=artifact_key(summary["version"]), markdown=text, description=f"fma-release {summary['tag']}",
    )
    return text


def publish_summary(summary: dict[str, Any]) -> str:
    """The summary as the run's markdown artifact (from a flow or a task); returns its text."""
    text = render_summary(summary)
    create_markdown_artifact(
        key=artifact_key(summary["version"]),
        markdown=text,
        description=f"fma-release {summary['tag']}",
        _sync=True,  # type: ignore[call-arg]  # the async flow body's thread looks async to Prefect
    )
    return text
