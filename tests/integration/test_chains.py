"""Each image's chain goes on by itself: an image is signed while a slower one still builds, charts come
only after every image is signed, and a signing failure publishes no chart (real registry, BuildKit, cosign)."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from devkit.faultproxy import FaultProxy, Rule
from devkit.registry import RegistryProcess
from devkit.sample_source import FMA_IMAGES, make_sample_source
from devkit.sleep_server import SleepServer
from flows.release import release
from tasks.control.records import build_times, save_build_times
from tasks.core import progress
from tasks.core.errors import SigningError
from tasks.oci.registry import RegistryAPI
from tests.integration.prefect_helpers import recorded_task_runs, wait_for
from tests.integration.shared import key_pair

pytestmark = pytest.mark.integration

PASSWORD = "chains-pw-never-logged"
GATE = "requester-slow"


@pytest.fixture
def signing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cosign key pair for this test, in the run's environment; the public key's path."""
    key, pub = key_pair(tmp_path / "keys", PASSWORD)
    monkeypatch.setenv("FMA_SIGNING_KEY", str(key))
    monkeypatch.setenv("FMA_SIGNING_PASSWORD", PASSWORD)
    monkeypatch.setenv("FMA_STATE_DIR", str(tmp_path / "state"))
    return pub


def signatures(api: RegistryAPI, repository: str) -> list[str]:
    return [tag for tag in api.tags(repository) if tag.endswith(".sig")]


def test_an_image_is_signed_while_the_slowest_image_still_builds(
    registry: RegistryProcess, namespace: str, tmp_path: Path, signing: Path,
) -> None:
    """With requester's build held at a gate, launcher is pushed and signed and no chart exists; once the gate
    opens the release completes, and the chart was pushed only after the last image was signed."""
    del signing
    gatekeeper = SleepServer().start()
    src = make_sample_source(tmp_path / "sample", nonce=uuid.uuid4().hex, sleep_url=gatekeeper.url,
                             gates={"requester": GATE})
    reg = f"{registry.host}/{namespace}"
    outcome: dict[str, Any] = {}
    run_ids: list[Any] = []
    progress.on_run_started(run_ids.append)  # the flow run's id, to read its task runs back

    def run() -> None:
        try:
            outcome["result"] = release(tag=src.tag, source=str(src.path), registry=reg, config=str(src.config),
                                        retry_base_delay=0.1)
        except BaseException as err:  # the test thread reports it
            outcome["error"] = err

    releasing = threading.Thread(target=run, daemon=True)
    releasing.start()
    try:
        with RegistryAPI(registry.host) as api:
            wait_for("launcher's signature while requester waits at its gate",
                     lambda: signatures(api, f"{namespace}/launcher") or None, timeout=300, every=0.5)
            assert gatekeeper.reached(GATE), "requester's build never reached its gate"
            assert api.tags(f"{namespace}/requester") == []  # the slowest image is not even built
            assert api.tags(f"{namespace}/charts/fma-controllers") == []  # no chart before every image is signed
    finally:
        gatekeeper.open_gate(GATE)
        releasing.join(timeout=600)
        gatekeeper.stop()
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    artifacts = {s.artifact for s in result.signatures}
    assert result.signed and artifacts >= {"launcher", "requester", "chart fma-controllers"}

    with RegistryAPI(registry.host) as api:
        assert signatures(api, f"{namespace}/requester")
    runs = recorded_task_runs(run_ids[-1], "push chart", counts={"sign ": 5})  # four images and the chart
    signed = [r for r in runs if r.name.startswith("sign ") and not r.name.startswith("sign chart")]
    chart_pushes = [r for r in runs if r.name.startswith("push chart")]
    assert len(signed) == 4 and chart_pushes
    assert max(r.end_time for r in signed) <= min(r.start_time for r in chart_pushes)



def test_a_signing_failure_publishes_no_chart(
    fault_proxy: FaultProxy, namespace: str, tmp_path: Path, signing: Path,
) -> None:
    """The registry refuses launcher's signature (403): the release fails in one line naming launcher, every
    other image is signed, and no chart is published."""
    del signing
    fault_proxy.rules.append(Rule("launcher", "manifest_put", status=403, ref_suffix=".sig"))
    src = make_sample_source(tmp_path / "sample", nonce=uuid.uuid4().hex)
    reg = f"{fault_proxy.host}/{namespace}"
    with pytest.raises(SigningError) as failed:
        release(tag=src.tag, source=str(src.path), registry=reg, config=str(src.config), retry_base_delay=0.1)
    message = str(failed.value)
    assert message.startswith("1 artifact(s) could not be signed: launcher:") and "\n" not in message
    with RegistryAPI(fault_proxy.host) as api:
        assert api.tags(f"{namespace}/charts/fma-controllers") == []
        assert src.tag in api.tags(f"{namespace}/launcher") and signatures(api, f"{namespace}/launcher") == []
        for name in ("requester", "dual-pods-controller", "launcher-populator"):
            assert signatures(api, f"{namespace}/{name}"), name


def test_the_build_measured_longest_starts_first_and_the_others_after_its_lead(
    registry: RegistryProcess, namespace: str, tmp_path: Path, events: list[tuple[str, str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An earlier run measured requester (last in the config) the longest by far: it starts first, and with a
    lead longer than any build the others start only once it is built. The run notes its own times."""
    state = tmp_path / "state"
    monkeypatch.setenv("FMA_STATE_DIR", str(state))
    monkeypatch.setenv("FMA_HEAD_START_SECONDS", "600")
    others = [name for name in FMA_IMAGES if name != "requester"]
    save_build_times(state, {**dict.fromkeys(others, 1.0), "requester": 900.0})
    src = make_sample_source(tmp_path / "sample", nonce=uuid.uuid4().hex)
    release(tag=src.tag, source=str(src.path), registry=f"{registry.host}/{namespace}", config=str(src.config),
            retry_base_delay=0.1)
    seen = [(item, state) for item, state, _ in events]
    building = [item for item, state in seen if state == "building"]
    assert building[0] == "requester" and sorted(building) == sorted(FMA_IMAGES)
    requester_built = seen.index(("requester", "built"))
    assert all(seen.index((name, "building")) > requester_built for name in others), seen
    times = build_times(state)
    assert set(times) == set(FMA_IMAGES) and all(0 < t < 900 for t in times.values()), times
