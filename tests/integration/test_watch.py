"""The watcher against the GitHub stub, a real registry and the session's Prefect server."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator

import pytest
import requests
from prefect import get_client
from prefect.client.schemas.actions import DeploymentUpdate
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.client.schemas.objects import StateType

from devkit.github_stub import GitHubStub
from devkit.registry import RegistryProcess
from flows.release import release_flow
from flows.watch import watch_releases
from tasks.core.errors import ConfigError
from tasks.forge.github import GitHubError
from tests.integration.prefect_helpers import recorded_task_runs

pytestmark = pytest.mark.integration
REPO = "llm-d-incubation/llm-d-fast-model-actuation"


def put_artifact(registry: RegistryProcess, repository: str, tag: str) -> None:
    """Store a minimal OCI artifact as ``repository:tag`` through the registry's HTTP API."""
    config = b"{}"
    digest = "sha256:" + hashlib.sha256(config).hexdigest()
    start = requests.post(f"{registry.url}/v2/{repository}/blobs/uploads/", timeout=10)
    location = start.headers["Location"]
    location = location if location.startswith("http") else registry.url + location
    sep = "&" if "?" in location else "?"
    requests.put(f"{location}{sep}digest={digest}", data=config, timeout=10).raise_for_status()
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.cncf.helm.config.v1+json", "digest": digest, "size": 2},
                "layers": []}
    requests.put(f"{registry.url}/v2/{repository}/manifests/{tag}", data=json.dumps(manifest),
                 headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"}, timeout=10).raise_for_status()


@pytest.fixture
def deployment(registry: RegistryProcess, namespace: str) -> Iterator[str]:
    """A deployment of the release flow of this test's own, publishing to this test's namespace (nobody
    serves it: its runs wait)."""
    name = f"watch-test-{uuid.uuid4().hex[:8]}"
    deployment_id = release_flow.to_deployment(
        name=name, parameters={"source": "/nowhere", "registry": f"{registry.host}/{namespace}"}).apply()
    yield f"publish-release/{name}"
    with get_client(sync_client=True) as client:
        only_this = DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        for run in client.read_flow_runs(deployment_filter=only_this):
            client.delete_flow_run(run.id)
        client.delete_deployment(deployment_id)


def started_tags(deployment_name: str) -> list[str]:
    with get_client(sync_client=True) as client:
        found = client.read_deployment_by_name(deployment_name)
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[found.id])))
    return sorted(str(r.parameters["tag"]) for r in runs)


def test_watcher_starts_exactly_the_missing_releases_once(
    registry: RegistryProcess, namespace: str, deployment: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Published-but-unreleased (regular and pre-release) start once; drafts and released charts never."""
    monkeypatch.setenv("GITHUB_TOKEN", "watch-token")
    put_artifact(registry, f"{namespace}/charts/fma-controllers", "0.1.0")
    with GitHubStub(token="watch-token") as github:
        monkeypatch.setenv("GITHUB_API_URL", github.url)  # the API this host is configured with
        github.add_release(REPO, "v0.1.0")
        github.add_release(REPO, "v0.2.0")
        github.add_release(REPO, "v0.3.0-rc.1", prerelease=True)
        github.add_release(REPO, "v0.3.0", draft=True)
        args = {"repo": REPO, "api_url": github.url, "deployment": deployment}
        first = watch_releases(**args)
        second = watch_releases(**args)
        listed = [r for r in github.requests if r.path == f"/repos/{REPO}/releases"]
    assert first == ["v0.2.0", "v0.3.0-rc.1"]
    assert second == []
    assert started_tags(deployment) == ["v0.2.0", "v0.3.0-rc.1"]
    assert len(listed) == 2 and all(r.authorized for r in listed)


def test_the_watcher_refuses_an_api_url_it_was_not_configured_with(
    registry: RegistryProcess, namespace: str, deployment: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """api_url naming another host: the run fails in one line before the token is read or any request made."""
    monkeypatch.setenv("GITHUB_TOKEN", "watch-token-never-sent")
    monkeypatch.delenv("GITHUB_API_URL", raising=False)  # configured: github.com's API
    with GitHubStub(token="watch-token-never-sent") as elsewhere:
        with pytest.raises(ConfigError, match=r"is not the one this host is configured with \(https://api\.github\.com\)"):
            watch_releases(repo=REPO, api_url=elsewhere.url, deployment=deployment)
        assert elsewhere.requests == []
    assert started_tags(deployment) == []


def test_the_watcher_looks_where_the_release_deployment_publishes(
    registry: RegistryProcess, namespace: str, deployment: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One registry setting: moving publish-release to another registry moves the watcher's look with it."""
    monkeypatch.setenv("GITHUB_TOKEN", "watch-token")
    put_artifact(registry, f"{namespace}/charts/fma-controllers", "0.1.0")  # v0.1.0 is out where it publishes
    with GitHubStub(token="watch-token") as github:
        monkeypatch.setenv("GITHUB_API_URL", github.url)
        github.add_release(REPO, "v0.1.0")
        assert watch_releases(repo=REPO, api_url=github.url, deployment=deployment) == []
        with get_client(sync_client=True) as client:
            found = client.read_deployment_by_name(deployment)
            client.update_deployment(found.id, DeploymentUpdate(
                parameters={**found.parameters, "registry": f"{registry.host}/{namespace}-moved"}))
        assert watch_releases(repo=REPO, api_url=github.url, deployment=deployment) == ["v0.1.0"]
    assert started_tags(deployment) == ["v0.1.0"]


@pytest.mark.parametrize("refusal", ["missing", "refused"])
def test_a_missing_or_refused_token_is_one_line_and_not_retried(
    deployment: str, monkeypatch: pytest.MonkeyPatch, refusal: str,
) -> None:
    """No token, or one GitHub refuses (401): the watcher's run fails on its first try, in one line naming the
    fix; a read-only token is all it asks for."""
    monkeypatch.delenv("GITHUB_TOKEN_BLOCK", raising=False)
    with GitHubStub(token="the-right-token") as github:
        monkeypatch.setenv("GITHUB_API_URL", github.url)
        if refusal == "missing":
            monkeypatch.delenv("GITHUB_TOKEN", raising=False)
        else:
            monkeypatch.setenv("GITHUB_TOKEN", "a-revoked-token")
        github.add_release(REPO, "v0.1.0")
        state = watch_releases(repo=REPO, api_url=github.url, deployment=deployment, return_state=True)
        listed = [r for r in github.requests if r.path == f"/repos/{REPO}/releases"]
    assert state.is_failed()
    message = str(state.message)
    with pytest.raises(GitHubError) as raised:
        state.result()
    text = str(raised.value)
    assert "\n" not in text and "a-revoked-token" not in text and "a-revoked-token" not in message
    if refusal == "missing":
        assert "GITHUB_TOKEN is not set" in text and "contents: read" in text and "GITHUB_TOKEN_BLOCK" in text
        assert listed == []
    else:
        assert "401" in text and "check GITHUB_TOKEN" in text
        assert len(listed) == 1  # PyGithub's own retry is for 5xx; the task is not retried either
    runs = recorded_task_runs(state.state_details.flow_run_id, "list releases")
    (listing,) = [r for r in runs if r.name.startswith("list releases")]
    assert listing.run_count == 1 and listing.state_type == StateType.FAILED
    assert started_tags(deployment) == []
