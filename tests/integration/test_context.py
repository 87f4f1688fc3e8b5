"""One request and one run state per release: the run's policy reaches every push, and runs in one
process (a served one) share no state."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from devkit.faultproxy import FaultProxy, Rule
from devkit.registry import RegistryProcess, free_port
from devkit.sample_source import SampleSource
from flows.release import release
from tasks.core.errors import ReleaseError
from tasks.oci.registry import RegistryAPI
from tasks.run.settings import Settings

pytestmark = pytest.mark.integration


def test_chart_push_makes_exactly_the_attempts_the_run_asks_for(
    fault_proxy: FaultProxy, registry: RegistryProcess, namespace: str, sample: Callable[..., SampleSource],
) -> None:
    """--push-attempts 2 with the chart's manifest PUT failing forever: the chart push task ran twice."""
    fault_proxy.add(Rule(repo_suffix="/charts/fma-controllers", op="manifest_put", status=503))
    src = sample(images=("dual-pods-controller", "launcher-populator"))
    with pytest.raises(ReleaseError) as caught:
        release(tag=src.tag, source=str(src.path), registry=f"{fault_proxy.host}/{namespace}",
                config=str(src.config), push_attempts=2, retry_base_delay=0.1)
    assert "chart fma-controllers" in str(caught.value)

    from tests.integration.prefect_helpers import recorded_task_runs, run_of

    task_runs = recorded_task_runs(run_of(src.tag, src.path).id, "push chart")
    (chart_push,) = [t for t in task_runs if t.name.startswith("push chart")]
    assert chart_push.run_count == 2
    assert fault_proxy.count("/charts/fma-controllers", "manifest_put") >= 2  # Helm may retry a 503 itself too
    with RegistryAPI(registry.host) as api:  # the images went, the chart did not
        assert api.tags(f"{namespace}/dual-pods-controller") == ["v0.3.1"]
        assert api.tags(f"{namespace}/charts/fma-controllers") == []


def test_two_runs_in_one_process_learn_their_registry_afresh(
    tmp_path: Path, namespace: str, sample: Callable[..., SampleSource], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A served process releases v0.3.1 to a plain-HTTP registry, then v0.3.2 to a TLS registry with
    auth at the same address: the second run reads its own settings and asks the scheme again."""
    port = free_port()
    plain = RegistryProcess(tmp_path / "plain", port).start()
    try:
        first = sample(images=("requester",))
        release(tag=first.tag, source=str(first.path), registry=f"{plain.host}/{namespace}",
                config=str(first.config), retry_base_delay=0.1)
    finally:
        plain.stop()

    root = tmp_path / "tls"
    root.mkdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(root / "key.pem"), "-out", str(root / "cert.pem")],
        check=True, capture_output=True,
    )
    (root / "htpasswd").write_text(subprocess.run(["htpasswd", "-Bbn", "fma-bot", "s3cret-Pass"], check=True,
                                                  capture_output=True, text=True).stdout)
    secure = RegistryProcess(root, port, htpasswd=root / "htpasswd", tls=(root / "cert.pem", root / "key.pem")).start()
    monkeypatch.setenv("FMA_REGISTRY_USERNAME", "fma-bot")
    monkeypatch.setenv("FMA_REGISTRY_PASSWORD", "s3cret-Pass")
    monkeypatch.setenv("FMA_REGISTRY_HOSTS", secure.host)
    try:
        second = sample(images=("requester",), tag="v0.3.2")
        result = release(tag=second.tag, source=str(second.path), registry=f"{secure.host}/{namespace}",
                         config=str(second.config), retry_base_delay=0.1)
        assert [i.ref for i in result.images] == [f"{secure.host}/{namespace}/requester:v0.3.2"]
        with RegistryAPI(secure.host, Settings.from_env()) as api:
            assert api.base.startswith("https://")
            assert api.tags(f"{namespace}/requester") == ["v0.3.2"]
    finally:
        secure.stop()
        subprocess.run(["docker", "image", "rm", "-f", "--no-prune", f"{plain.host}/{namespace}/requester:v0.3.1",
                        f"{secure.host}/{namespace}/requester:v0.3.2"], capture_output=True, check=False)
