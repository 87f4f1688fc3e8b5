"""Stopping a CLI run (Ctrl-C, Cancel in the Prefect UI) publishes nothing more, and a re-run resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from devkit.registry import RegistryProcess
from devkit.sample_source import FMA_IMAGES, SampleSource
from flows.release import release
from tasks.oci.registry import RegistryAPI

pytestmark = pytest.mark.integration

EXE = Path(sys.executable).with_name("fma-release")
SLOW = "launcher"
# The slow image's RUN step sleeps this long, a length no other test's build sleeps: the step's process is told
# apart from every other test's by it, so these tests run beside others.
SLOW_SECONDS = {"ctrl-c": 29, "ui-cancel": 27}
RESUME_SLOW_SECONDS = 20  # the resume test's slow step: long enough to be stopped in, never one of the above


def start_cli(src: SampleSource, registry: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(EXE), "run", src.tag, "--source", str(src.path), "--registry", registry, "--config", str(src.config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env or {**os.environ},
    )


def reporting_to_the_local_server(home: Path) -> dict[str, str]:
    """The environment of a run with no server configured and the local one (the suite's) answering."""
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    return {**env, "FMA_LOCAL_PREFECT_URL": os.environ["PREFECT_API_URL"], "PREFECT_HOME": str(home)}


def wait_for_lines(proc: subprocess.Popen[str], needles: list[str], timeout: float = 120) -> list[str]:
    """Read the CLI's progress lines until each needle has appeared in one of them."""
    assert proc.stderr is not None
    seen: list[str] = []
    missing = set(needles)
    deadline = time.monotonic() + timeout
    while missing and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        missing -= {n for n in missing if n in line}
    if missing:
        pytest.fail(f"the CLI never printed {sorted(missing)}; it printed: {''.join(seen)[-2000:]}")
    return seen


def processes_with(needle: str) -> list[str]:
    """Command lines of the machine's live processes that contain ``needle`` (zombies have none)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            try:
                line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue  # gone meanwhile
            if needle in line:
                found.append(line.strip())
    return found


def gone_within(needle: str, seconds: float) -> list[str]:
    """The processes with ``needle`` still there after ``seconds`` (none as soon as they are gone)."""
    deadline = time.monotonic() + seconds
    while (left := processes_with(needle)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def stop(proc: subprocess.Popen[str], how: str, slow: str) -> str:
    """Stop the CLI run the way ``how`` says once ``slow`` is building and the others are pushed; the run's id."""
    seen = wait_for_lines(proc, ["Prefect UI: http", f"{slow}: building"]
                          + [f"{n}: pushed" for n in FMA_IMAGES if n != slow])
    # The CLI prints the run's page in the UI; its last part is the flow run id.
    run_id = next(line for line in seen if "Prefect UI: " in line).strip().rsplit("/", 1)[-1]
    if how == "ctrl-c":
        proc.send_signal(signal.SIGINT)
    else:
        from prefect.client.orchestration import get_client
        from prefect.states import Cancelling

        with get_client(sync_client=True) as client:
            client.set_flow_run_state(run_id, Cancelling(), force=True)
    return run_id


@pytest.mark.parametrize("how", sorted(SLOW_SECONDS))
def test_stopping_a_run_stops_builds_and_publishes_no_chart(
    how: str, registry: RegistryProcess, namespace: str, sample: Callable[..., SampleSource], tmp_path: Path,
) -> None:
    """The run ends with 130 within seconds; the slow build's client (BuildKit's CLI, in a process group of
    its own) is killed with it and BuildKit stops the step; no chart. The run cancelled in the UI reports to
    the local server (PREFECT_API_URL unset), which only the CLI's main thread is told of: its watch for the
    cancel must read that server too."""
    src = sample(sleeps={SLOW: SLOW_SECONDS[how]}, nonce=uuid.uuid4().hex)  # nothing cached by dockerd
    reg = f"{registry.host}/{namespace}"
    proc = start_cli(src, reg, reporting_to_the_local_server(tmp_path / "home") if how == "ui-cancel" else None)
    try:
        run_id = stop(proc, how, SLOW)
        stopped_at = time.monotonic()
        code = proc.wait(timeout=30)
        assert code == 130
        assert time.monotonic() - stopped_at < 15
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read() if proc.stderr else ""
    assert "nothing more is published" in err

    # Both well before the step's own end: the run was stopped as the slow build started.
    assert gone_within(f"{namespace}/{SLOW}:", 5) == [], "the build's client outlived the run"
    assert gone_within(f"busybox sleep {SLOW_SECONDS[how]}", 10) == [], "the slow build's step kept running"
    with RegistryAPI(registry.host) as api:
        assert api.tags(f"{namespace}/charts/fma-controllers") == []
        assert api.tags(f"{namespace}/{SLOW}") == []
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run_id).state
    assert state is not None and state.name == "Cancelled"


def test_a_run_stopped_with_ctrl_c_is_resumed_by_the_next_run(
    registry: RegistryProcess, namespace: str, sample: Callable[..., SampleSource],
    events: list[tuple[str, str, str]],
) -> None:
    """After Ctrl-C (nothing more published), the same release again builds only the image that was left and
    publishes the chart. (No process-table check here: it runs beside other tests; its slow step is shorter.)"""
    src = sample(sleeps={SLOW: RESUME_SLOW_SECONDS}, nonce=uuid.uuid4().hex)
    reg = f"{registry.host}/{namespace}"
    proc = start_cli(src, reg)
    try:
        stop(proc, "ctrl-c", SLOW)
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "nothing more is published" in (proc.stderr.read() if proc.stderr else "")
    with RegistryAPI(registry.host) as api:
        assert api.tags(f"{namespace}/charts/fma-controllers") == []
        assert api.tags(f"{namespace}/{SLOW}") == []
    from prefect.client.orchestration import get_client

    from tasks.control.slots import holder_variable
    from tests.integration.prefect_helpers import slot_limit

    with get_client(sync_client=True) as client:  # the slot freed, and no record of a holder left behind
        assert client.read_global_concurrency_limit_by_name(slot_limit(src.tag)).active_slots == 0
        assert client.read_variable_by_name(holder_variable(slot_limit(src.tag))) is None

    events.clear()
    summary = release(tag=src.tag, source=str(src.path), registry=reg, config=str(src.config),
                      retry_base_delay=0.1).summary()
    assert [item for item, state, _ in events if state == "building"] == [SLOW]
    statuses = {i["name"]: i["status"] for i in summary["images"]}
    assert statuses == {name: ("pushed" if name == SLOW else "already published") for name in FMA_IMAGES}
    assert summary["charts"][0]["status"] == "pushed"
