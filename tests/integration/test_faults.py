"""The fault matrix: registry faults, resume, chart immutability, bad input, secrets.

Real dockerd, a real Distribution registry (behind the tests' fault-injecting
proxy where a fault is needed), real git, Helm's SDK and a Prefect server.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest

from devkit.cleanup import remove_images
from devkit.faultproxy import FaultProxy, Rule
from devkit.multiarch import busybox_index
from devkit.registry import RegistryProcess, free_port
from devkit.sample_source import FMA_IMAGES, SampleSource
from flows.release import release
from tasks.core.errors import ChartError, ConfigError, EngineError, ImagesFailedError, RegistryError, SourceError
from tasks.oci.platforms import INDEX_MEDIA_TYPE
from tasks.oci.registry import RegistryAPI
from tasks.run.settings import Settings

pytestmark = pytest.mark.integration

Events = list[tuple[str, str, str]]


def run_release(src: SampleSource, registry: str, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("retry_base_delay", 0.1)
    return release(tag=src.tag, source=str(src.path), registry=registry, config=str(src.config), **kwargs).summary()


def builds(events: Events) -> list[str]:
    return [item for item, state, _ in events if state == "building"]


def test_dropped_connection_on_blob_put_is_survived(
    fault_proxy: FaultProxy, namespace: str, sample: Callable[..., SampleSource], events: Events,
) -> None:
    """A blob upload whose connection drops is retried and the release completes."""
    fault_proxy.add(Rule(repo_suffix="/launcher", op="blob_put", drop=True, times=1))
    summary = run_release(sample(), f"{fault_proxy.host}/{namespace}")
    assert {i["name"] for i in summary["images"]} == set(FMA_IMAGES)
    assert fault_proxy.injected[(f"{namespace}/launcher", "blob_put")] == 1
    assert fault_proxy.count("/launcher", "blob_put") >= 2
    assert sorted(builds(events)) == sorted(FMA_IMAGES)


def test_hung_push_times_out_and_is_retried(
    fault_proxy: FaultProxy, namespace: str, sample: Callable[..., SampleSource], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A registry that hangs on a manifest PUT: the silent push is abandoned after the stall limit and retried."""
    monkeypatch.setenv("FMA_PUSH_STALL_SECONDS", "3")
    fault_proxy.add(Rule(repo_suffix="/requester", op="manifest_put", hang=60, times=1))
    started = time.monotonic()
    summary = run_release(sample(images=("requester",)), f"{fault_proxy.host}/{namespace}")
    assert time.monotonic() - started < 40
    assert summary["images"][0]["status"] == "pushed"
    assert fault_proxy.injected[(f"{namespace}/requester", "manifest_put")] == 1
    assert fault_proxy.count("/requester", "manifest_put") == 2


def test_rate_limits_are_waited_out(
    fault_proxy: FaultProxy, namespace: str, sample: Callable[..., SampleSource],
) -> None:
    """429 on a registry read (with Retry-After) and on a manifest PUT: both are retried and the release completes."""
    fault_proxy.add(Rule(repo_suffix="/requester", op="manifest_get", status=429, times=1, retry_after="1"))
    fault_proxy.add(Rule(repo_suffix="/requester", op="manifest_put", status=429, times=1, retry_after="1"))
    summary = run_release(sample(images=("requester",)), f"{fault_proxy.host}/{namespace}")
    assert summary["images"][0]["status"] == "pushed"
    assert fault_proxy.injected[(f"{namespace}/requester", "manifest_get")] == 1
    assert fault_proxy.injected[(f"{namespace}/requester", "manifest_put")] == 1
    assert fault_proxy.count("/requester", "manifest_put") == 2


def test_failing_push_fails_only_that_image_and_a_rerun_resumes(
    fault_proxy: FaultProxy, registry: RegistryProcess, namespace: str,
    sample: Callable[..., SampleSource], events: Events,
) -> None:
    """503 forever on one image: the others are published, no chart; the re-run builds nothing, pushes one."""
    fault_proxy.add(Rule(repo_suffix="/requester", op="manifest_put", status=503))
    src = sample()
    reg = f"{fault_proxy.host}/{namespace}"
    with pytest.raises(ImagesFailedError) as caught:
        run_release(src, reg, push_attempts=2)
    assert set(caught.value.failures) == {"requester"}
    assert "503" in caught.value.failures["requester"]
    assert fault_proxy.count("/requester", "manifest_put") == 2  # both attempts, no more
    with RegistryAPI(registry.host) as api:
        assert api.tags(f"{namespace}/charts/fma-controllers") == []
        assert api.tags(f"{namespace}/requester") == []
        for name in ("dual-pods-controller", "launcher-populator", "launcher"):
            assert api.tags(f"{namespace}/{name}") == ["v0.3.1"]

    fault_proxy.clear()
    events.clear()
    puts_before = {name: fault_proxy.count(f"/{name}", "manifest_put") for name in FMA_IMAGES}
    summary = run_release(src, reg)
    assert builds(events) == []
    pushed = {name: fault_proxy.count(f"/{name}", "manifest_put") - puts_before[name] for name in FMA_IMAGES}
    assert pushed == {"dual-pods-controller": 0, "launcher-populator": 0, "launcher": 0, "requester": 1}
    statuses = {i["name"]: i["status"] for i in summary["images"]}
    assert statuses["requester"] == "pushed"
    assert {statuses[n] for n in FMA_IMAGES if n != "requester"} == {"already published"}
    assert summary["charts"][0]["status"] == "pushed"


def test_rerelease_of_a_published_tag_changes_nothing(
    fault_proxy: FaultProxy, namespace: str, sample: Callable[..., SampleSource], events: Events,
) -> None:
    """Releasing a published tag again builds nothing, pushes nothing and says so."""
    src = sample()
    reg = f"{fault_proxy.host}/{namespace}"
    first = run_release(src, reg)
    writes = sum(fault_proxy.count("", op) for op in ("manifest_put", "upload_start", "blob_put"))
    events.clear()
    again = run_release(src, reg)
    assert builds(events) == []
    assert sum(fault_proxy.count("", op) for op in ("manifest_put", "upload_start", "blob_put")) == writes
    assert [i["digest"] for i in again["images"]] == [i["digest"] for i in first["images"]]
    assert again["charts"][0]["digest"] == first["charts"][0]["digest"]
    assert again["notes"] == ["nothing changed: every image and chart of this tag was already published"]

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["release-0-3-1"])))
    ours = [str(a.data) for a in artifacts if reg in str(a.data)]
    assert len(ours) == 2, "each of the two runs publishes its summary artifact"
    assert sum("nothing changed" in text for text in ours) == 1


def test_cached_build_whose_image_is_gone_is_rebuilt(
    fault_proxy: FaultProxy, namespace: str, sample: Callable[..., SampleSource], events: Events,
    engine: Any,
) -> None:
    """A build cached by Prefect but deleted from the engine is built again before its push."""
    fault_proxy.add(Rule(repo_suffix="/requester", op="manifest_put", status=503))
    src = sample(images=("requester",))
    reg = f"{fault_proxy.host}/{namespace}"
    with pytest.raises(ImagesFailedError):
        run_release(src, reg, push_attempts=1)
    fault_proxy.clear()
    engine.remove_image(f"{reg}/requester:v0.3.1", force=True, noprune=True)
    events.clear()
    summary = run_release(src, reg)
    assert builds(events) == ["requester"]
    assert summary["images"][0]["status"] == "pushed"


def _push_other_chart(registry: RegistryProcess, namespace: str, tmp_path: Path) -> None:
    """Publish a different fma-controllers 0.3.1 first, so the release finds the version taken."""
    chart = helm.Chart.create("fma-controllers", tmp_path)
    chart.close()
    archive = helm.package(tmp_path / "fma-controllers", destination=tmp_path, version="0.3.1", app_version="v0.3.1")
    client = helm.RegistryClient(plain_http=True)
    try:
        client.push(archive, f"oci://{registry.host}/{namespace}/charts", plain_http=True)
    finally:
        client.close()


def test_existing_chart_with_other_content_is_refused_before_any_push_and_force_replaces(
    registry: RegistryProcess, namespace: str, sample: Callable[..., SampleSource], tmp_path: Path,
) -> None:
    """A chart version taken by other content fails the run with nothing pushed; --force replaces it."""
    _push_other_chart(registry, namespace, tmp_path)
    src = sample()
    reg = f"{registry.host}/{namespace}"
    with RegistryAPI(registry.host) as api:
        before = api.manifest(f"{namespace}/charts/fma-controllers", "0.3.1")
    with pytest.raises(ChartError, match=r"already exists .* with other content: .* --force"):
        run_release(src, reg)
    with RegistryAPI(registry.host) as api:
        for name in FMA_IMAGES:
            assert api.tags(f"{namespace}/{name}") == []
        assert api.manifest(f"{namespace}/charts/fma-controllers", "0.3.1") == before

    summary = run_release(src, reg, force=True)
    assert summary["charts"][0]["status"] == "replaced"
    assert before is not None and summary["charts"][0]["digest"] != before[0]
    assert "replaced an existing version" in " ".join(summary["notes"])


@pytest.fixture
def auth_registry(tmp_path_factory: pytest.TempPathFactory, engine: Any) -> Iterator[RegistryProcess]:
    """A Distribution registry with htpasswd auth and a self-signed TLS certificate, like ghcr; the
    images pushed to it are removed from the engine afterwards."""
    root = tmp_path_factory.mktemp("auth-registry")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(root / "key.pem"), "-out", str(root / "cert.pem")],
        check=True, capture_output=True,
    )
    htpasswd = subprocess.run(["htpasswd", "-Bbn", "fma-bot", "right-Passw0rd-42"],
                              check=True, capture_output=True, text=True).stdout
    (root / "htpasswd").write_text(htpasswd)
    reg = RegistryProcess(root, free_port(), htpasswd=root / "htpasswd",
                          tls=(root / "cert.pem", root / "key.pem")).start()
    yield reg
    reg.stop()
    remove_images(engine, f"{reg.host}/")


def test_wrong_password_fails_fast_once_and_never_reaches_the_logs(
    auth_registry: RegistryProcess, namespace: str, sample: Callable[..., SampleSource],
    events: Events, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A refused login fails in seconds, before any step; the password is in no stored run log."""
    password = "wrong-Passw0rd-SECRET-7"
    monkeypatch.setenv("FMA_REGISTRY_USERNAME", "fma-bot")
    monkeypatch.setenv("FMA_REGISTRY_PASSWORD", password)
    monkeypatch.setenv("FMA_REGISTRY_HOSTS", auth_registry.host)
    src = sample()
    started = time.monotonic()
    with pytest.raises(RegistryError) as caught:
        run_release(src, f"{auth_registry.host}/{namespace}")
    assert time.monotonic() - started < 10
    assert "refused the credentials of 'fma-bot'" in str(caught.value)
    assert password not in str(caught.value)
    assert builds(events) == []

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    from tests.integration.prefect_helpers import run_of

    APILogHandler().flush()  # run logs are sent in batches: send the last ones before reading
    run = run_of(src.tag, src.path)
    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
    assert [t.name for t in task_runs] == []  # refused before any step started
    assert logs, "the run stored no logs"
    assert all(password not in log.message for log in logs)
    assert any("refused the credentials" in log.message for log in logs)


def test_release_into_an_auth_tls_registry_with_the_right_password(
    auth_registry: RegistryProcess, namespace: str, sample: Callable[..., SampleSource],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the right credentials, images, a multi-platform image's index and the chart go into the
    authenticated TLS registry."""
    monkeypatch.setenv("FMA_REGISTRY_USERNAME", "fma-bot")
    monkeypatch.setenv("FMA_REGISTRY_PASSWORD", "right-Passw0rd-42")
    monkeypatch.setenv("FMA_REGISTRY_HOSTS", auth_registry.host)
    summary = run_release(sample(images=("dual-pods-controller", "launcher-populator")),
                          f"{auth_registry.host}/{namespace}")
    assert summary["charts"][0]["digest"].startswith("sha256:")
    # An image index is PUT through the registry API with the same TLS and credentials.
    index = busybox_index(f"{auth_registry.host}/{namespace}")
    with RegistryAPI(auth_registry.host, Settings.from_env()) as api:
        assert api.tags(f"{namespace}/dual-pods-controller") == ["v0.3.1"]
        found = api.manifest_bytes(f"{namespace}/busybox", "1")
        assert found is not None and found[:2] == (index.digest, INDEX_MEDIA_TYPE)


def _break_values(text: str) -> Callable[[Path], None]:
    def mutate(repo: Path) -> None:
        (repo / "charts/fma-controllers/values.yaml").write_text(text)

    return mutate


@pytest.mark.parametrize(
    ("mutate", "error", "needle"),
    [
        (_break_values("global: [\n"), ChartError, "values.yaml is not valid YAML"),
        (_break_values("global:\n  imageRegistry: x\n"), ChartError, "no global.imageRegistry / global.imageTag"),
        (lambda repo: (repo / "charts/fma-controllers/Chart.yaml").unlink(), ConfigError, "has no Chart.yaml"),
        (lambda repo: (repo / "dockerfiles/Dockerfile.launcher").unlink(), ConfigError,
         "image launcher: dockerfile dockerfiles/Dockerfile.launcher is not in the source"),
    ],
    ids=["malformed-values", "values-without-global-keys", "chart-without-chart-yaml", "missing-dockerfile"],
)
def test_bad_source_content_publishes_nothing(
    registry: RegistryProcess, namespace: str, sample: Callable[..., SampleSource],
    mutate: Callable[[Path], None], error: type[Exception], needle: str,
) -> None:
    """A broken chart or a missing Dockerfile at the tag: one-line error, nothing in the registry."""
    src = sample(chart_from="source", mutate=mutate)
    with pytest.raises(error) as caught:
        run_release(src, f"{registry.host}/{namespace}")
    assert needle in str(caught.value) and "\n" not in str(caught.value)
    with RegistryAPI(registry.host) as api:
        for name in (*FMA_IMAGES, "charts/fma-controllers"):
            assert api.tags(f"{namespace}/{name}") == []


def test_unreachable_engine_registry_and_source(
    registry: RegistryProcess, namespace: str, sample: Callable[..., SampleSource],
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    """No engine, no registry, no source: each a one-line error naming what to fix."""
    src = sample()
    with pytest.raises(RegistryError, match=r"cannot reach the registry 127\.0\.0\.1:1 .* check the address"):
        run_release(src, f"127.0.0.1:1/{namespace}")
    with pytest.raises(SourceError, match="check that --source is a git URL or a local git repository"):
        release(tag="v0.3.1", source=str(tmp_path / "no-such-repo"), registry=f"{registry.host}/{namespace}",
                     config=str(src.config))
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    with pytest.raises(EngineError, match=r"cannot reach the Docker engine .* start dockerd"):
        run_release(src, f"{registry.host}/{namespace}")


def test_a_loopback_registrys_scheme_is_probed_once_by_a_tls_handshake(
    auth_registry: RegistryProcess, registry: RegistryProcess,
) -> None:
    """The TLS registry completes a handshake and the plain one does not; a closed port is no TLS. Threads that
    need a host's scheme at once wait for one probe."""
    from concurrent.futures import ThreadPoolExecutor
    from unittest import mock

    from tasks.oci import registry as registry_module
    from tasks.oci.registry import Schemes, speaks_tls

    assert speaks_tls(auth_registry.host) and not speaks_tls(registry.host)
    assert not speaks_tls(f"127.0.0.1:{free_port()}")
    schemes = Schemes()
    with mock.patch.object(registry_module, "speaks_tls", wraps=speaks_tls) as probe, \
            ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(schemes, [auth_registry.host, registry.host] * 8))
    assert answers == ["https", "http"] * 8
    assert sorted(call.args[0] for call in probe.call_args_list) == sorted([auth_registry.host, registry.host])
