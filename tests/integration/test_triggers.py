"""A signed GitHub webhook becomes a completed publish-release run, through `fma-release serve`."""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import os
import random
import re
import shutil
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from prefect import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.exceptions import ObjectNotFound

from devkit.processes import stop_process
from devkit.registry import RegistryProcess, free_port
from devkit.sample_source import FMA_IMAGES, SampleSource, make_sample_source
from flows.events import SUCCEEDED
from tasks.oci.registry import RegistryAPI
from tasks.run.options import OPTIONS, as_markdown
from tests.integration.prefect_helpers import events, wait_for

pytestmark = pytest.mark.integration
CLI = str(Path(sys.executable).with_name("fma-release"))
SECRET = "whsec-" + uuid.uuid4().hex
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@dataclass
class Served:
    repo: str
    src: SampleSource
    namespace: str
    deployment_id: uuid.UUID
    webhook_url: str
    tmp: Path
    promote_id: uuid.UUID  # promote-release, served with --promote-to
    promote_to: str

    def deliver(self, tag: str, delivery: str, secret: str = SECRET) -> requests.Response:
        body = json.dumps({"action": "published", "release": {"tag_name": tag, "html_url": "x"},
                           "repository": {"full_name": self.repo}}).encode()
        signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return requests.post(self.webhook_url, data=body, timeout=10, headers={
            "X-GitHub-Event": "release", "X-GitHub-Delivery": delivery, "X-Hub-Signature-256": signature,
            "Content-Type": "application/json"})


def _spawn(args: list[str], log: Path, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([CLI, *args], stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            env={**os.environ, **env})


def deployment_runs(deployment_id: uuid.UUID) -> list[Any]:
    with get_client(sync_client=True) as client:
        return list(client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))))


@pytest.fixture(scope="module")
def served(registry: RegistryProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`fma-release serve` (the three deployments) and `fma-release webhook`, as real processes, for a repo of its
    own."""
    tmp = tmp_path_factory.mktemp("served")
    repo = f"fma-test/fma-{uuid.uuid4().hex[:8]}"  # the trigger matches this repository only
    src = make_sample_source(tmp / "sample", tag="v0.3.1", nonce=uuid.uuid4().hex)
    namespace = f"t{uuid.uuid4().hex[:10]}/fma"
    promote_to = f"{registry.host}/t{uuid.uuid4().hex[:10]}/fma"
    serve = _spawn(["serve", "--source", str(src.path), "--config", str(src.config),
                    "--registry", f"{registry.host}/{namespace}", "--repo", repo, "--watch-interval", "0",
                    "--promote-to", promote_to],
                   tmp / "serve.log", PREFECT_RUNNER_POLL_INTERVAL="1")
    port = free_port()
    hook = _spawn(["webhook", "--port", str(port), "--repository", repo], tmp / "webhook.log",
                  GITHUB_WEBHOOK_SECRET=SECRET)
    ids: list[uuid.UUID] = []
    try:
        def trigger_ready() -> uuid.UUID | None:
            assert serve.poll() is None, (tmp / "serve.log").read_text()
            with get_client(sync_client=True) as client:
                try:
                    deployment = client.read_deployment_by_name("publish-release/publish-release")
                    ids[:] = [deployment.id, client.read_deployment_by_name("watch-releases/watch-releases").id,
                              client.read_deployment_by_name("promote-release/promote-release").id]
                except ObjectNotFound:
                    return None
                automations = client.read_resource_related_automations(f"prefect.deployment.{deployment.id}")
            return deployment.id if automations and deployment.parameters.get("source") == str(src.path) else None

        deployment_id = wait_for("publish-release to be served with its trigger", trigger_ready, timeout=90)

        def hook_up() -> bool:
            assert hook.poll() is None, (tmp / "webhook.log").read_text()
            try:
                return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok
            except requests.ConnectionError:
                return False

        wait_for("the webhook receiver", hook_up, timeout=30)
        yield Served(repo, src, namespace, deployment_id, f"http://127.0.0.1:{port}/github/webhook", tmp, ids[2],
                     promote_to)
    finally:
        stop_process(hook)
        stop_process(serve)
        with get_client(sync_client=True) as client:
            for deployment_id in ids:  # its trigger goes with it: later events start nothing
                client.delete_deployment(deployment_id)
        for log in ("serve.log", "webhook.log"):
            assert SECRET not in (tmp / log).read_text()


@pytest.fixture(scope="module")
def released(served: Served, registry: RegistryProcess) -> Any:
    """The flow run a signed release-published webhook started, once Completed."""
    delivery = str(uuid.uuid4())
    assert served.deliver("v0.3.1", delivery).status_code == 202
    assert served.deliver("v0.3.1", delivery).status_code == 202  # GitHub redelivers: still one run
    assert served.deliver("v0.3.2", str(uuid.uuid4()), secret="forged").status_code == 401

    def finished() -> Any:
        runs = deployment_runs(served.deployment_id)
        done = [r for r in runs if r.state and r.state.is_final()]
        return done[0] if done else None

    run = wait_for("the triggered release run to finish", finished, timeout=300, every=0.5)
    assert run.state.is_completed(), f"{run.state.name}: {run.state.message}"
    return run


def test_signed_webhook_starts_a_completed_release_of_that_tag(
    served: Served, released: Any, registry: RegistryProcess,
) -> None:
    """Webhook -> event -> trigger -> publish-release(tag=v0.3.1) Completed; the chart is in the registry."""
    assert released.parameters["tag"] == "v0.3.1"
    assert released.parameters["source"] == str(served.src.path)  # the deployment's defaults fill the rest
    assert released.name == "release v0.3.1"
    with RegistryAPI(registry.host) as api:
        assert "0.3.1" in api.tags(f"{served.namespace}/charts/fma-controllers")
        assert api.tags(f"{served.namespace}/requester") == ["v0.3.1"]


def test_completed_release_emits_succeeded_event_with_references(released: Any) -> None:
    """fma.release.succeeded for the tag, related to the run, lists every image reference with its digest."""

    def for_this_run() -> list[Any]:
        return [e for e in events(SUCCEEDED, "fma.release.v0.3.1")
                if f"prefect.flow-run.{released.id}" in {r.id for r in e.related}]

    (event,) = wait_for("the success event of the run", for_this_run)
    assert event.resource["fma.release.tag"] == "v0.3.1"
    images = event.payload["images"]
    assert len(images) == len(FMA_IMAGES) and all("@sha256:" in i for i in images)
    assert event.payload["charts"] and event.payload["charts"][0].endswith("fma-controllers:0.3.1")


def test_replayed_and_forged_deliveries_started_nothing(served: Served, released: Any) -> None:
    """The redelivered webhook and the forged one made no second run."""
    runs = deployment_runs(served.deployment_id)
    assert [r.parameters["tag"] for r in runs if r.parameters["tag"] != PINNED_TAG] == ["v0.3.1"]


def browse(url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium on ``url`` (``--dump-dom``: the rendered page; ``--screenshot=...``)."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is not installed; run: bash scripts/setup.sh")
    ARTIFACTS.mkdir(exist_ok=True)
    profile = ARTIFACTS / f".chromium-{uuid.uuid4().hex[:6]}"
    try:
        return subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
             "--window-size=1400,1400", "--virtual-time-budget=15000", *extra, url],
            capture_output=True, text=True, timeout=120, check=False,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def page_text(url: str, ready: Callable[[str], bool], name: str) -> str:
    """The text a user reads on ``url`` (tags dropped, entities read), once ``ready`` says the page has rendered
    (a busy machine can leave the first paint at the loading screen: up to three tries)."""
    text = ""
    for _ in range(3):
        dom = browse(url, "--dump-dom")
        assert dom.returncode == 0, dom.stderr[-2000:]
        (ARTIFACTS / name).write_text(dom.stdout)
        text = html.unescape(" ".join(re.sub(r"<[^>]+>", " ", dom.stdout).split()))
        if ready(text):
            break
    return text


def test_ui_run_form_shows_each_option_as_written(served: Served) -> None:
    """The deployment's parameter schema holds each option's help, Markdown-escaped, and the UI's run form renders
    it as written: `oci://<registry>/charts` and `<state dir>` keep their angle brackets (unescaped, the form
    swallowed them as HTML and showed `oci:///charts`)."""
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment(served.deployment_id)
    properties = (deployment.parameter_openapi_schema or {})["properties"]
    for option in OPTIONS:
        assert properties[option.name]["description"] == as_markdown(option.help), option.name
    ui = os.environ["PREFECT_API_URL"].removesuffix("/api")
    text = page_text(f"{ui}/deployments/deployment/{served.deployment_id}/run",
                     lambda text: OPTIONS[0].help in text, "prefect-ui-run-form.html")
    for option in OPTIONS:
        assert " ".join(option.help.split()) in text, f"{option.name}: {option.help!r} not on the form"
    assert "oci://<registry>/charts" in text and "under <state dir>/workspaces" in text
    assert "oci:///charts" not in text and "\\<" not in text


def test_task_runs_record_and_show_a_retry_delay_in_seconds(released: Any) -> None:
    """A push's task run records its retry delay as a number (the first wait), and its page in the UI shows it in
    seconds, never "NaNs"."""
    from tests.integration.prefect_helpers import recorded_task_runs

    runs = recorded_task_runs(released.id, "push ")
    pushes = [r for r in runs if r.name.startswith("push ")]
    assert pushes and all(isinstance(r.empirical_policy.retry_delay, int | float) for r in pushes)
    assert {r.empirical_policy.retry_delay for r in pushes} == {2.0}  # the deployment's default first wait
    assert all(r.empirical_policy.retries == 4 for r in pushes)
    named = {r.name.split(" ", 1)[0] for r in runs}
    assert {"checkout", "summary", "build", "push"} <= named and not [r.name for r in runs if "-" in r.name.split()[0]]
    ui = os.environ["PREFECT_API_URL"].removesuffix("/api")
    text = page_text(f"{ui}/runs/task-run/{pushes[0].id}", lambda text: "Retry Delay" in text,
                     "prefect-ui-push-task-run.html")
    assert "Retry Delay 2s" in text and "NaN" not in text


def test_ui_flow_run_page_shows_build_and_push_tasks(released: Any) -> None:
    """Headless Chromium renders the run in the Prefect UI: its task runs list build and push tasks."""
    ui = os.environ["PREFECT_API_URL"].removesuffix("/api")
    page = f"{ui}/v2/runs/flow-run/{released.id}"

    # A busy machine can leave the first paint at the UI's loading screen (its title only): page_text tries again.
    text = page_text(f"{page}?tab=TaskRuns", lambda seen: "release v0.3.1" in seen and "build " in seen,
                     "prefect-ui-release-run-tasks.html")
    assert "release v0.3.1" in text and "Completed" in text
    builds = set(re.findall(r"build ([a-z-]+) Completed", text))
    pushes = set(re.findall(r"push ([a-z-]+) Completed", text))
    assert builds == pushes == set(FMA_IMAGES), f"build/push tasks missing on the page: {text[:600]}"
    shots = {"prefect-ui-release-run.png": page, "prefect-ui-release-run-tasks.png": f"{page}?tab=TaskRuns"}
    for name, url in shots.items():
        shot = ARTIFACTS / name
        for _ in range(3):  # a busy machine can leave the page's first paint at the loading screen
            shot.unlink(missing_ok=True)
            done = browse(url, f"--screenshot={shot}")
            assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
            if shot.stat().st_size > 10_000:
                break
        assert shot.stat().st_size > 10_000, f"{name}: the page rendered nearly empty three times"


def test_webhook_burst_gives_one_run_per_tag(served: Served, released: Any) -> None:
    """50 deliveries for 10 tags at once, each tag under three delivery ids and two of them sent twice,
    racing each other: ten announcements, ten events, one publish-release run per tag."""
    tags = [f"v9.{i}.{uuid.uuid4().int % 1000}" for i in range(10)]
    sends: list[tuple[str, str]] = []
    for tag in tags:
        ids = [str(uuid.uuid4()) for _ in range(3)]
        sends += [(tag, ids[0]), (tag, ids[0]), (tag, ids[1]), (tag, ids[1]), (tag, ids[2])]
    random.Random(15).shuffle(sends)  # noqa: S311 - an order of the sends, not a secret
    with ThreadPoolExecutor(max_workers=25) as pool:
        answers = list(pool.map(lambda send: served.deliver(*send), sends))
    assert len(answers) == 50 and all(a.status_code == 202 for a in answers), [a.text for a in answers]
    announced = [tag for (tag, _), a in zip(sends, answers, strict=True) if a.json()["message"].endswith("announced")]
    assert sorted(announced) == sorted(tags)

    def ten_events() -> list[Any] | None:
        found = [e for e in events("github.release.published")
                 if e.resource.get("github.repository") == served.repo and e.resource.get("github.tag") in tags]
        return found if len(found) >= len(tags) else None

    assert len(wait_for("the ten events", ten_events, timeout=60)) == len(tags)

    def runs_per_tag() -> dict[str, int] | None:
        counts = Counter(r.parameters["tag"] for r in deployment_runs(served.deployment_id)
                         if r.parameters.get("tag") in tags)
        return dict(counts) if set(counts) == set(tags) else None

    # Each event starts at most one run (triggers act once per event id), so ten events, ten runs.
    assert wait_for("a run of each tag", runs_per_tag, timeout=120, every=0.5) == dict.fromkeys(tags, 1)


PINNED_TAG = "v0.3.9"  # a tag of its own: the run below must fail before it looks for the tag


def test_a_deployment_run_cannot_change_what_the_deployment_pins(served: Served, registry: RegistryProcess) -> None:
    """A run of the served deployment that sets `source` (as the UI form or an event could) fails in one
    line naming the option and FMA_FORM_FIELDS; nothing of it reaches the registry."""
    with get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(
            served.deployment_id, parameters={"tag": PINNED_TAG, "source": "https://attacker.invalid/fma.git"})

    def finished() -> Any:
        with get_client(sync_client=True) as client:
            found = client.read_flow_run(run.id)
        return found if found.state and found.state.is_final() else None

    ended = wait_for("the run with a pinned option changed to end", finished, timeout=120, every=0.5)
    assert ended.state.is_failed(), ended.state.name
    message = ended.state.message or ""
    assert "changes source" in message and "FMA_FORM_FIELDS=source" in message, message
    with RegistryAPI(registry.host) as api:
        assert PINNED_TAG not in api.tags(f"{served.namespace}/requester")


def test_a_served_promote_release_run_promotes_the_published_release(served: Served, released: Any,
                                                                      registry: RegistryProcess) -> None:
    """promote-release, served with --promote-to: a run given only the tag (as from the UI) copies the release the
    webhook published to the destination, same digests, chart packaged for it; a run that changes to_registry
    fails in one line naming it, and nothing of it reaches that registry path."""
    with get_client(sync_client=True) as client:
        good = client.create_flow_run_from_deployment(served.promote_id, parameters={"tag": "v0.3.1"})
        evil = client.create_flow_run_from_deployment(
            served.promote_id, parameters={"tag": "v0.3.1", "to_registry": f"{registry.host}/evil/fma"})

    def ended(run_id: uuid.UUID) -> Any:
        with get_client(sync_client=True) as client:
            found = client.read_flow_run(run_id)
        return found if found.state and found.state.is_final() else None

    done = wait_for("the promotion run to end", lambda: ended(good.id), timeout=300, every=0.5)
    refused = wait_for("the run changing to_registry to end", lambda: ended(evil.id), timeout=120, every=0.5)
    assert done.state.is_completed(), f"{done.state.name}: {done.state.message}"
    assert refused.state.is_failed() and "changes to_registry" in (refused.state.message or "")
    path = served.promote_to.split("/", 1)[1]
    with RegistryAPI(registry.host) as api:
        for name in ("requester", "dual-pods-controller"):
            assert api.digest(f"{path}/{name}", "v0.3.1") == api.digest(f"{served.namespace}/{name}", "v0.3.1")
        assert api.tags(f"{path}/charts/fma-controllers") == ["0.3.1"]
        assert api.tags("evil/fma/requester") == []
