"""Run by a team: the service units, the two deployment routes kept apart, secrets from Prefect Secret blocks
(real systemd-analyze, a real Prefect server and worker route, `fma-release serve` as a process)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prefect import get_client
from prefect.blocks.system import Secret
from prefect.exceptions import ObjectNotFound

from devkit import prefect_api
from devkit.github_stub import GitHubStub
from devkit.prefect_server import start_prefect_server, stop_prefect_server
from devkit.processes import stop_process
from devkit.registry import RegistryProcess, free_port
from devkit.sample_source import make_sample_source
from devkit.units import Supervised, parse_unit
from flows.triggers import webhook_secret
from flows.watch import watch_releases
from tasks.core.project import PROJECT_ROOT
from tasks.core.redact import redact
from tests.integration.prefect_helpers import wait_for
from tests.integration.test_deploy import prefect, project_yaml_for_test

pytestmark = pytest.mark.integration
CLI = str(Path(sys.executable).with_name("fma-release"))
UNITS = ("fma-prefect-server.service", "fma-serve.service", "fma-webhook.service", "fma-worker.service")


def render_units(tmp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(PROJECT_ROOT / "scripts/systemd.sh"), "--dest", str(tmp / "units"),
                           "--etc", str(tmp / "etc"), "--state", str(tmp / "state")],
                          capture_output=True, text=True, timeout=120, check=False)


def test_the_service_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """scripts/systemd.sh renders every unit for this checkout, and systemd-analyze verify accepts them; a unit
    whose program is missing is refused (the check is real); settings files are private and never replaced."""
    done = render_units(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in (tmp_path / "units").iterdir()) == sorted(UNITS)
    for name in UNITS:
        text = (tmp_path / "units" / name).read_text()
        assert not any(mark in text for mark in ("@HOME@", "@ETC@", "@STATE@")), name
        assert f"ExecStart={PROJECT_ROOT}/.venv/bin/" in text and "Restart=on-failure" in text, name
        assert "WantedBy=multi-user.target" in text, name
    settings = tmp_path / "etc" / "release.env"
    assert stat.S_IMODE(settings.stat().st_mode) == 0o600
    settings.write_text("FMA_REGISTRY_USERNAME=kept\n")
    assert render_units(tmp_path).returncode == 0 and settings.read_text() == "FMA_REGISTRY_USERNAME=kept\n"

    broken = tmp_path / "units" / "fma-worker.service"
    broken.write_text(broken.read_text().replace(f"{PROJECT_ROOT}/.venv/bin/prefect", "/nowhere/prefect"))
    refused = subprocess.run(["systemd-analyze", "verify", str(broken)], capture_output=True, text=True, check=False)
    assert refused.returncode != 0 and "/nowhere/prefect" in refused.stderr


def test_the_server_unit_answers_again_after_a_crash(tmp_path: Path, prefect_template: Path) -> None:
    """The rendered server unit, run by a service manager (the stand-in: systemd is not PID 1 here): healthy,
    its UI names its own API, and after a SIGKILL it is started again and healthy again."""
    assert render_units(tmp_path).returncode == 0
    port = free_port()
    home = tmp_path / "state" / "prefect"
    home.mkdir(parents=True)
    (home / "prefect.db").write_bytes(prefect_template.read_bytes())  # a migrated database: a faster start
    (tmp_path / "etc" / "server.env").write_text(
        f"FMA_PREFECT_PORT={port}\nPREFECT_UI_API_URL=http://127.0.0.1:{port}/api\n")
    unit = parse_unit((tmp_path / "units" / "fma-prefect-server.service").read_text())
    assert unit.restart == "on-failure"
    base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    service = Supervised(unit, tmp_path / "server.log", base).start()
    api = f"http://127.0.0.1:{port}/api"

    def healthy() -> bool:
        try:
            return requests.get(f"{api}/health", timeout=2).ok
        except requests.ConnectionError:
            return False

    try:
        wait_for("the server unit to answer", healthy, timeout=120, every=0.5)
        first = service.pid
        settings = requests.get(f"http://127.0.0.1:{port}/ui-settings", timeout=5).json()
        assert settings["api_url"] == api
        service.kill()
        wait_for("the crashed server to be started again",
                 lambda: len(service.starts) == 2 and healthy(), timeout=120, every=0.5)
        assert service.pid not in (None, first)
    finally:
        service.stop()
    assert (home / "prefect.db").exists()  # its state is where the unit put it (the state directory)


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=timeout, check=False,
                          cwd=PROJECT_ROOT)


def deployment_or_none(name: str) -> Any:
    with get_client(sync_client=True) as client:
        try:
            return client.read_deployment_by_name(name)
        except ObjectNotFound:
            return None


def release_triggers(deployment_id: object) -> list[object]:
    with get_client(sync_client=True) as client:
        return [a for a in client.read_automations()
                if any(str(getattr(x, "deployment_id", "")) == str(deployment_id) for x in a.actions)]


@pytest.fixture
def pool_route(registry: RegistryProcess, tmp_path: Path) -> Iterator[tuple[str, Path, str]]:
    """A work pool of this test's own, and a prefect.yaml deploying into it under this test's names."""
    suffix = uuid.uuid4().hex[:6]
    pool, repo = f"fma-release-{suffix}", f"fma-test/routes-{suffix}"
    src = make_sample_source(tmp_path / "sample", tag="v0.3.1", images=("requester",), nonce=uuid.uuid4().hex)
    copy = tmp_path / "prefect.yaml"
    copy.write_text(project_yaml_for_test(suffix, repo, pool, src, f"{registry.host}/routes-{suffix}"))
    assert prefect("work-pool", "create", pool, "--type", "process").returncode == 0
    try:
        yield suffix, copy, repo
    finally:
        cli("routes", "remove", "pool", f"--name-suffix=-{suffix}")
        cli("routes", "remove", "served", f"--name-suffix=-{suffix}")
        prefect("work-pool", "delete", pool)


def test_serve_and_prefect_deploy_never_take_each_others_deployments(
    pool_route: tuple[str, Path, str], registry: RegistryProcess, tmp_path: Path,
) -> None:
    """`prefect deploy --all`, then `serve` under the same names: serve refuses in one line and the pool's
    deployment keeps its pool and pull step. `routes remove` takes a route's triggers with it, and a trigger
    left by a deployment deleted by hand. A serve whose deployments `prefect deploy` takes ends in one line."""
    suffix, project_file, repo = pool_route
    publish_name = f"publish-release/publish-release-{suffix}"
    deployed = prefect("deploy", "--all", "--prefect-file", str(project_file))
    assert deployed.returncode == 0, deployed.stdout[-2000:] + deployed.stderr[-2000:]
    publish = deployment_or_none(publish_name)
    assert publish is not None and publish.work_pool_name == f"fma-release-{suffix}"
    assert publish.pull_steps == [{"prefect.deployments.steps.set_working_directory": {
        "directory": "{{ $FMA_RELEASE_HOME }}"}}]  # no absolute path of this checkout

    serve_args = ["serve", f"--name-suffix=-{suffix}", "--registry", f"{registry.host}/routes-{suffix}",
                  "--repo", repo, "--watch-interval", "0"]
    refused = cli(*serve_args)
    lines = (refused.stdout + refused.stderr).strip().splitlines()
    assert refused.returncode != 0 and len(lines) == 1, lines
    assert f"belongs to the work pool fma-release-{suffix}" in lines[0] and "routes remove pool" in lines[0]
    kept = deployment_or_none(publish_name)
    assert kept is not None and kept.id == publish.id and kept.work_pool_name and kept.pull_steps

    # Deleted by hand, as the API allows: Prefect keeps its trigger, which would fail on every event.
    with get_client(sync_client=True) as client:
        client.delete_deployment(publish.id)
    assert release_triggers(publish.id)
    listed = cli("routes", f"--name-suffix=-{suffix}")
    assert f"{publish.id} (gone" in listed.stdout, listed.stdout + listed.stderr
    removed = cli("routes", "remove", "pool", f"--name-suffix=-{suffix}")
    assert removed.returncode == 0, removed.stderr
    assert f"removed watch-releases/watch-releases-{suffix}" in removed.stdout
    assert release_triggers(publish.id) == []
    assert deployment_or_none(f"watch-releases/watch-releases-{suffix}") is None

    log = tmp_path / "serve.log"
    serving = subprocess.Popen([CLI, *serve_args], stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=PROJECT_ROOT)
    try:
        served = wait_for("serve to register its deployments",
                          lambda: serving.poll() is None and deployment_or_none(publish_name), timeout=90, every=0.5)
        assert served.work_pool_name is None
        again = prefect("deploy", "--all", "--prefect-file", str(project_file))
        assert again.returncode == 0, again.stderr[-2000:]
        code = serving.wait(timeout=60)
    finally:
        if serving.poll() is None:
            serving.kill()
    text = log.read_text()
    assert code != 0 and f"was taken over by the work pool fma-release-{suffix}" in text, text[-2000:]
    taken = deployment_or_none(publish_name)
    assert taken is not None and taken.work_pool_name and taken.paused is False  # serve left it running


def test_routes_remove_racing_another_remover_removes_what_it_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two `routes remove` at once (two operators, or one suffix's removal beside another's taking the same
    orphaned trigger): the one that finds a trigger and a deployment already deleted by the other between its
    read and its deletes ends as removed, not with an internal error on the 404."""
    from prefect.events.actions import RunDeployment
    from prefect.events.schemas.automations import AutomationCore, EventTrigger

    from flows import routes

    suffix = f"-race-{uuid.uuid4().hex[:6]}"
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("publish-release")
        deployment_id = client.create_deployment(flow_id=flow_id, name=f"publish-release{suffix}")
        automation_id = client.create_automation(AutomationCore(
            name=f"release trigger{suffix}", trigger=EventTrigger(expect={routes.RELEASE_EVENT}),
            actions=[RunDeployment(source="selected", deployment_id=deployment_id)]))
    read = routes._triggers
    raced: list[str] = []

    def read_then_lose_the_race(client: Any) -> list[routes.Trigger]:
        found = read(client)
        if any(t.id == str(automation_id) for t in found):  # the other remover deletes both, after this read
            with get_client(sync_client=True) as other:
                other.delete_automation(automation_id)
                other.delete_deployment(deployment_id)
            raced.append(str(automation_id))
        return found

    monkeypatch.setattr(routes, "_triggers", read_then_lose_the_race)
    removed = routes.remove_route(routes.SERVED, suffix)
    assert raced == [str(automation_id)]
    assert [d.id for d in removed.deployments] == [str(deployment_id)]
    assert str(automation_id) in [t.id for t in removed.triggers]
    assert deployment_or_none(f"publish-release/publish-release{suffix}") is None


def test_serve_whose_server_went_away_ends_in_one_line(tmp_path: Path, prefect_template: Path) -> None:
    """serve after its Prefect server died (its poll fails, or SIGTERM stops it): exit 3 and one line naming the
    server and that its deployments were not paused, with no traceback (it said "internal error: ConnectError")."""
    proc, url = start_prefect_server(tmp_path / "prefect", ui=False, template=prefect_template)
    log = tmp_path / "serve.log"
    suffix = f"-gone-{uuid.uuid4().hex[:6]}"
    # One client retry: serve gives up in seconds instead of after a minute of retries, by the same path.
    serving = subprocess.Popen([CLI, "serve", f"--name-suffix={suffix}", "--registry", "127.0.0.1:1/gone",
                                "--repo", "fma-test/gone", "--watch-interval", "0"], stdout=log.open("wb"),
                               stderr=subprocess.STDOUT, cwd=PROJECT_ROOT,
                               env={**os.environ, "PREFECT_API_URL": url, "PREFECT_CLIENT_MAX_RETRIES": "1"})
    try:
        def registered() -> bool:
            assert serving.poll() is None, log.read_text()[-2000:]
            try:  # a loaded machine may keep the server's answer past a read timeout: ask again
                return requests.get(f"{url}/deployments/name/publish-release/publish-release{suffix}", timeout=10).ok
            except requests.RequestException:
                return False

        wait_for("serve to register its deployments", registered, timeout=120, every=0.5)
        proc.kill()
        proc.wait(timeout=30)
        try:
            code = serving.wait(timeout=15)  # its next poll finds the server gone
        except subprocess.TimeoutExpired:
            serving.terminate()  # or an operator stops it
            code = serving.wait(timeout=120)
    finally:
        stop_process(serving)
        stop_prefect_server(proc)
    out = log.read_text()
    errors = [line for line in out.splitlines() if line.startswith("fma-release: error:")]
    assert code == 3, out[-3000:]
    assert len(errors) == 1 and url in errors[0] and "without pausing its deployments" in errors[0], out[-3000:]
    assert "Traceback" not in out and "internal error" not in out, out[-3000:]


def test_github_token_and_webhook_secret_from_secret_blocks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """GITHUB_TOKEN_BLOCK and GITHUB_WEBHOOK_SECRET_BLOCK name Prefect Secret blocks: the watcher's requests carry
    the block's token, the receiver gets the block's secret, and both values are masked."""
    name = uuid.uuid4().hex[:8]
    token, secret = f"block-token-{name}", f"block-secret-{name}"
    Secret(value=token).save(f"gh-token-{name}")
    Secret(value=secret).save(f"gh-hook-{name}")
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    monkeypatch.delenv("GITHUB_WEBHOOK_SECRET", raising=False)
    monkeypatch.setenv("GITHUB_TOKEN_BLOCK", f"gh-token-{name}")
    monkeypatch.setenv("GITHUB_WEBHOOK_SECRET_BLOCK", f"gh-hook-{name}")
    assert webhook_secret() == secret and secret not in redact(f"the secret is {secret}")
    with GitHubStub(token=token) as github:
        monkeypatch.setenv("GITHUB_API_URL", github.url)
        deployment = f"no-such-deployment-{name}"
        with pytest.raises(Exception, match="is not on the Prefect server"):
            watch_releases(repo="o/r", api_url=github.url, deployment=f"publish-release/{deployment}")
        from tasks.forge.github import list_releases

        github.add_release("o/r", "v0.1.0")
        assert [r.tag for r in list_releases("o/r", github.url)] == ["v0.1.0"]
        assert github.requests and all(r.authorized for r in github.requests)
    assert token not in redact(f"token {token}")
    monkeypatch.setenv("GITHUB_WEBHOOK_SECRET_BLOCK", f"no-such-block-{name}")
    with pytest.raises(Exception, match=f"cannot load the Prefect Secret block 'no-such-block-{name}'"):
        webhook_secret()


def task_ids(api: str, flow_run_id: str) -> set[str]:
    """The ids of a flow run's task runs, once the server has recorded its summary step as ended."""
    def ready() -> set[str] | None:
        runs = prefect_api.post(f"{api}/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}})
        done = any(r["name"].startswith("summary") and r["state_type"] == "COMPLETED" for r in runs)
        return {r["id"] for r in runs} if done else None

    return wait_for(f"the task runs of {flow_run_id}", ready, timeout=60, every=0.5)


def test_the_documented_upgrade_keeps_runs_deployments_and_records(
    registry: RegistryProcess, namespace: str, tmp_path: Path, prefect_template: Path,
) -> None:
    """docs/operations.md's upgrade on a server with a completed release in it: the database upgrade, the
    server's restart and `prefect deploy --all` again keep the run, its task runs and the deployment's id,
    and the tag's next run answers from its record."""
    home, state = tmp_path / "prefect", tmp_path / "state"
    suffix = uuid.uuid4().hex[:6]
    pool = f"fma-release-{suffix}"
    src = make_sample_source(tmp_path / "sample", tag="v0.3.1", images=("requester",), nonce=uuid.uuid4().hex)
    reg = f"{registry.host}/{namespace}"
    project_file = tmp_path / "prefect.yaml"
    project_file.write_text(project_yaml_for_test(suffix, f"fma-test/upgrade-{suffix}", pool, src, reg))

    def on(api: str, *args: str, program: str = CLI) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PREFECT_API_URL": api, "FMA_STATE_DIR": str(state), "PREFECT_CLI_PROMPT": "false"}
        return subprocess.run([program, *args], capture_output=True, text=True, timeout=300, check=False, env=env,
                              cwd=PROJECT_ROOT)

    prefect_cli = str(Path(sys.executable).with_name("prefect"))
    proc, api = start_prefect_server(home, ui=False, template=prefect_template)
    try:
        assert on(api, "work-pool", "create", pool, "--type", "process", program=prefect_cli).returncode == 0
        first = on(api, "--no-prompt", "deploy", "--all", "--prefect-file", str(project_file), program=prefect_cli)
        assert first.returncode == 0, first.stderr[-2000:]
        released = on(api, "run", src.tag, "--source", str(src.path), "--config", str(src.config), "--registry", reg)
        assert released.returncode == 0, released.stderr[-2000:]
        before = prefect_api.post(f"{api}/flow_runs/filter", {})
        (run,) = [r for r in before if r["name"] == f"release {src.tag}"]
        tasks_before = task_ids(api, run["id"])
        assert len(tasks_before) >= 4
        deployment_id = prefect_api.get(f"{api}/deployments/name/publish-release/publish-release-{suffix}")["id"]
    finally:
        stop_prefect_server(proc)

    env = {**os.environ, "PREFECT_HOME": str(home)}
    env.pop("PREFECT_API_DATABASE_CONNECTION_URL", None)
    upgraded = subprocess.run([prefect_cli, "server", "database", "upgrade", "-y"], capture_output=True, text=True,
                              timeout=300, check=False, env=env)
    assert upgraded.returncode == 0, upgraded.stdout[-2000:] + upgraded.stderr[-2000:]

    proc, api = start_prefect_server(home, ui=False)
    try:
        again = on(api, "--no-prompt", "deploy", "--all", "--prefect-file", str(project_file), program=prefect_cli)
        assert again.returncode == 0, again.stderr[-2000:]
        named = prefect_api.get(f"{api}/deployments/name/publish-release/publish-release-{suffix}")
        assert named["id"] == deployment_id
        kept = prefect_api.get(f"{api}/flow_runs/{run['id']}")
        assert kept["state_type"] == "COMPLETED"
        assert task_ids(api, run["id"]) == tasks_before
        rerun = on(api, "run", src.tag, "--source", str(src.path), "--config", str(src.config), "--registry", reg)
        assert rerun.returncode == 0 and "nothing changed" in rerun.stdout + rerun.stderr, rerun.stderr[-2000:]
    finally:
        stop_prefect_server(proc)
