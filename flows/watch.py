"""The scheduled watcher: start ``publish-release`` for every release not yet published.

A safety net for missed webhooks. It lists the repository's GitHub releases,
skips drafts (pre-releases count), and starts a run of the ``publish-release``
deployment for each release whose chart version is not in the registry yet
and that has no run waiting or running. Running it twice starts nothing the
second time; a failed release is picked up again on the next round.

The registry and chart registry it looks in are the ``publish-release``
deployment's own parameters, read from the server at each round: the watcher
has no registry setting of its own, so the two cannot disagree. Listing
releases needs only read access; a missing or refused token is one line and
is not retried (only a GitHub that cannot be reached is).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
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
from tasks.run.retry import retry_if_transient, waits
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


@dataclass(frozen=True)
class ReleaseTarget:
    """Where the releases of the watched deployment go: its own parameters (or the flow's defaults)."""

    deployment_id: str
    registry: str
    chart_registry: str | None

    @classmethod
    def from_parameters(cls, deployment_id: str, parameters: Mapping[str, Any]) -> ReleaseTarget:
        """Pure: the registry and chart registry a run of the deployment with only ``{tag}`` would use."""
        return cls(deployment_id, str(parameters.get("registry") or DEFAULT_REGISTRY),
                   str(parameters["chart_registry"]) if parameters.get("chart_registry") else None)


# -- tasks ----------------------------------------------------------------------
# Retried only when GitHub or the registry could not be reached (retry_if_transient): a missing,
# refused or under-privileged token is the same on every try.


@task(name="list releases", task_run_name="list releases of {repo}", cache_policy=NONE,
      retries=2, retry_delay_seconds=waits(5, 20), retry_condition_fn=retry_if_transient)
def list_releases_task(repo: str, api_url: str) -> list[PublishedRelease]:
    """The repository's GitHub releases, drafts marked."""
    return list_releases(repo, api_url)


@task(name="release deployment", task_run_name="read {deployment}", cache_policy=NONE)
def release_target_task(deployment: str) -> ReleaseTarget:
    """The deployment the watcher starts, and the registry its runs publish to."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    from tasks.core.errors import ConfigError

    with get_client(sync_client=True) as client:
        try:
            found = client.read_deployment_by_name(deployment)
        except ObjectNotFound:
            raise ConfigError(f"the deployment {deployment} is not on the Prefect server: deploy it "
                              "(prefect deploy --all, or fma-release serve) or set the watcher's deployment") from None
    return ReleaseTarget.from_parameters(str(found.id), found.parameters or {})


@task(name="published chart versions", task_run_name="published versions of chart {chart}", cache_policy=NONE,
      retries=2, retry_delay_seconds=waits(5, 20), retry_condition_fn=retry_if_transient)
def chart_versions_task(target: ReleaseTarget, chart: str) -> list[str]:
    """The versions of ``chart`` already in the chart registry."""
    remote = Reference.parse(f"{chart_remote(target.registry, target.chart_registry)}/{chart}")
    with RegistryAPI(remote.host, Settings.from_env()) as api:  # credentials only if bound to that host
        return api.tags(remote.repository)


@task(name="active release runs", task_run_name="active runs of {target.deployment_id}", cache_policy=NONE)
def active_tags_task(target: ReleaseTarget) -> list[str]:
    """Tags that already have a run of the deployment waiting or running."""
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
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[target.deployment_id])),
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
def watch_releases(
    repo: str = DEFAULT_REPO,
    api_url: str = DEFAULT_API_URL,
    chart: str = "fma-controllers",
    deployment: str = DEFAULT_DEPLOYMENT,
) -> list[str]:
    """Start publish-release for each published GitHub release whose chart is not in its registry.

    Args:
        repo: GitHub repository OWNER/NAME whose releases are watched.
        api_url: GitHub API URL (GitHub Enterprise: https://HOST/api/v3); must be the one the host is
            configured with (GITHUB_API_URL), the only one the token is sent to.
        chart: chart whose version tells whether a release is published.
        deployment: the deployment to start, FLOW/DEPLOYMENT; its own registry and chart registry
            parameters say where to look.
    """
    install_log_filter()  # the GitHub token is masked in the run's logs
    check_api_url(api_url, configured_api_url())  # the token goes to the configured API only
    log = get_run_logger()
    target = release_target_task(deployment)
    releases = list_releases_task(repo, api_url)
    versions = chart_versions_task(target, chart)
    active = active_tags_task(target)
    tags = releases_to_start(releases, versions, active)
    started: dict[str, Any] = {tag: start_release_task(deployment, tag) for tag in tags}
    log.info("%d release(s) on GitHub, %d chart version(s) published in %s, %d run(s) active: started %s",
             len(releases), len(versions), chart_remote(target.registry, target.chart_registry), len(active),
             ", ".join(started) or "nothing")
    return tags
