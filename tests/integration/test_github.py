"""Steps 1-2 through the real CLI: git tags in real repositories, GitHub releases against the local stub."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.github_stub import GitHubStub

REPO = "llm-d-incubation/llm-d-fast-model-actuation"
CLI = str(Path(sys.executable).with_name("fma-release"))
TOKEN = "ghp-stub-secret-token-123"


def cli(*args: str, cwd: Path | None = None, token: str | None = TOKEN) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GITHUB_TOKEN"}
    if token is not None:
        env["GITHUB_TOKEN"] = token
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=60, check=False)


@pytest.fixture
def github() -> Iterator[GitHubStub]:
    """The GitHub stub with FMA's history: v0.2.0, v0.2.1, v0.3.0-rc.1 (pre-release), a draft v0.9.0."""
    with GitHubStub(token=TOKEN) as stub:
        stub.add_release(REPO, "v0.2.0")
        stub.add_release(REPO, "v0.2.1")
        stub.add_release(REPO, "v0.3.0-rc.1", prerelease=True)
        stub.add_release(REPO, "v0.9.0", draft=True)
        yield stub


def release_request(stub: GitHubStub, *args: str) -> tuple[dict[str, object], dict[str, object], str]:
    """Run github-release; return the create request, the notes request and stdout."""
    done = cli("github-release", *args, "--repo", REPO, "--api-url", stub.url)
    assert done.returncode == 0, done.stderr
    assert TOKEN not in done.stdout + done.stderr
    (create,) = stub.posted(f"/repos/{REPO}/releases")
    (notes,) = stub.posted("/releases/generate-notes")
    assert create.authorized and notes.authorized
    assert create.body is not None and notes.body is not None
    return create.body, notes.body, done.stdout


def sections(body: object) -> list[str]:
    return [line for line in str(body).splitlines() if line.startswith("## ")]


def test_regular_release_is_latest_with_notes_since_previous_regular(github: GitHubStub) -> None:
    """v0.3.1: name = tag, three sections, notes since v0.2.1, not a pre-release, marked Latest."""
    create, notes, out = release_request(github, "v0.3.1")
    assert notes == {"tag_name": "v0.3.1", "previous_tag_name": "v0.2.1"}
    assert create["tag_name"] == create["name"] == "v0.3.1"
    assert create["prerelease"] is False and create["draft"] is False
    assert create["make_latest"] == "true"
    assert sections(create["body"]) == ["## What's Changed", "## Breaking Changes", "## Upgrade Notes"]
    assert "Change for v0.3.1" in str(create["body"]) and "compare/v0.2.1...v0.3.1" in str(create["body"])
    assert "marked Latest" in out


def test_release_candidate_is_prerelease_and_not_latest(github: GitHubStub) -> None:
    """v0.3.0-rc.2: pre-release ticked, make_latest false, notes since v0.3.0-rc.1."""
    create, notes, _ = release_request(github, "v0.3.0-rc.2")
    assert notes["previous_tag_name"] == "v0.3.0-rc.1"
    assert create["name"] == "v0.3.0-rc.2"
    assert create["prerelease"] is True and create["make_latest"] == "false"
    assert sections(create["body"]) == ["## What's Changed", "## Breaking Changes", "## Upgrade Notes"]


def test_first_release_candidate_of_a_line() -> None:
    """v0.3.0-rc.1 on a repository with v0.2.0 only: pre-release, not Latest, notes since v0.2.0."""
    with GitHubStub(token=TOKEN) as stub:
        stub.add_release(REPO, "v0.2.0")
        create, notes, _ = release_request(stub, "v0.3.0-rc.1")
    assert notes["previous_tag_name"] == "v0.2.0"
    assert create["prerelease"] is True and create["make_latest"] == "false"


def test_older_regular_release_is_not_latest(github: GitHubStub, tmp_path: Path) -> None:
    """A patch of an older line (v0.2.2 after v0.3.0) is a regular release, not Latest; notes since v0.2.1."""
    github.add_release(REPO, "v0.3.0")
    upgrade = tmp_path / "upgrade.md"
    upgrade.write_text("Run `helm upgrade` with --version 0.2.2.\n")
    create, notes, out = release_request(github, "v0.2.2", "--upgrade-notes", str(upgrade))
    assert notes["previous_tag_name"] == "v0.2.1"
    assert create["prerelease"] is False and create["make_latest"] == "false"
    assert "## Upgrade Notes\n\nRun `helm upgrade` with --version 0.2.2." in str(create["body"])
    assert "marked Latest" not in out


def test_existing_release_is_refused(github: GitHubStub) -> None:
    """A tag that already has a release is refused with one line, and nothing is created."""
    done = cli("github-release", "v0.2.1", "--repo", REPO, "--api-url", github.url)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "already has a release for v0.2.1" in done.stderr
    assert github.posted(f"/repos/{REPO}/releases") == []


def test_missing_or_bad_token(github: GitHubStub) -> None:
    """No GITHUB_TOKEN: refused before any request; a wrong one: 401 named, token never printed."""
    done = cli("github-release", "v0.3.1", "--repo", REPO, "--api-url", github.url, token=None)
    assert done.returncode == 1 and "GITHUB_TOKEN is not set" in done.stderr
    assert github.requests == []
    wrong = "ghp-wrong-token-456"
    done = cli("github-release", "v0.3.1", "--repo", REPO, "--api-url", github.url, token=wrong)
    assert done.returncode == 1 and "401" in done.stderr and "check GITHUB_TOKEN" in done.stderr
    assert wrong not in done.stdout + done.stderr


def test_bad_tag_sends_nothing(github: GitHubStub) -> None:
    """A malformed tag exits 2 before any request."""
    done = cli("github-release", "v1.4", "--repo", REPO, "--api-url", github.url)
    assert done.returncode == 2 and "invalid release tag" in done.stderr
    assert github.requests == []


# -- tags ------------------------------------------------------------------------


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A repository with two commits, cloned from a bare origin."""
    origin = tmp_path / "origin.git"
    work = tmp_path / "work"
    git(tmp_path, "init", "--quiet", "--bare", str(origin))
    git(tmp_path, "clone", "--quiet", str(origin), str(work))
    for n in (1, 2):
        (work / "f").write_text(str(n))
        git(work, "add", "f")
        git(work, "commit", "--quiet", "-m", f"c{n}")
    git(work, "push", "--quiet", "origin", "HEAD")
    git(work, "config", "user.name", "Release Bot")
    git(work, "config", "user.email", "bot@example.invalid")
    return work


def test_tag_creates_annotated_tag_on_ref_and_pushes(clone: Path) -> None:
    """`fma-release tag --ref HEAD~1 --push` makes an annotated tag on that commit, locally and on origin."""
    first = git(clone, "rev-parse", "HEAD~1")
    done = cli("tag", "v0.3.1", "--source", str(clone), "--ref", "HEAD~1", "--push")
    assert done.returncode == 0, done.stderr
    assert git(clone, "cat-file", "-t", "v0.3.1") == "tag"  # annotated, not lightweight
    assert git(clone, "rev-parse", "v0.3.1^{commit}") == first
    assert first in git(clone, "ls-remote", "--tags", "origin", "refs/tags/v0.3.1^{}")


def test_tag_refuses_existing_invalid_and_unknown(clone: Path) -> None:
    """An existing tag, a malformed tag and an unknown ref are refused with one line; nothing moves."""
    assert cli("tag", "v0.3.1", "--source", str(clone)).returncode == 0
    head = git(clone, "rev-parse", "v0.3.1")
    git(clone, "commit", "--quiet", "--allow-empty", "-m", "later")
    again = cli("tag", "v0.3.1", "--source", str(clone))
    assert again.returncode == 1 and "already exists" in again.stderr and again.stderr.count("\n") == 1
    assert git(clone, "rev-parse", "v0.3.1") == head
    bad = cli("tag", "v0.3", "--source", str(clone))
    assert bad.returncode == 2 and "invalid release tag" in bad.stderr
    unknown = cli("tag", "v0.4.0", "--source", str(clone), "--ref", "no-such-branch")
    assert unknown.returncode == 1 and "not a commit" in unknown.stderr
    assert git(clone, "tag", "--list") == "v0.3.1"


def test_tag_refuses_a_tag_only_on_the_remote(clone: Path, tmp_path: Path) -> None:
    """With --push, a tag someone else pushed already is refused before anything is created."""
    other = tmp_path / "other"
    git(tmp_path, "clone", "--quiet", str(tmp_path / "origin.git"), str(other))
    git(other, "tag", "-a", "v0.5.0", "-m", "theirs")
    git(other, "push", "--quiet", "origin", "v0.5.0")
    done = cli("tag", "v0.5.0", "--source", str(clone), "--push")
    assert done.returncode == 1 and "already exists on origin" in done.stderr
    assert git(clone, "tag", "--list") == ""


# -- a run's draft (fma-release run --github-repo): tasks/forge/github.py against the stub, in this process ------


@pytest.fixture
def github_env(github: GitHubStub, monkeypatch: pytest.MonkeyPatch) -> GitHubStub:
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    monkeypatch.setenv("GITHUB_API_URL", github.url)
    return github


def test_a_runs_draft_is_taken_again_then_published_latest_keeping_what_a_person_wrote(github_env: GitHubStub) -> None:
    """The draft is created once: a second run of the tag takes it again. A section a person edited in the draft
    while the release ran is kept; the Artifacts section is the run's; Latest is decided at publication."""
    from tasks.forge.github import DRAFT_ARTIFACTS, open_draft, publish_draft

    first = open_draft("v0.3.1", REPO, api_url=github_env.url)
    again = open_draft("v0.3.1", REPO, api_url=github_env.url)
    assert first == again and not first.published
    (created,) = github_env.posted(f"/repos/{REPO}/releases")
    assert created.body is not None and created.body["draft"] is True and DRAFT_ARTIFACTS in created.body["body"]
    draft = next(r for r in github_env.releases[REPO] if r["id"] == first.release_id)
    edited = "## Breaking Changes\n\nThe flag -x is gone."
    draft["body"] = draft["body"].replace("## Breaking Changes\n\n_None._", edited)
    github_env.add_release(REPO, "v0.3.2")  # published while this one ran: v0.3.1 is no longer the highest
    done = publish_draft(first, "| requester | `r` | `sha256:abc` |", api_url=github_env.url)
    assert done.url == first.url
    assert (draft["draft"], draft["make_latest"]) == (False, "false")
    assert "The flag -x is gone." in draft["body"] and "`sha256:abc`" in draft["body"]
    assert DRAFT_ARTIFACTS not in draft["body"] and draft["body"].count("## Artifacts") == 1


def test_a_published_release_is_left_alone_and_a_deleted_draft_is_named(github_env: GitHubStub) -> None:
    from tasks.forge.github import GitHubError, open_draft, publish_draft

    published = open_draft("v0.2.1", REPO, api_url=github_env.url)
    assert published.published and not github_env.posted(f"/repos/{REPO}/releases")
    draft = open_draft("v0.4.0", REPO, api_url=github_env.url)
    github_env.releases[REPO] = [r for r in github_env.releases[REPO] if r["id"] != draft.release_id]
    with pytest.raises(GitHubError, match=r"draft release v0\.4\.0 .* is gone .*run the release again"):
        publish_draft(draft, "x", api_url=github_env.url)
