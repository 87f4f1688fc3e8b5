"""The pure decisions of the GitHub release: previous release, Latest, body."""

from __future__ import annotations

import pytest

from tasks.core.errors import InvalidTagError
from tasks.forge.github import (
    GitHubError,
    PublishedRelease,
    check_repo_name,
    make_latest,
    plan_release,
    previous_release,
    release_body,
)

R = PublishedRelease
HISTORY = [
    R("v0.2.0"), R("v0.2.1"), R("v0.3.0-rc.1", prerelease=True), R("v0.3.0-rc.2", prerelease=True),
    R("v0.3.0"), R("v0.4.0", draft=True), R("not-a-release"),
]


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("v0.3.1", "v0.3.0"),
        ("v0.3.0", "v0.2.1"),  # a regular release starts from the previous regular one
        ("v0.3.0-rc.3", "v0.3.0-rc.2"),  # a pre-release from the previous release of any kind
        ("v0.3.0-rc.1", "v0.2.1"),
        ("v0.2.0", None),
        ("v0.2.1", "v0.2.0"),  # an older release in between
        ("v0.5.0", "v0.3.0"),  # the draft v0.4.0 is not a release
    ],
)
def test_previous_release(tag: str, expected: str | None) -> None:
    """The notes start from the highest published release below the tag, drafts ignored."""
    assert previous_release(tag, HISTORY) == expected


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("v0.3.1", True),
        ("v1.0.0", True),
        ("v0.2.2", False),  # an older line's patch is not Latest
        ("v0.3.1-rc.1", False),  # pre-releases never are
        ("v0.3.0", True),  # re-deciding the current highest keeps it Latest
        ("v0.4.0", True),  # a draft does not count
    ],
)
def test_make_latest(tag: str, expected: bool) -> None:
    """Latest only for a regular release at least as high as every regular release published."""
    assert make_latest(tag, HISTORY) is expected


def test_make_latest_with_no_releases() -> None:
    """The first regular release is Latest."""
    assert make_latest("v0.1.0", []) is True


def test_body_has_three_sections_and_no_duplicate_heading() -> None:
    """GitHub's own "What's Changed" heading is folded into ours; empty sections say so."""
    body = release_body("## What's Changed\n* fix by @a in #1\n", upgrade="Run helm upgrade.")
    assert body.count("## What's Changed") == 1
    assert body.index("## What's Changed") < body.index("## Breaking Changes") < body.index("## Upgrade Notes")
    assert "* fix by @a in #1" in body and "Run helm upgrade." in body
    assert "## Breaking Changes\n\n_None._" in body


def test_body_without_notes() -> None:
    """No generated notes still gives the three sections."""
    assert release_body("").startswith("## What's Changed\n\n_None._\n\n## Breaking Changes")


def test_plan_release_pre_release() -> None:
    """A release candidate is a pre-release, not Latest, named by its tag."""
    plan = plan_release("v0.4.0-rc.1", HISTORY, "notes")
    assert (plan.name, plan.prerelease, plan.make_latest, plan.previous_tag) == ("v0.4.0-rc.1", True, False, "v0.3.0")


def test_plan_release_refuses_bad_tag() -> None:
    """A malformed tag is refused before anything is sent."""
    with pytest.raises(InvalidTagError):
        plan_release("0.3.1", [], "")


@pytest.mark.parametrize("repo", ["", "owner", "a/b/c", "a b/c", "../x"])
def test_repo_name_checked(repo: str) -> None:
    """OWNER/NAME only."""
    with pytest.raises(GitHubError, match="OWNER/NAME"):
        check_repo_name(repo)


def test_with_artifacts_replaces_only_the_artifacts_section() -> None:
    """What a person wrote above stays; a body without the section gets it at its end."""
    from tasks.forge.github import DRAFT_ARTIFACTS, with_artifacts

    draft = release_body("* a change", breaking="edited by hand", artifacts=DRAFT_ARTIFACTS)
    body = with_artifacts(draft, "| a | `r` | `d` |")
    assert "edited by hand" in body and DRAFT_ARTIFACTS not in body
    assert body.endswith("## Artifacts\n\n| a | `r` | `d` |\n") and body.count("## Artifacts") == 1
    assert with_artifacts("hand-written", "x") == "hand-written\n\n## Artifacts\n\nx\n"


@pytest.mark.parametrize("repo", ["o/r", "llm-d-incubation/llm-d-fast-model-actuation", "a.b/c_d"])
def test_github_repo_option_takes_owner_name(repo: str) -> None:
    from tasks.run.inputs import check_github_repo

    assert check_github_repo(repo) == repo
    assert check_github_repo(None) == check_github_repo("") == ""


@pytest.mark.parametrize("repo", ["owner", "a/b/c", "../x", "a/..", "https://github.com/o/r"])
def test_github_repo_option_refuses_anything_else(repo: str) -> None:
    from tasks.core.errors import ConfigError
    from tasks.run.inputs import check_github_repo

    with pytest.raises(ConfigError, match=r"--github-repo .* is not OWNER/NAME"):
        check_github_repo(repo)
