"""The GitHub release step of a run with ``--github-repo``: the release of the tag on GitHub is a draft from
the start of the run and is published only once the release is public at its registry (for a staged release:
proven, then promoted), its body listing every digest, the verify command and the proof. A run that fails leaves
the draft a draft; the next run of the tag takes it again. The token (GITHUB_TOKEN) is read by these steps only,
and sent only to the configured GitHub API (GITHUB_API_URL)."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from tasks.core import progress
from tasks.core.status import Status
from tasks.forge.github import DraftRelease, configured_api_url, open_draft, publish_draft
from tasks.run.result import ReleaseResult
from tasks.run.retry import retry_if_transient, waits
from tasks.summary import artifacts_markdown

ITEM = progress.GITHUB


# Retried only when GitHub could not be reached or failed on its side: a refusal (a token without access, a
# repository that does not exist) fails at once, in one line.
@task(name="github draft", task_run_name="GitHub draft {tag}", cache_policy=NONE, retries=2,
      retry_delay_seconds=waits(2, 10), retry_condition_fn=retry_if_transient)
def open_draft_task(tag: str, repo: str) -> DraftRelease:
    """The GitHub release of ``tag`` in ``repo`` as a draft (created, or an earlier run's taken again)."""
    draft = open_draft(tag, repo, api_url=configured_api_url())
    if draft.published:
        say = f"{repo} has published {tag} already: left as it is ({draft.url})"
        get_run_logger().info("%s", say)
        progress.report(ITEM, Status.PUBLISHED, say)
    else:
        get_run_logger().info("GitHub release %s of %s: a draft until the release is public: %s", tag, repo, draft.url)
        progress.report(ITEM, Status.DRAFTED, draft.url)
    return draft


@task(name="github release", task_run_name="GitHub release {draft.tag}", cache_policy=NONE, retries=2,
      retry_delay_seconds=waits(2, 10), retry_condition_fn=retry_if_transient)
def publish_draft_task(draft: DraftRelease, result: ReleaseResult) -> str:
    """Publish the run's draft with the release's artifacts; its URL."""
    created = publish_draft(draft, artifacts_markdown(result), api_url=configured_api_url())
    kind = "pre-release" if created.plan.prerelease else ("release, marked Latest" if created.plan.make_latest
                                                          else "release")
    get_run_logger().info("published the GitHub release %s of %s (%s): %s", draft.tag, draft.repo, kind, created.url)
    progress.report(ITEM, Status.PUBLISHED, f"{kind}: {created.url}")
    return created.url


def on_github(draft: DraftRelease | None, result: ReleaseResult) -> ReleaseResult:
    """``result`` once the GitHub release says so: the draft published with the result's artifacts, or a release
    published before the run left as it is. Without a draft (no --github-repo, a dry run): ``result``."""
    if draft is None:
        return result
    if draft.published:
        return result.model_copy(update={"github_release": draft.url, "notes": (
            *result.notes, f"the GitHub release {draft.tag} of {draft.repo} was published before this run: "
                           "left as it is")})
    return result.model_copy(update={"github_release": publish_draft_task(draft, result)})
