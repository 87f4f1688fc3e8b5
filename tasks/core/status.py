"""Every state an image, a chart or the run can be in: one enum instead of free strings.

A :class:`Status` is a ``str``, so it compares equal to its value, formats as it, and goes into
the summary JSON unchanged (``"already published"``).
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    # outcomes of an image or chart, as the summary lists them
    PUSHED = "pushed"
    ALREADY_PUBLISHED = "already published"
    REPLACED = "replaced"
    DRY_RUN = "dry run"
    # steps on the way, as progress reports them
    DOWNLOADING = "downloading"  # the source's Go modules, before the ko builds compile
    DOWNLOADED = "downloaded"
    PACKAGING = "packaging"
    PACKAGED = "packaged"
    BUILDING = "building"
    STILL_BUILDING = "still building"  # what a long build is doing now (tasks/core/pulse.py)
    BUILT = "built"
    PUSHING = "pushing"
    RETRYING = "retrying"
    PUSH_FAILED = "push failed"  # transient: it is retried
    ENGINE_LOST = "engine lost"  # during a build: the build is retried
    INDEX_PUSHED = "index pushed"
    SIGNING = "signing"
    SIGNED = "signed"  # a signature or attestation pushed by this run
    ALREADY_SIGNED = "already signed"  # found in the registry, verified with the run's key
    # a promotion (tasks/promote/): a published release copied to another registry
    COPYING = "copying"
    COPIED = "copied"  # written at the destination by this run (an image, its signatures and attestations)
    VERIFYING = "verifying"
    VERIFIED = "verified"
    # a staged release's proof (tasks/prove.py)
    PROVING = "proving"
    PROVEN = "proven"
    # the GitHub release of a run with --github-repo (tasks/github_release.py)
    DRAFTED = "draft"  # created (or an earlier run's taken again): not public until the release is
    PUBLISHED = "published"
    FAILED = "failed"
    WARNING = "warning"  # a step went through with something to look at (an unpinned external image)
    OUTPUT = "output"  # one line of a failed step's own output, after its failure
    # the run itself
    STARTED = "started"
    DONE = "done"
    WAITING = "waiting"  # for the tag's slot, held by another run
    SLOT_TAKEN = "slot taken over"  # from a run that is gone


# Where an image's own part of the run ends (the rest is charts and the summary).
IMAGE_DONE = frozenset({Status.PUSHED, Status.ALREADY_PUBLISHED, Status.BUILT, Status.FAILED})
