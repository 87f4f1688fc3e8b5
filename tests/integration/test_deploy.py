"""prefect.yaml: `prefect deploy --all` accepts it offline and registers the trigger and schedule."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from prefect import get_client

from tasks.config import PROJECT_ROOT

pytestmark = pytest.mark.integration
PREFECT = str(Path(sys.executable).with_name("prefect"))


def prefect(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PREFECT_CLI_PROMPT": "false"}
    return subprocess.run([PREFECT, "--no-prompt", *args], cwd=PROJECT_ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def test_prefect_deploy_all_registers_both_deployments(tmp_path: Path) -> None:
    """`prefect deploy --all` on a process pool: publish-release (tag, trigger), watch-releases (schedule)."""
    suffix = uuid.uuid4().hex[:6]
    pool, repo = f"fma-release-{suffix}", f"fma-test/deploy-{suffix}"  # a repository no event names
    text = (PROJECT_ROOT / "prefect.yaml").read_text()
    for old, new in (("- name: publish-release\n", f"- name: publish-release-{suffix}\n"),
                     ("- name: watch-releases\n", f"- name: watch-releases-{suffix}\n"),
                     ("name: fma-release\n    work_queue_name", f"name: {pool}\n    work_queue_name"),
                     ("&repository llm-d-incubation/llm-d-fast-model-actuation", f"&repository {repo}")):
        assert old in text
        text = text.replace(old, new)
    copy = tmp_path / "prefect.yaml"
    copy.write_text(text)
    created = prefect("work-pool", "create", pool, "--type", "process")
    assert created.returncode == 0, created.stdout + created.stderr
    try:
        done = prefect("deploy", "--all", "--prefect-file", str(copy))
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        with get_client(sync_client=True) as client:
            publish = client.read_deployment_by_name(f"publish-release/publish-release-{suffix}")
            watch = client.read_deployment_by_name(f"watch-releases/watch-releases-{suffix}")
            automations = client.read_resource_related_automations(f"prefect.deployment.{publish.id}")
            try:
                assert publish.work_pool_name == watch.work_pool_name == pool
                schema = publish.parameter_openapi_schema or {}
                assert schema["required"] == ["tag", "source"]
                assert schema["properties"]["tag"]["type"] == "string" and schema["properties"]["tag"]["description"]
                assert publish.parameters["source"].endswith("llm-d-fast-model-actuation.git")
                (automation,) = automations
                trigger = automation.trigger.model_dump()
                assert trigger["expect"] == {"github.release.published"}
                assert trigger["match"]["github.repository"] == repo
                (action,) = automation.actions
                assert action.model_dump()["parameters"] == {"tag": "{{ event.resource['github.tag'] }}"}
                (schedule,) = watch.schedules
                assert schedule.schedule.model_dump()["interval"].total_seconds() == 3600
                assert watch.parameters["deployment"] == "publish-release/publish-release"
            finally:
                client.delete_deployment(publish.id)
                client.delete_deployment(watch.id)
    finally:
        prefect("work-pool", "delete", pool)
