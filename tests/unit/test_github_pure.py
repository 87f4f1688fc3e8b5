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
