"""Which releases the watcher starts."""

from __future__ import annotations

from flows.watch import releases_to_start
from tasks.forge.github import PublishedRelease as R


def test_starts_missing_published_releases_oldest_first() -> None:
    """Missing regular and pre-releases start, oldest first; drafts, bad tags and published charts do not."""
    releases = [R("v0.4.0", draft=True), R("v0.3.1"), R("v0.3.0-rc.1", prerelease=True), R("v0.2.0"),
                R("nightly"), R("v0.1.0")]
    assert releases_to_start(releases, ["0.1.0", "0.2.0"], []) == ["v0.3.0-rc.1", "v0.3.1"]


def test_active_runs_are_not_started_again() -> None:
    """A tag with a run waiting or running is left to it."""
    assert releases_to_start([R("v0.3.1"), R("v0.3.2")], [], ["v0.3.1"]) == ["v0.3.2"]


def test_nothing_to_do() -> None:
    """Everything published: nothing starts."""
    assert releases_to_start([R("v0.3.1")], ["0.3.1"], []) == []
