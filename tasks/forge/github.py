"""The GitHub side of a release (steps 1-2): the tag, the GitHub release, its notes.

Pure functions decide: which release came before (:func:`previous_release`),
whether the new one is "Latest" (:func:`make_latest`), the body
(:func:`release_body`). Thin functions act: git through :mod:`tasks.core.cmd`,
GitHub through PyGithub (``base_url`` points at GitHub Enterprise, or at the
local stub in tests). The token comes from ``GITHUB_TOKEN`` and is registered
for masking before anything can log it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import semver

from tasks.core import cmd
from tasks.core.errors import CommandError, ConfigError, InvalidTagError, ReleaseError
from tasks.core.redact import redact, register
from tasks.run.inputs import is_repo_name
from tasks.run.tags import ReleaseVersion, parse_tag

if TYPE_CHECKING:  # PyGithub is imported where a call to GitHub is made: a release that publishes none never loads it
    from github import Github

DEFAULT_API_URL = "https://api.github.com"
NONE_TEXT = "_None._"


class GitHubError(ReleaseError):
    """GitHub refused a request, or the repository state forbids the step. ``transient`` when GitHub
    could not be reached or failed on its side (5xx): only then may trying again help."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


READ, WRITE = "read", "write"
ACCESS = {
    READ: "read the repository's releases (contents: read)",
    WRITE: "write the repository's contents (contents: write)",
}


@dataclass(frozen=True)
class PublishedRelease:
    """What the watcher and the notes need to know of an existing GitHub release."""

    tag: str
    draft: bool = False
    prerelease: bool = False


@dataclass(frozen=True)
class ReleasePlan:
    """The request to send: everything the GitHub release will be."""

    tag: str
    name: str
    body: str
    prerelease: bool
    make_latest: bool
    previous_tag: str | None


# -- pure -----------------------------------------------------------------------


def _version(tag: str) -> ReleaseVersion | None:
    try:
        return parse_tag(tag)
    except InvalidTagError:
        return None


def previous_release(tag: str, releases: Iterable[PublishedRelease]) -> str | None:
    """The tag the notes of ``tag`` start from: the highest published release below it.

    A regular release starts from the previous regular release (its notes cover
    the pre-releases in between); a pre-release from the previous release of any
    kind. Drafts and tags that are not release tags are ignored.
    """
    current = parse_tag(tag)
    candidates: list[tuple[semver.Version, str]] = []
    for release in releases:
        version = _version(release.tag)
        if release.draft or version is None or version.semver >= current.semver:
            continue
        if not current.prerelease and version.prerelease:
            continue
        candidates.append((version.semver, release.tag))
    return max(candidates)[1] if candidates else None


def make_latest(tag: str, releases: Iterable[PublishedRelease]) -> bool:
    """``True`` only for a regular release higher than every regular release published."""
    current = parse_tag(tag)
    if current.prerelease:
        return False
    for release in releases:
        version = _version(release.tag)
        if release.draft or version is None or version.prerelease or release.tag == tag:
            continue
        if version.semver > current.semver:
            return False
    return True


_LEADING_HEADING = re.compile(r"\A\s*#{1,6}\s*What'?s Changed\s*\n", re.IGNORECASE)


def release_body(generated_notes: str, breaking: str = "", upgrade: str = "", artifacts: str = "") -> str:
    """The body: "What's Changed" from GitHub's generated notes, then the two sections for people, then
    ``artifacts`` (the run's digests and verify command, tasks/summary.py) when given."""
    changes = _LEADING_HEADING.sub("", generated_notes or "").strip() or NONE_TEXT
    tail = f"\n## Artifacts\n\n{artifacts.strip()}\n" if artifacts.strip() else ""
    return (
        "## What's Changed\n\n"
        f"{changes}\n\n"
        "## Breaking Changes\n\n"
        f"{breaking.strip() or NONE_TEXT}\n\n"
        "## Upgrade Notes\n\n"
        f"{upgrade.strip() or NONE_TEXT}\n"
    ) + tail


def plan_release(
    tag: str, releases: Iterable[PublishedRelease], generated_notes: str, *, breaking: str = "", upgrade: str = "",
    artifacts: str = "",
) -> ReleasePlan:
    """Everything the GitHub release of ``tag`` will be, given the releases already there."""
    releases = list(releases)
    version = parse_tag(tag)
    return ReleasePlan(
        tag=tag,
        name=tag,
        body=release_body(generated_notes, breaking, upgrade, artifacts),
        prerelease=version.prerelease,
        make_latest=make_latest(tag, releases),
        previous_tag=previous_release(tag, releases),
    )


def check_repo_name(repo: str) -> str:
    if not is_repo_name(repo):
        raise GitHubError(
            f"repository {repo!r} is not OWNER/NAME: write it like llm-d-incubation/llm-d-fast-model-actuation"
        )
    return repo


# -- GitHub ---------------------------------------------------------------------


def github_token(access: str = WRITE) -> str:
    """``GITHUB_TOKEN``, or the Prefect Secret block ``GITHUB_TOKEN_BLOCK`` names, registered for masking;
    :class:`GitHubError` when neither is set. ``access`` is what the caller needs the token to do."""
    token = os.environ.get("GITHUB_TOKEN", "")
    block = os.environ.get("GITHUB_TOKEN_BLOCK", "")
    if not token and block:
        from tasks.run.settings import read_secret_block

        token = read_secret_block(block, "GITHUB_TOKEN_BLOCK", GitHubError)
    if not token:
        raise GitHubError(f"GITHUB_TOKEN is not set: export a token that may {ACCESS[access]}, or name a Prefect "
                          "Secret block holding one in GITHUB_TOKEN_BLOCK")
    register(token)
    return token


def configured_api_url(environ: Mapping[str, str] | None = None) -> str:
    """The one GitHub API the token is for: ``GITHUB_API_URL``, else github.com's."""
    env = os.environ if environ is None else environ
    return (env.get("GITHUB_API_URL") or DEFAULT_API_URL).rstrip("/")


def check_api_url(api_url: str, configured: str) -> None:
    """:class:`ConfigError` unless ``api_url`` is the configured API (pure): the token goes nowhere else."""
    if api_url.rstrip("/") != configured.rstrip("/"):
        raise ConfigError(
            f"the GitHub API {redact(api_url)} is not the one this host is configured with ({configured}): "
            "the token is sent only there; set GITHUB_API_URL (or serve --api-url) to change it"
        )


def github_client(api_url: str = DEFAULT_API_URL, access: str = WRITE) -> Github:
    """A PyGithub client for ``api_url`` with the token from the environment; ``api_url`` must be the
    configured one (:func:`configured_api_url`), checked before the token is read."""
    from github import Auth, Github

    check_api_url(api_url, configured_api_url())
    return Github(
        auth=Auth.Token(github_token(access)),
        base_url=api_url.rstrip("/"),
        # GitHub asks for spacing on github.com; a stub or an Enterprise host sets its own limits.
        seconds_between_requests=0.25 if api_url.rstrip("/") == DEFAULT_API_URL else None,
        seconds_between_writes=1.0 if api_url.rstrip("/") == DEFAULT_API_URL else None,
        retry=2,
        lazy=True,  # no GET of the repository before the calls that matter
    )


def _github_error(err: Exception, what: str, repo: str, access: str = WRITE) -> GitHubError:
    from github import GithubException

    if isinstance(err, GithubException):
        message = ""
        if isinstance(err.data, dict):
            message = str(err.data.get("message") or "")
        fix = {
            401: "check GITHUB_TOKEN",
            403: f"give GITHUB_TOKEN access to {ACCESS[access].removeprefix('read ').removeprefix('write ')}",
            404: f"check that {repo} exists and GITHUB_TOKEN can see it",
            422: "the request was refused as invalid; check that the release does not exist yet",
        }.get(err.status, "try again later")
        return GitHubError(f"GitHub refused to {what} for {repo} ({err.status} {redact(message)}): {fix}",
                           transient=err.status >= 500 or err.status == 429)
    return GitHubError(
        f"cannot reach GitHub to {what} for {repo} ({type(err).__name__}): check --api-url and the network",
        transient=True,
    )


def _known(releases: Iterable[Any]) -> list[PublishedRelease]:
    """What the decisions need of PyGithub's releases: tag, draft, pre-release."""
    return [PublishedRelease(tag=r.tag_name, draft=bool(r.draft), prerelease=bool(r.prerelease)) for r in releases]


def list_releases(repo: str, api_url: str = DEFAULT_API_URL) -> list[PublishedRelease]:
    """Every release of ``repo``, drafts included (each marked)."""
    check_repo_name(repo)
    client = github_client(api_url, READ)
    try:
        gh_repo = client.get_repo(repo)
        return _known(gh_repo.get_releases())
    except Exception as err:
        raise _github_error(err, "list the releases", repo, READ) from err
    finally:
        client.close()


@dataclass(frozen=True)
class CreatedRelease:
    plan: ReleasePlan
    url: str


def create_github_release(
    tag: str, repo: str, *, api_url: str = DEFAULT_API_URL, breaking: str = "", upgrade: str = "",
    target: str | None = None, artifacts: str = "",
) -> CreatedRelease:
    """Create the GitHub release of ``tag``: notes since the previous release, pre-release and Latest decided."""
    from github.GithubObject import NotSet

    parse_tag(tag)
    check_repo_name(repo)
    client = github_client(api_url)
    try:
        gh_repo = client.get_repo(repo)
        existing = _known(gh_repo.get_releases())
        if any(r.tag == tag for r in existing):
            raise GitHubError(f"{repo} already has a release for {tag}: edit it on GitHub, or release a new tag")
        previous = previous_release(tag, existing)
        notes = gh_repo.generate_release_notes(
            tag, previous_tag_name=previous or NotSet, target_commitish=target or NotSet
        )
        plan = plan_release(tag, existing, notes.body, breaking=breaking, upgrade=upgrade, artifacts=artifacts)
        created = gh_repo.create_git_release(
            tag=plan.tag, name=plan.name, message=plan.body, draft=False, prerelease=plan.prerelease,
            make_latest="true" if plan.make_latest else "false",
            target_commitish=target or NotSet,
        )
        return CreatedRelease(plan=plan, url=str(created.html_url or ""))
    except GitHubError:
        raise
    except Exception as err:
        raise _github_error(err, f"create the release {tag}", repo) from err
    finally:
        client.close()


# -- a draft published at the end of a run (fma-release run --github-repo) --------------

DRAFT_ARTIFACTS = ("_This release is being published by fma-release: this draft is published once every image and "
                   "chart is public (and proven, for a staged release). Edit the sections above meanwhile; this "
                   "section is replaced by the release's digests._")
_ARTIFACTS_SECTION = re.compile(r"\n## Artifacts\n.*\Z", re.DOTALL)


def with_artifacts(body: str, artifacts: str) -> str:
    """``body`` with its Artifacts section replaced by (or, without one, followed by) ``artifacts`` (pure): what a
    person wrote in the draft's other sections while the release ran is kept."""
    kept = _ARTIFACTS_SECTION.sub("", body or "").rstrip("\n")
    return f"{kept}\n\n## Artifacts\n\n{artifacts.strip()}\n"


@dataclass(frozen=True)
class DraftRelease:
    """The GitHub release a run publishes at its end: ``published`` when it was public before the run
    (a person published it, or an earlier run did): then the run leaves it as it is."""

    repo: str
    tag: str
    release_id: int
    url: str
    published: bool = False


def open_draft(tag: str, repo: str, *, api_url: str = DEFAULT_API_URL) -> DraftRelease:
    """The GitHub release of ``tag`` as a draft, before anything of the release is built: created with the
    notes since the previous release, or the draft an earlier run of the tag left (taken again)."""
    from github.GithubObject import NotSet

    version = parse_tag(tag)
    check_repo_name(repo)
    client = github_client(api_url)
    try:
        gh_repo = client.get_repo(repo)
        releases = list(gh_repo.get_releases())
        mine = [r for r in releases if r.tag_name == tag]
        if mine:
            return DraftRelease(repo, tag, int(mine[0].id), str(mine[0].html_url or ""), published=not mine[0].draft)
        existing = _known(releases)
        previous = previous_release(tag, existing)
        notes = gh_repo.generate_release_notes(tag, previous_tag_name=previous or NotSet)
        created = gh_repo.create_git_release(
            tag=tag, name=tag, message=release_body(notes.body, artifacts=DRAFT_ARTIFACTS), draft=True,
            prerelease=version.prerelease,
        )
        return DraftRelease(repo, tag, int(created.id), str(created.html_url or ""))
    except GitHubError:
        raise
    except Exception as err:
        raise _github_error(err, f"create the draft release {tag}", repo) from err
    finally:
        client.close()


def publish_draft(draft: DraftRelease, artifacts: str, *, api_url: str = DEFAULT_API_URL) -> CreatedRelease:
    """Publish the run's draft with ``artifacts`` as its Artifacts section; Latest only for the highest regular
    release, decided now (other releases may have been published while this one ran)."""
    client = github_client(api_url)
    try:
        gh_repo = client.get_repo(draft.repo)
        releases = list(gh_repo.get_releases())
        existing = _known(releases)
        found = [r for r in releases if int(r.id) == draft.release_id]
        if not found:
            raise GitHubError(f"the draft release {draft.tag} of {draft.repo} is gone (deleted while the release ran): "
                              "run the release again to create it, or publish with fma-release github-release")
        plan = plan_release(draft.tag, existing, "")
        body = with_artifacts(found[0].body or "", artifacts)
        published = found[0].update_release(
            name=found[0].name or draft.tag, message=body, draft=False, prerelease=plan.prerelease,
            make_latest="true" if plan.make_latest else "false",
        )
        return CreatedRelease(plan=replace(plan, body=body), url=str(published.html_url or draft.url))
    except GitHubError:
        raise
    except Exception as err:
        raise _github_error(err, f"publish the release {draft.tag}", draft.repo) from err
    finally:
        client.close()


# -- git ------------------------------------------------------------------------


def create_tag(source: Path, tag: str, *, ref: str = "HEAD", push: bool = False, remote: str = "origin") -> str:
    """Create the annotated tag ``tag`` on ``ref`` in the local repository ``source``; return the commit.

    Refuses a malformed tag and a tag that exists locally (or on ``remote`` when pushing).
    """
    parse_tag(tag)
    if not (source / ".git").exists() and not (source / "HEAD").is_file():
        raise GitHubError(f"{source} is not a git repository: pass --source the path of a local clone")
    try:
        commit = cmd.git(["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], cwd=source,
                         what=f"find {ref}", fix="pass --ref a commit, branch or tag of the repository").strip()
    except CommandError as err:
        raise GitHubError(f"{ref} is not a commit in {source}: pass --ref a commit, branch or tag") from err
    exists = cmd.git(["tag", "--list", tag], cwd=source, what="list the tags", fix="check the repository").strip()
    if exists:
        raise GitHubError(f"tag {tag} already exists in {source}: tags are never moved; release a new tag")
    if push:
        remote_tags = cmd.git(["ls-remote", "--tags", remote, f"refs/tags/{tag}"], cwd=source,
                              what=f"read the tags of {remote}", fix=f"check that the remote {remote} is reachable")
        if remote_tags.strip():
            raise GitHubError(f"tag {tag} already exists on {remote}: tags are never moved; release a new tag")
    cmd.git(["tag", "--annotate", "--message", f"Release {tag}", tag, commit], cwd=source,
            what=f"create the tag {tag}", fix="set git's user.name and user.email, then retry")
    if push:
        cmd.git(["push", "--quiet", remote, f"refs/tags/{tag}"], cwd=source,
                what=f"push {tag} to {remote}", fix=f"check your access to {remote}; the tag exists locally")
    return commit
