"""Check out the source repository at the release tag."""

from __future__ import annotations

import shutil
from pathlib import Path

from prefect import task
from prefect.cache_policies import NONE

from tasks.core import cmd
from tasks.core.errors import CommandError, SourceError
from tasks.core.redact import redact
from tasks.run.facts import Checkout


def resolve_tag(source: str, tag: str) -> str:
    """The commit ``tag`` names in ``source``; :class:`SourceError` when the tag is not there."""
    shown = redact(source)
    try:
        out = cmd.git(
            ["ls-remote", "--tags", "--", source, f"refs/tags/{tag}", f"refs/tags/{tag}^{{}}"],
            what=f"read the source {shown}",
            fix="check that --source is a git URL or a local git repository that exists",
        )
    except CommandError as err:
        raise SourceError(str(err)) from err
    refs: dict[str, str] = {}
    for line in out.splitlines():
        commit, _, ref = line.partition("\t")
        refs[ref.strip()] = commit.strip()
    if f"refs/tags/{tag}" not in refs:
        raise SourceError(
            f"tag {tag} is not in the source {shown}: push the tag first (git push origin {tag}) or check --source"
        )
    # An annotated tag lists the tag object and, peeled (^{}), the commit it names.
    return refs.get(f"refs/tags/{tag}^{{}}", refs[f"refs/tags/{tag}"])


def checkout_at_tag(source: str, tag: str, workspace: Path, expected: str = "") -> Checkout:
    """Clone ``source`` at ``tag`` into ``workspace/source`` (a fresh directory).

    ``expected`` is the commit the preflight saw the tag name (``resolve_tag``); a tag moved since
    then fails the run rather than release a commit other than the one checked.
    """
    target = workspace / "source"
    if target.exists():  # the workspace is this run's own: a retried checkout starts clean
        shutil.rmtree(target)
    workspace.mkdir(parents=True, exist_ok=True)
    shown = redact(source)
    try:
        cmd.git(
            ["-c", "advice.detachedHead=false", "clone", "--quiet", "--depth", "1",
             "--branch", tag, "--", _clone_url(source), str(target)],
            what=f"clone {shown} at {tag}",
            fix="check that the source is reachable and the tag exists",
        )
        revision, created = cmd.git(["log", "-1", "--format=%H%n%cI", "HEAD"], cwd=target,
                                 what="read the tagged commit", fix="check the clone").split()
    except CommandError as err:
        raise SourceError(str(err)) from err
    if expected and revision != expected:
        raise SourceError(
            f"tag {tag} moved from {expected[:12]} to {revision[:12]} during the release: tags of a release "
            "must not move; re-run to release the commit it names now"
        )
    return Checkout(path=target, source=shown, tag=tag, revision=revision, created=created)


def _clone_url(source: str) -> str:
    # --depth is ignored for plain local paths; file:// makes shallow clones work.
    path = Path(source)
    if "://" not in source and ":" not in source.split("/", maxsplit=1)[0] and path.exists():
        return path.resolve().as_uri()
    return source


@task(name="checkout", task_run_name="checkout {tag}", cache_policy=NONE)
def checkout_task(source: str, tag: str, workspace: Path, expected: str = "") -> Checkout:
    """Check out the source at the tag; record the tagged commit."""
    return checkout_at_tag(source, tag, workspace, expected)
