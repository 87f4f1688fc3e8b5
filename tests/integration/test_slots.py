"""Tag slots held by runs that are gone: a waiting run says who holds the slot, ends on Cancel, and
takes the slot from a run killed with SIGKILL.

The runs here keep the slot's clock short through the settings (FMA_SLOT_*: a 10 s stale bound, where
the product waits 45 s); the behaviour checked is the same."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from prefect import get_client
from prefect.client.schemas.objects import StateType
from prefect.states import Cancelling

from devkit import prefect_api
from devkit.processes import stop_process
from devkit.registry import RegistryProcess
from devkit.sample_source import SampleSource
from tasks.control.slots import SlotHolder, holder_variable
from tests.integration.prefect_helpers import slot_limit, wait_for
from tests.integration.test_concurrency import ARTIFACTS, CLI, IMAGES, flow_runs_of

pytestmark = pytest.mark.integration
STALE_SECONDS = 10.0  # a holder silent this long is gone (the product's default is 45 s)


@pytest.fixture(autouse=True)
def short_slot_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every run these tests start (CLI, serve) judges holders on a short clock: its settings say so."""
    monkeypatch.setenv("FMA_SLOT_STALE_SECONDS", str(STALE_SECONDS))
    monkeypatch.setenv("FMA_SLOT_HEARTBEAT_SECONDS", "2")
    monkeypatch.setenv("FMA_SLOT_WAIT_STEP_SECONDS", "1")


def _holder(tag: str) -> SlotHolder | None:
    with get_client(sync_client=True) as client:
        var = client.read_variable_by_name(holder_variable(slot_limit(tag)))
    return None if var is None else SlotHolder.from_json(var.value)


def _run(src: SampleSource, registry: str, tmp: Path) -> tuple[subprocess.Popen[str], Path]:
    """A CLI dry run of the sample's tag, and the file its output goes to."""
    log = tmp / f"run-{uuid.uuid4().hex[:6]}.log"
    proc = subprocess.Popen(
        [CLI, "run", src.tag, "--source", str(src.path), "--config", str(src.config), "--registry", registry,
         "--dry-run"], stdout=log.open("w"), stderr=subprocess.STDOUT, text=True, env=dict(os.environ))
    return proc, log


def test_waiting_run_names_the_holder_ends_on_cancel_and_a_killed_holder_s_slot_is_taken(
    registry: RegistryProcess, namespace: str, sample: Callable[..., SampleSource], tmp_path: Path,
) -> None:
    tag = f"v0.{uuid.uuid4().int % 10_000}.3"
    src = sample(tag=tag, images=IMAGES, sleeps=dict.fromkeys(IMAGES, 90), nonce=uuid.uuid4().hex)
    reg = f"{registry.host}/{namespace}"
    holder_proc, _ = _run(src, reg, tmp_path)
    holder = wait_for("the first run to record itself as the slot's holder", lambda: _holder(tag), timeout=120)

    # A second run waits, and says which run holds the slot.
    waiter, waiter_log = _run(src, reg, tmp_path)
    wait_for("the waiting run to name the holder",
             lambda: f"waiting: {slot_limit(tag)} held by flow run {holder.flow_run_id}" in waiter_log.read_text(),
             timeout=120)
    waiting = [r for r in flow_runs_of(tag, src.path) if r.id != holder.flow_run_id]
    assert len(waiting) == 1
    # Cancel from the UI = the run's state set to Cancelling; the waiting run ends promptly.
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(waiting[0].id, Cancelling(), force=True)
    assert waiter.wait(timeout=60) != 0
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(waiting[0].id).state.type is StateType.CANCELLED

    # The holder dies without a word; the next run of the tag takes its slot and completes. The slot is the
    # tag's whatever the source: this run's source is the same tag without the long build steps.
    assert holder_proc.poll() is None, "the holder ended before it was killed: its builds were too short"
    holder_proc.send_signal(signal.SIGKILL)
    holder_proc.wait(timeout=30)
    killed = time.monotonic()
    quick = sample(tag=tag, images=IMAGES, nonce=uuid.uuid4().hex)
    taker, taker_log = _run(quick, reg, tmp_path)
    wait_for("the next run to take the slot over",
             lambda: f"slot taken over: {slot_limit(tag)} from flow run {holder.flow_run_id}" in taker_log.read_text(),
             timeout=STALE_SECONDS + 120)
    took = time.monotonic() - killed
    assert taker.wait(timeout=600) == 0, [p.read_text()[-3000:] for p in tmp_path.glob("run-*.log")]
    text = "\n".join(p.read_text() for p in tmp_path.glob("run-*.log"))
    assert f"slot taken over: {slot_limit(tag)} from flow run {holder.flow_run_id}" in text
    assert len(text) < 200_000  # waiting is a line per change of holder, not a line per poll
    assert "failed to process item" not in waiter_log.read_text()  # no library noise per wait step
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(slot_limit(tag))
    assert limit.active_slots == 0 and _holder(tag) is None
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "slots.json").write_text(json.dumps(
        {"sigkill_to_slot_taken_s": took, "stale_after_s": STALE_SECONDS}, indent=2))


def _run_on(api_url: str, src: SampleSource, registry: str, tmp: Path) -> tuple[subprocess.Popen[str], Path]:
    """A CLI run (pushing) of the sample's tag, reporting to the Prefect server at ``api_url``."""
    log = tmp / f"run-{uuid.uuid4().hex[:6]}.log"
    env = {**os.environ, "PREFECT_API_URL": api_url}
    proc = subprocess.Popen(
        [CLI, "run", src.tag, "--source", str(src.path), "--config", str(src.config), "--registry", registry],
        stdout=log.open("w"), stderr=subprocess.STDOUT, text=True, env=env)
    return proc, log


def _variable_on(api_url: str, name: str) -> str | None:
    found = prefect_api.post(f"{api_url}/variables/filter", {"variables": {"name": {"any_": [name]}}})
    return json.dumps(found[0]["value"]) if found else None


def _limit_on(api_url: str, name: str) -> dict[str, object]:
    body: dict[str, object] = prefect_api.get(f"{api_url}/v2/concurrency_limits/{name}")
    return body


def test_a_server_restart_mid_release_leaves_a_dead_run_s_slot_to_the_next_run_and_a_live_run_frees_its_own(
    registry: RegistryProcess, namespace: str, sample: Callable[..., SampleSource], tmp_path: Path,
    prefect_template: Path,
) -> None:
    """A Prefect server of the test's own is killed (SIGKILL) while the releases of two tags build, each run holding
    its tag's slot, and starts again on its database and port. The server has lost both leases (they live in its
    memory) but still counts both slots.

    The first run went down with its control plane (SIGKILL): its slot still counts; the same tag run again waits,
    takes the slot over, publishes what was missing, and does not rebuild the image already pushed.

    The second run survives: it ends whole, frees its slot by lowering the count itself, and deletes its record: the
    next run of its tag waits for nothing."""
    from devkit.prefect_server import start_prefect_server, stop_prefect_server
    from devkit.proctree import kill_tree
    from devkit.registry import free_port
    from tasks.oci.registry import RegistryAPI

    fast, slow = IMAGES
    tag = f"v0.{uuid.uuid4().int % 10_000}.5"  # the run killed with the server
    src = sample(tag=tag, images=IMAGES, sleeps={fast: 0, slow: 30}, nonce=uuid.uuid4().hex)
    reg = f"{registry.host}/{namespace}"
    # The surviving run: a tag and a registry path of its own, so that the first run's images and chart are its own.
    live_tag = f"v0.{uuid.uuid4().int % 10_000}.8"
    live_src = sample(tag=live_tag, images=IMAGES, sleeps=dict.fromkeys(IMAGES, 30), nonce=uuid.uuid4().hex)
    live_reg = f"{registry.host}/{namespace}-live"
    home, port = tmp_path / "prefect-home", free_port()
    server, url = start_prefect_server(home, ui=False, template=prefect_template, port=port)
    procs: list[subprocess.Popen[str]] = []
    try:
        first, _ = _run_on(url, src, reg, tmp_path)
        procs.append(first)
        live, live_log = _run_on(url, live_src, live_reg, tmp_path)
        procs.append(live)
        var, live_var = holder_variable(slot_limit(tag)), holder_variable(slot_limit(live_tag))
        wait_for("the first run to hold the slot", lambda: _variable_on(url, var), timeout=180)
        wait_for("the second run to hold its slot", lambda: _variable_on(url, live_var), timeout=180)
        with RegistryAPI(registry.host) as api:
            wait_for(f"{fast} to be pushed", lambda: tag in api.tags(f"{namespace}/{fast}"), timeout=180)
            fast_digest = api.digest(f"{namespace}/{fast}", tag)
        assert live.poll() is None, "the second run ended before the server was killed: its builds were too short"
        kill_tree(server.pid)
        server.wait()
        first.send_signal(signal.SIGKILL)  # the first run went down with its control plane
        first.wait(timeout=30)
        with RegistryAPI(registry.host) as api:  # else the next run would have nothing left to publish
            assert tag not in api.tags(f"{namespace}/{slow}"), f"{slow} was pushed before the run was killed"
        server, url = start_prefect_server(home, ui=False, port=port)
        assert _limit_on(url, slot_limit(tag))["active_slots"] == 1  # counted, with no lease behind it

        second, log = _run_on(url, src, reg, tmp_path)
        procs.append(second)
        assert live.wait(timeout=600) == 0, live_log.read_text()[-3000:]
        assert _limit_on(url, slot_limit(live_tag))["active_slots"] == 0
        assert _variable_on(url, live_var) is None

        assert second.wait(timeout=600) == 0, log.read_text()[-3000:]
        out = log.read_text()
        assert f"waiting: {slot_limit(tag)} held by flow run" in out
        assert f"slot taken over: {slot_limit(tag)}" in out
        assert f"{fast}: building" not in out  # answered from the registry, not rebuilt
        assert len(out) < 50_000
        with RegistryAPI(registry.host) as api:
            assert api.digest(f"{namespace}/{fast}", tag) == fast_digest
            assert tag in api.tags(f"{namespace}/{slow}")
            assert api.tags(f"{namespace}/charts/fma-controllers")
        assert _limit_on(url, slot_limit(tag))["active_slots"] == 0
        assert _variable_on(url, var) is None
    finally:
        for proc in procs:
            stop_process(proc)
        stop_prefect_server(server)


def _api(method: str, url: str, body: object = None) -> object:
    return prefect_api.call(method, url, body)


def _state(url: str, run_id: str) -> str:
    run = _api("GET", f"{url}/flow_runs/{run_id}")
    assert isinstance(run, dict)
    return str(run["state"]["type"]) if run.get("state") else ""


def _waiting_logged(url: str, run_id: str, tag: str) -> bool:
    logs = _api("POST", f"{url}/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200})
    assert isinstance(logs, list)
    return any(f"waiting for {slot_limit(tag)}: held by flow run" in entry["message"] for entry in logs)


def test_served_run_waiting_for_the_slot_ends_on_cancel_and_on_sigterm_to_serve(
    registry: RegistryProcess, namespace: str, sample: Callable[..., SampleSource], tmp_path: Path,
    prefect_template: Path,
) -> None:
    """`fma-release serve` (on a Prefect server of the test's own, so its deployment names are its own):
    a run from the deployment's form waits for a slot a CLI run holds, logs who holds it, and ends
    Cancelled on Cancel; a second waiting run ends when `serve` gets SIGTERM."""
    from devkit.prefect_server import start_prefect_server, stop_prefect_server

    tag = f"v0.{uuid.uuid4().int % 10_000}.9"
    src = sample(tag=tag, images=IMAGES, sleeps=dict.fromkeys(IMAGES, 240), nonce=uuid.uuid4().hex)
    reg = f"{registry.host}/{namespace}"
    server, url = start_prefect_server(tmp_path / "prefect-home", ui=False, template=prefect_template)
    env = {**os.environ, "PREFECT_API_URL": url, "PREFECT_RUNNER_POLL_INTERVAL": "1"}
    holder = serve = None
    try:
        holder = subprocess.Popen(
            [CLI, "run", tag, "--source", str(src.path), "--config", str(src.config), "--registry", reg,
             "--dry-run"], stdout=(tmp_path / "holder.log").open("w"), stderr=subprocess.STDOUT, env=env)
        var = holder_variable(slot_limit(tag))
        wait_for("the CLI run to hold the slot", lambda: _variable_on(url, var), timeout=180)
        serve_log = tmp_path / "serve.log"
        serve = subprocess.Popen(
            [CLI, "serve", "--source", str(src.path), "--config", str(src.config), "--registry", reg, "--dry-run",
             "--repo", f"fma-test/slots-{uuid.uuid4().hex[:6]}", "--watch-interval", "0"],
            stdout=serve_log.open("w"), stderr=subprocess.STDOUT, env=env)

        def deployment() -> str | None:
            assert serve is not None and serve.poll() is None, serve_log.read_text()[-3000:]
            found = _api("POST", f"{url}/deployments/filter",
                         {"deployments": {"name": {"any_": ["publish-release"]}}})
            assert isinstance(found, list)
            return str(found[0]["id"]) if found else None

        deployment_id = wait_for("publish-release to be served", deployment, timeout=120)

        def start_waiting_run() -> str:
            run = _api("POST", f"{url}/deployments/{deployment_id}/create_flow_run", {"parameters": {"tag": tag}})
            assert isinstance(run, dict)
            run_id = str(run["id"])
            wait_for("the served run to log who holds the slot", lambda: _waiting_logged(url, run_id, tag),
                     timeout=180, every=0.5)
            return run_id

        cancelled = start_waiting_run()
        _api("POST", f"{url}/flow_runs/{cancelled}/set_state",
             {"state": {"type": "CANCELLING", "name": "Cancelling"}, "force": True})
        wait_for("the cancelled run to end", lambda: _state(url, cancelled) == "CANCELLED", timeout=60)

        stopped = start_waiting_run()
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=90) is not None
        wait_for("the waiting run to end with serve",
                 lambda: _state(url, stopped) in {"CANCELLED", "CRASHED", "FAILED"}, timeout=60)
        assert "failed to process item" not in serve_log.read_text()
        assert len(serve_log.read_text()) < 200_000
    finally:
        if holder is not None and holder.poll() is None:
            # Ctrl-C: the CLI stops its builds at once (Prefect's own SIGTERM handler, installed while a flow
            # runs, keeps a SIGTERM from reaching the CLI's for as long as the build step sleeps).
            holder.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                holder.wait(timeout=15)
        for proc in (serve, holder):
            if proc is not None:
                stop_process(proc)
        stop_prefect_server(server)


def test_a_slot_counted_with_no_holder_record_is_taken_and_the_run_says_so(
    registry: RegistryProcess, namespace: str, sample: Callable[..., SampleSource], tmp_path: Path,
) -> None:
    """As the issue saw it after a server restart: release-<tag> counts one active slot, no lease, no run
    recorded as holder. The run says so, waits out the stale bound, takes the slot and completes."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    tag = f"v0.{uuid.uuid4().int % 10_000}.5"
    src = sample(tag=tag, images=IMAGES[:1], nonce=uuid.uuid4().hex)
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name=slot_limit(tag), limit=1, active_slots=1))
    started = time.monotonic()
    proc, log = _run(src, f"{registry.host}/{namespace}", tmp_path)
    assert proc.wait(timeout=STALE_SECONDS + 240) == 0, log.read_text()[-3000:]
    took = time.monotonic() - started
    text = log.read_text()
    assert f"waiting: {slot_limit(tag)} held by a run that left no record" in text
    assert f"slot taken over: {slot_limit(tag)} from a run that left no record" in text
    assert took > STALE_SECONDS  # it did wait out the bound before taking a slot it cannot attribute
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name(slot_limit(tag)).active_slots == 0


def test_a_holder_killed_on_this_host_is_taken_over_without_waiting_out_the_stale_bound(
    registry: RegistryProcess, namespace: str, sample: Callable[..., SampleSource], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The record names the holder's host and process: a run on the same host that finds the process gone
    takes the slot at its next looks, marks the dead run Crashed, and completes. The stale bound here is
    an hour, so nothing but the process table can have freed the slot."""
    monkeypatch.setenv("FMA_SLOT_STALE_SECONDS", "3600")
    tag = f"v0.{uuid.uuid4().int % 10_000}.7"
    src = sample(tag=tag, images=IMAGES, sleeps=dict.fromkeys(IMAGES, 90), nonce=uuid.uuid4().hex)
    reg = f"{registry.host}/{namespace}"
    holder_proc, _ = _run(src, reg, tmp_path)
    holder = wait_for("the first run to record itself as the slot's holder", lambda: _holder(tag), timeout=120)
    assert holder.process is not None and holder.process.pid == holder_proc.pid
    assert holder.host is not None and holder.host.boot

    holder_proc.send_signal(signal.SIGKILL)
    holder_proc.wait(timeout=30)
    taker, taker_log = _run(sample(tag=tag, images=IMAGES, nonce=uuid.uuid4().hex), reg, tmp_path)
    assert taker.wait(timeout=600) == 0, taker_log.read_text()[-3000:]
    out = taker_log.read_text()
    assert (f"slot taken over: {slot_limit(tag)} from flow run {holder.flow_run_id}: its process "
            f"{holder_proc.pid} on {holder.host.name} is gone") in out
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(holder.flow_run_id).state.type is StateType.CRASHED
        assert client.read_global_concurrency_limit_by_name(slot_limit(tag)).active_slots == 0
    assert _holder(tag) is None


def test_the_process_table_tells_a_live_holder_from_a_dead_one_and_a_zombie() -> None:
    """look_at_process on real processes of this host: alive while it runs, gone once it ended (reaped or not)."""
    from datetime import UTC, datetime

    from tasks.control.slots import Liveness, ProcessId, host_here, look_at_process

    def holder_of(proc: subprocess.Popen[bytes]) -> SlotHolder:
        stat = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        now = datetime.now(UTC)
        return SlotHolder(uuid.uuid4(), now, now, None, host_here(), ProcessId(proc.pid, int(stat[19])))

    proc = subprocess.Popen(["sleep", "60"])
    record = holder_of(proc)
    assert look_at_process(record) is Liveness.ALIVE
    proc.kill()
    wait_for("the killed process to be a zombie",
             lambda: Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z", timeout=10)
    assert look_at_process(record) is Liveness.GONE  # dead, not yet reaped by its parent (this test)
    proc.wait()
    assert look_at_process(record) is Liveness.GONE
    elsewhere = dataclasses.replace(record, host=dataclasses.replace(record.host, boot="another-boot"))
    assert look_at_process(elsewhere) is Liveness.UNKNOWN


def test_a_run_answered_from_its_record_frees_a_slot_left_by_a_run_whose_process_is_gone(
    registry: RegistryProcess, namespace: str, sample: Callable[..., SampleSource], tmp_path: Path,
) -> None:
    """As a run that ended while the Prefect server was away leaves it: the tag's slot counted, the record naming a
    run the server still shows Running and a process of this host that is gone. A re-run of the published tag
    needs no slot, but frees that one, says so, and sets the dead run Crashed."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate, VariableCreate
    from prefect.states import Running

    from tasks.control.concurrency import ensure_limit
    from tasks.control.slots import ProcessId, host_here

    tag = f"v0.{uuid.uuid4().int % 10_000}.9"
    src = sample(tag=tag, images=IMAGES[:1], nonce=uuid.uuid4().hex)
    reg = f"{registry.host}/{namespace}"
    first, first_log = _run_on(os.environ["PREFECT_API_URL"], src, reg, tmp_path)
    assert first.wait(timeout=600) == 0, first_log.read_text()[-3000:]
    gone = subprocess.Popen(["sleep", "60"])
    started = int(Path(f"/proc/{gone.pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    gone.kill()
    gone.wait()
    (dead,) = flow_runs_of(tag, src.path)
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    left = SlotHolder(dead.id, now, now, uuid.uuid4(), host_here(), ProcessId(gone.pid, started))
    name = slot_limit(tag)
    ensure_limit(name)
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(dead.id, Running(), force=True)
        client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active_slots=1))
        client.create_variable(VariableCreate(name=holder_variable(name), value=json.dumps(left.to_json())))

    again, again_log = _run_on(os.environ["PREFECT_API_URL"], src, reg, tmp_path)
    assert again.wait(timeout=600) == 0, again_log.read_text()[-3000:]
    out = again_log.read_text()
    assert "nothing changed" in out
    assert (f"slot taken over: {name} from flow run {dead.id}: its process {gone.pid} on {host_here().name} is gone "
            "(freed: this run needs no slot)") in out
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name(name).active_slots == 0
        assert client.read_flow_run(dead.id).state.type is StateType.CRASHED
    assert _holder(tag) is None


class _LateAnswers:
    """A proxy in front of the Prefect API that forwards every request at once and holds back the answer to the
    first ``times`` slot acquisitions for ``delay`` seconds: the server has granted the slot; the run hears of it
    late (a busy server)."""

    PATH = "/concurrency_limits/increment-with-lease"

    def __init__(self, upstream: str, delay: float, times: int = 1) -> None:
        import threading
        import urllib.parse
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        target = urllib.parse.urlsplit(upstream)
        proxy = self
        self.delay, self.times, self.held = delay, times, 0
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                import http.client

                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                upstream_conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                upstream_conn.request(self.command, target.path.rstrip("/") + self.path[len(target.path.rstrip("/")):],
                                      body=body, headers=headers)
                answer = upstream_conn.getresponse()
                data = answer.read()
                upstream_conn.close()
                if self.path.endswith(proxy.PATH):
                    with proxy._lock:
                        hold = proxy.held < proxy.times
                        proxy.held += hold
                    if hold:
                        time.sleep(proxy.delay)
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _forward

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}{target.path}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_slot_granted_while_its_answer_is_late_is_held_not_lost() -> None:
    """The server grants the slot but its answer comes after the run's first look (0.5 s): the run takes the slot
    when the answer comes, with no wait. (An acquisition cut off at the first look left the slot counted with a
    lease nobody held and no record: the run waited out the stale bound for its own slot.)"""
    import asyncio

    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tasks.control.concurrency import atag_slot
    from tasks.control.slots import SlotTiming

    tag = f"v9.{uuid.uuid4().int % 10_000}.1"
    namespace = f"late-{uuid.uuid4().hex[:6]}"
    late = _LateAnswers(os.environ["PREFECT_API_URL"], delay=2.0)

    async def hold_once() -> None:
        async with atag_slot(tag, timing=SlotTiming(STALE_SECONDS, 2.0, 1.0), namespace=namespace):
            pass

    try:
        with temporary_settings({PREFECT_API_URL: late.url}):
            started = time.monotonic()
            asyncio.run(hold_once())
            took = time.monotonic() - started
    finally:
        late.close()
    assert late.held == 1  # the answer to the acquisition was held back
    assert took < STALE_SECONDS, f"the run waited {took:.1f}s for a slot the server had granted it"
    from tasks.control.concurrency import limit_name

    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name(limit_name(tag, namespace)).active_slots == 0
