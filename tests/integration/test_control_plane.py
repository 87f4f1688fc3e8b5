"""The release survives its control plane: the Prefect server stops mid-build and the run still
publishes everything, says so in one line, writes its summary and exits 0.

The server is this test's own (the session's serves the other tests); the CLI is the real one, a
subprocess pointed at it with PREFECT_API_URL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devkit.faultproxy import FaultProxy, Rule
from devkit.prefect_server import start_prefect_server, stop_prefect_server
from devkit.registry import RegistryProcess
from devkit.sample_source import FMA_IMAGES, SampleSource
from tasks.oci.registry import RegistryAPI

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).with_name("fma-release"))
SLOW = "launcher"
# What the console may carry: progress lines for 4 images and a chart, the outage line, the summary.
# Before this was handled one outage printed about 20 KB of Prefect's event dumps.
CONSOLE_BOUND = 6000


@pytest.fixture
def own_server(tmp_path: Path, prefect_template: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    # No browser reads it, and its tables come made: it starts sooner.
    proc, url = start_prefect_server(tmp_path / "prefect-home", ui=False, template=prefect_template)
    try:
        yield proc, url
    finally:
        if proc.poll() is None:
            stop_prefect_server(proc)


def test_server_stopped_mid_build_release_completes_and_says_so_once(
    own_server: tuple[subprocess.Popen[bytes], str], registry: RegistryProcess, namespace: str,
    sample: Callable[..., SampleSource], tmp_path: Path,
) -> None:
    server, url = own_server
    src = sample(sleeps={SLOW: 8}, nonce=uuid.uuid4().hex)  # a fresh build: it runs on after the server goes
    state = tmp_path / "state"
    out = tmp_path / "summary.json"
    proc, stdout, stderr, took = _run_losing_the_server(server, url, src, f"{registry.host}/{namespace}", state, out)
    print(f"server stopped -> CLI exit: {took:.1f} s")  # shown with -s; the report's figure

    assert proc.returncode == 0, stderr[-3000:]
    outage = [line for line in stderr.splitlines() if "Prefect server cannot be reached" in line]
    assert len(outage) == 1, stderr[-3000:]
    assert "EventsWorker" not in stderr + stdout and "Error logging to API" not in stderr
    assert "internal error" not in stderr
    assert len(stdout) + len(stderr) < CONSOLE_BOUND, f"{len(stdout) + len(stderr)} chars:\n{stderr[-3000:]}"

    # The one line names the log file, which has Prefect's own account of the outage.
    log_file = Path(outage[0].rsplit(" ", 1)[-1])
    assert log_file.is_relative_to(state) and log_file.is_file()
    assert "ConnectError" in log_file.read_text(encoding="utf-8")

    summary = json.loads(out.read_text())
    with RegistryAPI(registry.host) as api:
        for image in summary["images"]:
            assert api.digest(f"{namespace}/{image['name']}", src.tag) == image["digest"]
        assert {i["name"] for i in summary["images"]} == set(FMA_IMAGES)
        assert api.tags(f"{namespace}/charts/fma-controllers") == ["0.3.1"]
    assert [c["version"] for c in summary["charts"]] == ["0.3.1"]
    assert "helm install fma oci://" in stdout
    assert list((state / "releases").glob("*.json")), "the local release record was not written"


def _run_losing_the_server(
    server: subprocess.Popen[bytes], url: str, src: SampleSource, registry: str, state: Path, out: Path,
    *extra: str,
) -> tuple[subprocess.Popen[str], str, str, float]:
    """Start a release on the real CLI, stop its Prefect server once the slow image is building, and
    wait for the CLI's end: the process, its stdout and stderr, the seconds from the stop to the exit."""
    env = {**os.environ, "PREFECT_API_URL": url, "FMA_STATE_DIR": str(state)}
    env.pop("PREFECT_CLIENT_MAX_RETRIES", None)
    proc = subprocess.Popen(
        [CLI, "run", src.tag, "--source", str(src.path), "--registry", registry, "--config", str(src.config),
         "--summary-json", str(out), "--retry-delay", "0.1", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    assert proc.stderr is not None
    before: list[str] = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # the slow image is building: now the server goes
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            break
        before.append(line)
        if f"{SLOW}: building" in line:
            break
    assert any(f"{SLOW}: building" in line for line in before), "".join(before)[-2000:]
    stop_prefect_server(server)
    stopped = time.monotonic()
    stdout, rest = proc.communicate(timeout=300)
    return proc, stdout, "".join(before) + rest, time.monotonic() - stopped


def test_server_stopped_and_a_push_failing_exits_3_naming_both_with_nothing_half_published(
    own_server: tuple[subprocess.Popen[bytes], str], fault_proxy: FaultProxy, namespace: str,
    sample: Callable[..., SampleSource], tmp_path: Path,
) -> None:
    """The server goes mid-build and one image's push keeps failing: the release cannot finish. The
    exit is 3 (documented: the server went before everything was published), one line says so and how
    to finish, the failed push is named, and no chart points at images that are not there."""
    server, url = own_server
    failing = "requester"
    fault_proxy.add(Rule(repo_suffix=f"/{failing}", op="manifest_put", status=500))
    src = sample(sleeps={SLOW: 8}, nonce=uuid.uuid4().hex)
    proc, stdout, stderr, took = _run_losing_the_server(
        server, url, src, f"{fault_proxy.host}/{namespace}", tmp_path / "state", tmp_path / "summary.json",
        "--push-attempts", "2")
    print(f"server stopped, a push failing -> CLI exit: {took:.1f} s")

    assert proc.returncode == 3, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("fma-release: error:")]
    # The release's own error first, not hidden by the failed calls to the server after it; the outage
    # line last. (Before pushes took their build's result, the push could fail on a call to the gone
    # server instead, and the outage line came alone.)
    assert len(errors) == 2, stderr[-3000:]
    assert failing in errors[0] and "no chart was published" in errors[0], errors
    assert "cannot be reached and the release did not finish" in errors[1]
    assert "re-run the same tag" in errors[1]
    assert "FileNotFoundError" not in stderr  # the workspace outlives the builds running in it
    assert "EventsWorker" not in stderr + stdout and "internal error" not in stderr
    assert "Error logging to API" not in stderr
    assert len(stdout) + len(stderr) < CONSOLE_BOUND, f"{len(stdout) + len(stderr)} chars:\n{stderr[-3000:]}"
    assert fault_proxy.count(f"/{failing}", "manifest_put") >= 2
    with RegistryAPI(fault_proxy.host) as api:
        assert api.tags(f"{namespace}/{failing}") == []
        assert api.tags(f"{namespace}/charts/fma-controllers") == []


def test_the_data_plane_asks_the_server_nothing_about_its_own_task_runs(
    registry: RegistryProcess, namespace: str, sample: Callable[..., SampleSource], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A release learns how its builds, pushes and charts went from their futures in this process, never
    by reading a task run back from the Prefect server: such a read is what failed a push when the server
    went between a build's start and its push (CI saw the requester left unpushed, exit 3, 75 s). Prefect
    makes it for a task argument that is an unfinished future, so no task may take one."""
    from prefect.client.orchestration import PrefectClient, SyncPrefectClient

    from flows.release import release

    asked: list[str] = []
    for client in (SyncPrefectClient, PrefectClient):
        def spy(self: Any, task_run_id: Any, _read: Any = client.read_task_run) -> Any:
            asked.append(str(task_run_id))
            return _read(self, task_run_id)
        monkeypatch.setattr(client, "read_task_run", spy)
    src = sample(sleeps={SLOW: 2}, nonce=uuid.uuid4().hex)  # fresh builds: pushes wait for them

    result = release(tag=src.tag, source=str(src.path), registry=f"{registry.host}/{namespace}",
                     config=str(src.config), retry_base_delay=0.1)

    assert asked == []
    assert {image.name for image in result.images} == set(FMA_IMAGES)
    with RegistryAPI(registry.host) as api:
        for image in result.images:
            assert api.digest(f"{namespace}/{image.name}", src.tag) == image.digest
