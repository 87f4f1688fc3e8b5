"""prefect.yaml: `prefect deploy --all` accepts it offline; a process worker runs what its trigger starts."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prefect import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.events import emit_event

from devkit import prefect_api
from devkit.faultproxy import FaultProxy, Rule
from devkit.processes import stop_process
from devkit.registry import RegistryProcess
from devkit.sample_source import SampleSource, make_sample_source
from tasks.core.project import PROJECT_ROOT
from tests.integration.prefect_helpers import recorded_task_runs, wait_for

pytestmark = pytest.mark.integration
PREFECT = str(Path(sys.executable).with_name("prefect"))


def prefect(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PREFECT_CLI_PROMPT": "false"}
    return subprocess.run([PREFECT, "--no-prompt", *args], cwd=PROJECT_ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


@dataclass
class Deployed:
    pool: str
    repo: str
    publish: Any
    watch: Any
    promote: Any
    src: SampleSource
    namespace: str


def project_yaml_for_test(suffix: str, repo: str, pool: str, src: SampleSource, registry: str) -> str:
    """prefect.yaml with names of this test's own, and defaults pointing at local parts."""
    text = (PROJECT_ROOT / "prefect.yaml").read_text()
    for old, new in (
        ("- name: publish-release\n", f"- name: publish-release-{suffix}\n"),
        ("- name: watch-releases\n", f"- name: watch-releases-{suffix}\n"),
        ("- name: promote-release\n", f"- name: promote-release-{suffix}\n"),
        ("name: fma-release\n    work_queue_name", f"name: {pool}\n    work_queue_name"),
        ("&repository llm-d-incubation/llm-d-fast-model-actuation", f"&repository {repo}"),
        ("source: https://github.com/llm-d-incubation/llm-d-fast-model-actuation.git",
         f"source: {src.path}\n      config: {src.config}"),
        ("registry: ghcr.io/llm-d-incubation/llm-d-fast-model-actuation\n      dry_run: false",
         f"registry: {registry}\n      dry_run: true"),
    ):
        assert old in text, old
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="module")
def deployed(registry: RegistryProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    """`prefect deploy --all` of prefect.yaml (renamed for this module) onto a new process work pool."""
    tmp = tmp_path_factory.mktemp("deploy")
    suffix = uuid.uuid4().hex[:6]
    pool, repo = f"fma-release-{suffix}", f"fma-test/deploy-{suffix}"  # a repository other tests never name
    namespace = f"t{uuid.uuid4().hex[:10]}/fma"
    src = make_sample_source(tmp / "sample", tag="v0.3.1", images=("requester",), nonce=uuid.uuid4().hex)
    copy = tmp / "prefect.yaml"
    copy.write_text(project_yaml_for_test(suffix, repo, pool, src, f"{registry.host}/{namespace}"))
    created = prefect("work-pool", "create", pool, "--type", "process")
    assert created.returncode == 0, created.stdout + created.stderr
    ids = []
    try:
        done = prefect("deploy", "--all", "--prefect-file", str(copy))
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        with get_client(sync_client=True) as client:
            publish = client.read_deployment_by_name(f"publish-release/publish-release-{suffix}")
            watch = client.read_deployment_by_name(f"watch-releases/watch-releases-{suffix}")
            promote = client.read_deployment_by_name(f"promote-release/promote-release-{suffix}")
        ids = [publish.id, watch.id, promote.id]
        yield Deployed(pool, repo, publish, watch, promote, src, namespace)
    finally:
        with get_client(sync_client=True) as client:
            for deployment_id in ids:
                client.delete_deployment(deployment_id)
        prefect("work-pool", "delete", pool)


def test_prefect_deploy_all_registers_both_deployments(deployed: Deployed) -> None:
    """publish-release: tag required and typed, defaults, the event trigger; watch-releases: the schedule."""
    publish, watch = deployed.publish, deployed.watch
    assert publish.work_pool_name == watch.work_pool_name == deployed.pool
    schema = publish.parameter_openapi_schema or {}
    assert schema["required"] == ["tag", "source"]
    assert schema["properties"]["tag"]["type"] == "string" and schema["properties"]["tag"]["description"]
    assert "tag" not in publish.parameters and publish.parameters["dry_run"] is True
    with get_client(sync_client=True) as client:
        (automation,) = client.read_resource_related_automations(f"prefect.deployment.{publish.id}")
    trigger = automation.trigger.model_dump()
    assert trigger["expect"] == {"github.release.published"}
    assert trigger["match"]["github.repository"] == deployed.repo
    (action,) = automation.actions
    assert action.model_dump()["parameters"] == {"tag": "{{ event.resource['github.tag'] }}"}
    (schedule,) = watch.schedules
    assert schedule.schedule.model_dump()["interval"].total_seconds() == 3600
    assert watch.parameters["deployment"] == "publish-release/publish-release"


def test_prefect_deploy_all_registers_promote_release(deployed: Deployed) -> None:
    """promote-release: the tag required, the registries pinned by the deployment, no trigger (started by hand)."""
    promote = deployed.promote
    assert promote.work_pool_name == deployed.pool
    schema = promote.parameter_openapi_schema or {}
    assert schema["required"] == ["tag", "from_registry", "to_registry"]
    assert schema["properties"]["tag"]["description"] and schema["properties"]["charts"]["anyOf"][0]["type"] == "array"
    assert promote.parameters["from_registry"] == "ghcr.io/llm-d-incubation/llm-d-fast-model-actuation"
    assert promote.parameters["to_registry"] and "tag" not in promote.parameters
    with get_client(sync_client=True) as client:
        assert client.read_resource_related_automations(f"prefect.deployment.{promote.id}") == []


def test_process_worker_runs_the_triggered_release(deployed: Deployed, tmp_path: Path) -> None:
    """The work-pool route: an event -> trigger -> run in the pool -> `prefect worker` runs it to Completed."""
    log = tmp_path / "worker.log"
    worker = subprocess.Popen(
        [PREFECT, "worker", "start", "--pool", deployed.pool, "--type", "process"], cwd=PROJECT_ROOT,
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
        env={**os.environ, "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "5",
             "FMA_RELEASE_HOME": str(PROJECT_ROOT)},  # the pull step's directory (prefect.yaml)
    )
    try:
        emit_event(event="github.release.published", id=uuid.uuid4(), resource={
            "prefect.resource.id": f"github.release.{deployed.repo}.v0.3.1",
            "github.repository": deployed.repo, "github.tag": "v0.3.1"})

        def finished() -> Any:
            assert worker.poll() is None, log.read_text()[-3000:]
            with get_client(sync_client=True) as client:
                runs = client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployed.publish.id])))
            done = [r for r in runs if r.state and r.state.is_final()]
            return done[0] if done else None

        run = wait_for("the worker to finish the triggered run", finished, timeout=240, every=0.5)
    finally:
        stop_process(worker)
    assert run.state.is_completed(), f"{run.state.name}: {run.state.message}; worker log: {log.read_text()[-2000:]}"
    assert run.parameters["tag"] == "v0.3.1" and run.parameters["source"] == str(deployed.src.path)


def ui_retry(flow_run_id: Any) -> None:
    """What the Prefect 3 UI's Retry button sends (its bundle's retryFlowRun): an unforced AwaitingRetry."""
    api = os.environ["PREFECT_API_URL"]
    state = {"type": "SCHEDULED", "name": "AwaitingRetry", "message": "Retry from the UI"}
    answer = prefect_api.post(f"{api}/flow_runs/{flow_run_id}/set_state", {"state": state, "force": False})
    assert answer["status"] == "ACCEPT", answer


def test_ui_retry_of_a_failed_push_builds_nothing_and_pushes_only_that_image(
    deployed: Deployed, fault_proxy: FaultProxy, tmp_path: Path,
) -> None:
    """A publish-release run whose one push met a persistent 503 fails; the fault lifted, Retry from the UI
    runs it again on the worker: every build is Prefect's cached one and the only push is the failed image's."""
    images, failing = ("dual-pods-controller", "launcher-populator"), "launcher-populator"
    src = make_sample_source(tmp_path / "sample", tag="v0.3.1", images=images, nonce=uuid.uuid4().hex)
    namespace = f"t{uuid.uuid4().hex[:10]}/fma"
    fault_proxy.add(Rule(repo_suffix=f"/{failing}", op="manifest_put", status=503))
    with get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(deployed.publish.id, parameters={
            "tag": "v0.3.1", "source": str(src.path), "config": str(src.config), "dry_run": False,
            "registry": f"{fault_proxy.host}/{namespace}", "push_attempts": 1, "retry_base_delay": 0.1})
    log = tmp_path / "worker.log"
    worker = subprocess.Popen(
        [PREFECT, "worker", "start", "--pool", deployed.pool, "--type", "process"], cwd=PROJECT_ROOT,
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
        # This run sets its own source, config and registry: the operator lets runs of this worker do so.
        env={**os.environ, "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "5",
             "FMA_FORM_FIELDS": "source,config,registry", "FMA_RELEASE_HOME": str(PROJECT_ROOT)},
    )

    def final() -> Any:
        assert worker.poll() is None, log.read_text()[-3000:]
        with get_client(sync_client=True) as client:
            current = client.read_flow_run(run.id)
        return current if current.state and current.state.is_final() else None

    try:
        first = wait_for("the first attempt to end", final, timeout=300, every=0.5)
        assert first.state.is_failed(), f"{first.state.name}: {first.state.message}"
        before = {t.id for t in recorded_task_runs(run.id, "checkout ", *(f"{step} {image}" for image in images
                                                                          for step in ("build", "push")))}
        pushed = fault_proxy.count(f"/{failing}", "manifest_put")
        assert pushed == 1, f"{first.state.message}; {log.read_text()[-2000:]}"
        fault_proxy.clear()
        ui_retry(run.id)
        second = wait_for("the retried run to end", final, timeout=300, every=0.5)
    finally:
        stop_process(worker)
    assert second.state.is_completed(), f"{second.state.name}: {second.state.message}; {log.read_text()[-2000:]}"
    assert second.run_count == 2
    recorded = recorded_task_runs(run.id, "push chart ", f"summary {src.tag}", counts={f"push {failing}": 2})
    retried = [t for t in recorded if t.id not in before]
    builds = [t for t in retried if t.name.startswith("build ")]
    pushes = [t for t in retried if t.name.startswith("push ") and not t.name.startswith("push chart ")]
    # The failed image's build is asked again and answered from Prefect's cache; the others get no step.
    assert [t.name for t in builds] == [f"build {failing}"]
    assert all(t.state is not None and t.state.name == "Cached" for t in builds), [(t.name, t.state) for t in builds]
    assert [t.name for t in pushes] == [f"push {failing}"], [t.name for t in retried]
    assert pushes[0].state is not None and pushes[0].state.is_completed()
    # The chart, held back while an image was missing, is published now; the image pushed the first
    # time was not pushed again.
    assert [t.name for t in retried if t.name.startswith("push chart ")] == ["push chart fma-controllers"]
    assert fault_proxy.count("/dual-pods-controller", "manifest_put") == 1
    assert fault_proxy.count(f"/{failing}", "manifest_put") == 2
