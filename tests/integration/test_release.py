"""The release flow end to end against dockerd, a Distribution registry, git, Helm and Prefect."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from devkit.faultproxy import FaultProxy, Rule
from devkit.registry import RegistryProcess
from devkit.sample_source import FMA_IMAGES, SampleSource
from flows.release import release
from tasks.core.errors import ImagesFailedError, SourceError
from tasks.core.project import PROJECT_ROOT
from tasks.oci.registry import RegistryAPI

pytestmark = pytest.mark.integration


def run_release(src: SampleSource, registry: str, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("retry_base_delay", 0.1)
    return release(tag=src.tag, source=str(src.path), registry=registry, config=str(src.config), **kwargs).summary()


def file_in_image(api: RegistryAPI, repository: str, tag: str, name: str) -> str:
    """Read one file of a pushed image from its layers in the registry."""
    found = api.manifest(repository, tag)
    assert found is not None
    content = ""
    for layer in found[1]["layers"]:
        with tarfile.open(fileobj=io.BytesIO(api.blob(repository, layer["digest"])), mode="r:*") as tar:
            for member in tar.getmembers():
                if member.name.lstrip("./") == name and member.isfile():
                    extracted = tar.extractfile(member)
                    assert extracted is not None
                    content = extracted.read().decode()
    return content


def test_full_release_publishes_images_and_chart_read_back_from_registry(
    registry: RegistryProcess, namespace: str, sample: Callable[..., SampleSource], tmp_path: Path,
) -> None:
    """Four images and the chart land in the registry with the tag's labels, digests and values."""
    src = sample()
    reg = f"{registry.host}/{namespace}"
    values_before = (PROJECT_ROOT / "charts/fma-controllers/values.yaml").read_text()

    summary = run_release(src, reg)

    assert summary["source_revision"] == src.tag_commit != src.head_commit
    assert [i["name"] for i in summary["images"]] == list(FMA_IMAGES)
    with RegistryAPI(registry.host) as api:
        for image in summary["images"]:
            repo = f"{namespace}/{image['name']}"
            assert image["ref"] == f"{reg}/{image['name']}:v0.3.1"
            assert api.tags(repo) == ["v0.3.1"]
            digest, _ = api.manifest(repo, "v0.3.1") or ("", {})
            assert digest == image["digest"]
            config = api.image_config(repo, "v0.3.1")
            assert config is not None
            labels = config["config"]["Labels"]
            assert labels["org.opencontainers.image.revision"] == src.tag_commit
            assert labels["org.opencontainers.image.version"] == "v0.3.1"
            assert labels["org.opencontainers.image.title"] == image["name"]
            assert labels["org.opencontainers.image.source"] == str(src.path)
            assert labels["org.opencontainers.image.created"].startswith("20")
            # Built from the tag, not from HEAD (HEAD's VERSION says otherwise).
            assert file_in_image(api, repo, "v0.3.1", "app/VERSION").startswith("0.3.1\n")
            assert file_in_image(api, repo, "v0.3.1", "app/name").strip() == image["name"]

        (chart,) = summary["charts"]
        assert chart["ref"] == f"oci://{reg}/charts/fma-controllers"
        assert chart["version"] == "0.3.1"
        found = api.manifest(f"{namespace}/charts/fma-controllers", "0.3.1")
        assert found is not None and found[0] == chart["digest"]

    pulled = tmp_path / "pulled"
    client = helm.RegistryClient(plain_http=True)
    try:
        client.pull(chart["ref"], version="0.3.1", destination=pulled, untar=True, untar_dir=pulled, plain_http=True)
    finally:
        client.close()
    meta = yaml.safe_load((pulled / "fma-controllers/Chart.yaml").read_text())
    assert (meta["version"], meta["appVersion"]) == ("0.3.1", "v0.3.1")
    values_text = (pulled / "fma-controllers/values.yaml").read_text()
    values = yaml.safe_load(values_text)
    assert values["global"]["imageRegistry"] == reg
    assert values["global"]["imageTag"] == "v0.3.1"
    assert "# Image tag of both controllers" in values_text  # comments survive the edit
    # The chart was edited in a staging copy: the project's own file is untouched.
    assert (PROJECT_ROOT / "charts/fma-controllers/values.yaml").read_text() == values_before

    # The summary artifact is in the Prefect server, with every digest in it.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["release-0-3-1"])))
    ours = [str(a.data) for a in artifacts if reg in str(a.data)]  # other tests release v0.3.1 too
    assert len(ours) == 1, "no release-0-3-1 artifact of this run in the Prefect server"
    markdown = ours[0]
    for image in summary["images"]:
        assert image["digest"] in markdown
    assert f"helm install fma {chart['ref']} --version 0.3.1" in markdown


def test_prerelease_tag_is_released_and_flagged(
    registry: RegistryProcess, namespace: str, sample: Callable[..., SampleSource],
) -> None:
    """An -rc tag publishes images under the tag and a chart at the pre-release version."""
    src = sample(tag="v0.3.0-rc.1", images=("requester",))
    summary = run_release(src, f"{registry.host}/{namespace}")
    assert summary["prerelease"] is True
    assert summary["version"] == "0.3.0-rc.1"
    assert summary["charts"] == []  # the sample config for one image carries no chart
    with RegistryAPI(registry.host) as api:
        assert api.tags(f"{namespace}/requester") == ["v0.3.0-rc.1"]


def test_a_second_tag_of_a_released_commit_is_released_under_its_own_tag(
    registry: RegistryProcess, namespace: str, sample: Callable[..., SampleSource],
) -> None:
    """A release candidate's commit tagged again as the release (as the chaos rounds tag one commit per round):
    the release's images are pushed under the new tag, not answered with the candidate's record."""
    src = sample(tag="v0.3.0-rc.1", images=("requester",))
    reg = f"{registry.host}/{namespace}"
    run_release(src, reg)
    subprocess.run(["git", "tag", "-a", "v0.3.0", src.tag_commit, "-m", "release v0.3.0"], cwd=src.path, check=True,
                   capture_output=True, env={**os.environ, "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"})
    summary = release(tag="v0.3.0", source=str(src.path), registry=reg, config=str(src.config),
                      retry_base_delay=0.1).summary()
    assert (summary["tag"], summary["prerelease"]) == ("v0.3.0", False)
    assert summary["images"][0]["ref"] == f"{reg}/requester:v0.3.0"
    assert not any("nothing changed" in note for note in summary["notes"])
    with RegistryAPI(registry.host) as api:
        assert sorted(api.tags(f"{namespace}/requester")) == ["v0.3.0", "v0.3.0-rc.1"]


def test_broken_dockerfile_fails_naming_the_image_and_publishes_no_chart(
    registry: RegistryProcess, namespace: str, sample: Callable[..., SampleSource],
) -> None:
    """One failing build fails the run with its name and step; the others finish; no chart."""
    src = sample(broken=("launcher",))
    with pytest.raises(ImagesFailedError) as caught:
        run_release(src, f"{registry.host}/{namespace}")
    message = str(caught.value)
    assert "launcher:" in message and "\n" not in message
    assert re.search(r"failed to build at \[\d+/\d+\] RUN .*exit code: 1", message)  # BuildKit names the step
    assert set(caught.value.failures) == {"launcher"}
    with RegistryAPI(registry.host) as api:
        assert api.tags(f"{namespace}/charts/fma-controllers") == []
        assert api.tags(f"{namespace}/launcher") == []
        for name in ("dual-pods-controller", "launcher-populator", "requester"):
            assert api.tags(f"{namespace}/{name}") == ["v0.3.1"]


def test_missing_tag_fails_before_any_build_and_publishes_nothing(
    registry: RegistryProcess, namespace: str, sample: Callable[..., SampleSource],
    events: list[tuple[str, str, str]],
) -> None:
    """A tag that is not in the source stops the run before building anything."""
    src = sample()
    with pytest.raises(SourceError, match=r"tag v9\.9\.9 is not in the source"):
        release(tag="v9.9.9", source=str(src.path), registry=f"{registry.host}/{namespace}",
                     config=str(src.config))
    assert not [e for e in events if e[1] == "building"]
    with RegistryAPI(registry.host) as api:
        for name in FMA_IMAGES:
            assert api.tags(f"{namespace}/{name}") == []


def test_push_retried_after_503_on_manifest_put_without_rebuilding(
    fault_proxy: FaultProxy, namespace: str, sample: Callable[..., SampleSource],
    events: list[tuple[str, str, str]],
) -> None:
    """Two 503s on one image's manifest PUT: that push is retried alone and the release succeeds."""
    fault_proxy.add(Rule(repo_suffix="/requester", op="manifest_put", status=503, times=2))
    src = sample()
    summary = run_release(src, f"{fault_proxy.host}/{namespace}")
    assert len(summary["images"]) == 4 and len(summary["charts"]) == 1
    assert fault_proxy.count("/requester", "manifest_put") == 3
    for name in ("dual-pods-controller", "launcher-populator", "launcher"):
        assert fault_proxy.count(f"/{name}", "manifest_put") == 1
    assert [e for e in events if e[0] == "requester" and e[1] == "building"] == [("requester", "building", "")]
    assert sum(1 for e in events if e[0] == "requester" and e[1] == "retrying") == 2


def test_push_unauthorized_is_not_retried_and_no_chart_is_published(
    fault_proxy: FaultProxy, registry: RegistryProcess, namespace: str, sample: Callable[..., SampleSource],
) -> None:
    """A 401 on a manifest PUT fails that image at once: one attempt, no chart."""
    fault_proxy.add(Rule(repo_suffix="/requester", op="manifest_put", status=401))
    src = sample()
    with pytest.raises(ImagesFailedError) as caught:
        run_release(src, f"{fault_proxy.host}/{namespace}")
    assert set(caught.value.failures) == {"requester"}
    assert "FMA_REGISTRY_USERNAME" in caught.value.failures["requester"]
    assert fault_proxy.count("/requester", "manifest_put") == 1
    with RegistryAPI(registry.host) as api:
        assert api.tags(f"{namespace}/charts/fma-controllers") == []


def test_cli_dry_run_builds_and_packages_but_pushes_nothing(
    registry: RegistryProcess, namespace: str, sample: Callable[..., SampleSource], tmp_path: Path,
) -> None:
    """`fma-release run --dry-run` writes the summary JSON and leaves the registry empty."""
    src = sample(images=("dual-pods-controller", "launcher-populator"))
    out = tmp_path / "summary.json"
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("fma-release")), "run", src.tag,
         "--source", str(src.path), "--registry", f"{registry.host}/{namespace}",
         "--config", str(src.config), "--summary-json", str(out), "--dry-run",
         "--workdir", "dry"],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "FMA_STATE_DIR": str(tmp_path / "state")},
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(out.read_text())
    assert summary["dry_run"] is True
    assert {i["name"] for i in summary["images"]} == {"dual-pods-controller", "launcher-populator"}
    assert all(i["digest"].startswith("sha256:") for i in summary["images"])
    assert summary["charts"][0]["version"] == "0.3.1"
    assert "helm install fma oci://" in proc.stdout
    # The server is configured (PREFECT_API_URL): no word of a temporary one in where the time went.
    assert re.search(r"released v0\.3\.1 in [\d.]+s: Prefect start-up [\d.]+s, images [\d.]+s, "
                     r"charts and summary [\d.]+s$", proc.stderr.strip()), proc.stderr[-500:]
    assert (tmp_path / "state/workspaces/dry/charts/packages/fma-controllers-0.3.1.tgz").is_file()
    with RegistryAPI(registry.host) as api:
        for name in ("dual-pods-controller", "launcher-populator", "charts/fma-controllers"):
            assert api.tags(f"{namespace}/{name}") == []


def test_a_base_image_only_the_engine_has_is_used_as_it_is(
    registry: RegistryProcess, namespace: str, sample: Callable[..., SampleSource], engine: Any,
) -> None:
    """FROM an image that is in no registry (built on this engine): the build uses the engine's own,
    as `docker build` without --pull does, instead of asking a registry for it."""
    from devkit.sample_source import base_image

    base = base_image(engine, f"fma-local-base-{namespace.split('/', maxsplit=1)[0]}:1")
    try:
        src = sample(images=("requester",), base=base)
        summary = run_release(src, f"{registry.host}/{namespace}")
        with RegistryAPI(registry.host) as api:
            assert file_in_image(api, f"{namespace}/requester", src.tag, "app/name").strip() == "requester"
            assert file_in_image(api, f"{namespace}/requester", src.tag, "app/arch").strip() == "x86_64"
        assert summary["images"][0]["status"] == "pushed"
    finally:
        engine.remove_image(f"{registry.host}/{namespace}/requester:{src.tag}", force=True, noprune=True)
        engine.remove_image(base, force=True, noprune=True)


def test_a_run_without_prefect_api_url_reports_to_the_local_server(
    registry: RegistryProcess, namespace: str, sample: Callable[..., SampleSource], tmp_path: Path,
) -> None:
    """With no server configured and the local one answering, the CLI reports there (one line says so)
    instead of starting a temporary server, and the run is in that server."""
    import os

    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    src = sample(images=("requester",))
    url = os.environ["PREFECT_API_URL"]
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    env.update({"FMA_LOCAL_PREFECT_URL": url, "PREFECT_HOME": str(tmp_path / "prefect-home")})  # no profile's URL
    reg = f"{registry.host}/{namespace}"
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("fma-release")), "run", src.tag, "--source", str(src.path),
         "--registry", reg, "--config", str(src.config)],
        capture_output=True, text=True, timeout=300, check=False, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"fma-release: reporting to the local Prefect server at {url}" in proc.stderr
    assert "a temporary server" not in proc.stderr
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[f"release {src.tag}"])))
    assert any(r.parameters.get("registry") == reg and r.state and r.state.is_completed() for r in runs)
