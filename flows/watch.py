"""The scheduled watcher: start ``publish-release`` for every release not yet published.

A safety net for missed webhooks. It lists the repository's GitHub releases,
skips drafts (pre-releases count), and starts a run of the ``publish-release``
deployment for each release whose chart version is not in the registry yet
and that has no run waiting or running. Running it twice starts nothing the
second time; a failed release is picked up again on the next round.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE
from prefect.client.schemas.objects import FlowRun

from tasks.core.errors import InvalidTagError
from tasks.core.redact import install_log_filter
from tasks.forge.github import DEFAULT_API_URL, PublishedRelease, check_api_url, configured_api_url, list_releases
from tasks.oci.references import Reference, chart_remote
from tasks.oci.registry import RegistryAPI
from tasks.run.options import DEFAULT_REGISTRY, DEFAULT_REPO
from tasks.run.retry import waits
from tasks.run.settings import Settings
from tasks.run.tags import parse_tag

DEFAULT_DEPLOYMENT = "publish-release/publish-release"
ACTIVE_STATES = ("SCHEDULED", "PENDING", "RUNNING", "PAUSED", "CANCELLING")


# -- pure -----------------------------------------------------------------------


def releases_to_start(
    releases: Iterable[PublishedRelease], published_versions: Iterable[str], active_tags: Iterable[str]
) -> list[str]:
    """Tags to release, oldest first: published (not draft), a release tag, chart not there, no run on it."""
    published = set(published_versions)
    active = set(active_tags)
    chosen = []
    for release in releases:
        if release.draft or release.tag in active:
            continue
        try:
            version = parse_tag(release.tag)
        except InvalidTagError:
            continue
        if version.version not in published:
            chosen.append(version)
    return [v.tag for v in sorted({v.tag: v for v in chosen}.values(), key=lambda v: v.semver)]


# -- tasks ----------------------------------------------------------------------


@task(name="list releases", task_run_name="list releases of {repo}", cache_policy=NONE,
      retries=2, retry_delay_seconds=waits(5, 20))
def list_releases_task(repo: str, api_url: str) -> list[PublishedRelease]:
    """The repository's GitHub releases, drafts marked."""
    return list_releases(repo, api_url)


@task(name="published chart versions", task_run_name="published versions of chart {chart}", cache_policy=NONE,
      retries=2, retry_delay_seconds=waits(5, 20))
def chart_versions_task(registry: str, chart_registry: str | None, chart: str) -> list[str]:
    """The versions of ``chart`` already in the chart registry."""
    target = Reference.parse(f"{chart_remote(registry, chart_registry)}/{chart}")
    with RegistryAPI(target.host, Settings.from_env()) as api:  # credentials only if bound to that host
        return api.tags(target.repository)


@task(name="active release runs", task_run_name="active runs of {deployment}", cache_policy=NONE)
def active_tags_task(deployment: str) -> list[str]:
    """Tags that already have a run of ``deployment`` waiting or running."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    with get_client(sync_client=True) as client:
        found = client.read_deployment_by_name(deployment)
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[found.id])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType(s) for s in ACTIVE_STATES]))
            ),
        )
    return sorted({str((r.parameters or {}).get("tag", "")) for r in runs} - {""})


@task(name="start release", task_run_name="start {tag}", cache_policy=NONE)
def start_release_task(deployment: str, tag: str) -> str:
    """Create a run of ``deployment`` for ``tag``; return its id."""
    from prefect.deployments import run_deployment

    run = run_deployment(deployment, parameters={"tag": tag}, timeout=0, as_subflow=False,
                         tags=["watch-releases"])
    return str(cast(FlowRun, run).id)  # a sync call returns the run itself


# -- flow -----------------------------------------------------------------------


@flow(name="watch-releases", flow_run_name="watch {repo}")
def watch_releases(  # noqa: PLR0917 - the parameters are the fields of the UI's run form
    repo: str = DEFAULT_REPO,
    api_url: str = DEFAULT_API_URL,
    registry: str = DEFAULT_REGISTRY,
    chart_registry: str | None = None,
    chart: str = "fma-controllers",
    deployment: str = DEFAULT_DEPLOYMENT,
) -> list[str]:
    """Start publish-release for each published GitHub release whose chart is not in the registry.

    Args:
        repo: GitHub repository OWNER/NAME whose releases are watched.
        api_url: GitHub API URL (GitHub Enterprise: https://HOST/api/v3); must be the one the host is
            configured with (GITHUB_API_URL), the only one the token is sent to.
        registry: image registry of the releases.
        chart_registry: OCI URL for charts (default: oci://<registry>/charts).
        chart: chart whose version tells whether a release is published.
        deployment: the deployment to start, FLOW/DEPLOYMENT.
    """
    install_log_filter()  # the GitHub token is masked in the run's logs
    check_api_url(api_url, configured_api_url())  # the token goes to the configured API only
    log = get_run_logger()
    releases = list_releases_task(repo, api_url)
    versions = chart_versions_task(registry, chart_registry, chart)
    active = active_tags_task(deployment)
    tags = releases_to_start(releases, versions, active)
    started: dict[str, Any] = {tag: start_release_task(deployment, tag) for tag in tags}
    log.info("%d release(s) on GitHub, %d chart version(s) published, %d run(s) active: started %s",
             len(releases), len(versions), len(active), ", ".join(started) or "nothing")
    return tags
