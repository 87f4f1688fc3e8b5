"""Multi-platform images end to end: per-platform builds from a multi-platform base, an OCI image index
under the tag, arm64 under qemu, resume per platform."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from devkit.faultproxy import FaultProxy, Rule
from devkit.multiarch import busybox_index
from devkit.registry import RegistryProcess
from devkit.sample_source import SampleSource
from flows.release import release
from tasks.core.errors import ImagesFailedError
from tasks.oci.platforms import INDEX_MEDIA_TYPE, Platform, index_entries
from tasks.oci.registry import RegistryAPI
from tasks.run.context import RunContext
from tasks.run.plan import FINGERPRINT_LABEL

pytestmark = pytest.mark.integration

MULTI, SINGLE = "dual-pods-controller", "launcher-populator"  # the chart needs both controllers


@pytest.fixture(scope="module")
def base(registry: RegistryProcess) -> str:
    """A multi-platform busybox base (linux/amd64 + linux/arm64) as an index in the session registry
    (the registry fixture removes its images from the engine, as every image under its address)."""
    return busybox_index(f"{registry.host}/bases").ref


def docker_cli(*args: str) -> str:
    out = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def run_on(ref: str, platform: str, *command: str) -> str:
    """Pull ``ref`` for ``platform`` (the tag's index picks the image) and run ``command`` in it."""
    docker_cli("pull", "--quiet", "--platform", platform, ref)
    return docker_cli("run", "--rm", "--platform", platform, ref, *command)


def test_two_platform_image_is_an_index_and_runs_as_arm64_the_other_stays_a_plain_manifest(
    fault_proxy: FaultProxy, registry: RegistryProcess, namespace: str, base: str,
    sample: Callable[..., SampleSource], events: list[tuple[str, str, str]], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, engine: Any,
) -> None:
    """linux/amd64 + linux/arm64 from a multi-platform base: the tag is an OCI index whose arm64 image
    runs aarch64 (its RUN step ran under qemu too); the one-platform image is a plain manifest; the
    chart comes after the index; a re-run builds and pushes nothing and leaves the index alone."""
    monkeypatch.setenv("FMA_STATE_DIR", str(tmp_path / "state"))  # to drop the release record below
    src = sample(images=(MULTI, SINGLE), base=base, platforms={MULTI: ["linux/amd64", "linux/arm64"]})
    reg = f"{fault_proxy.host}/{namespace}"
    run: dict[str, Any] = {"tag": src.tag, "source": str(src.path), "registry": reg, "config": str(src.config)}

    summary = release(**run).summary()

    multi, single = summary["images"]
    assert [p["platform"] for p in multi["platforms"]] == ["linux/amd64", "linux/arm64"]
    # Each platform image is pushed by digest, as ko's are: the registry lists the release's tag alone.
    assert [p["ref"] for p in multi["platforms"]] == [f"{reg}/{MULTI}@{p['digest']}" for p in multi["platforms"]]
    with RegistryAPI(registry.host) as api:
        assert api.tags(f"{namespace}/{MULTI}") == ["v0.3.1"]
        found = api.manifest_bytes(f"{namespace}/{MULTI}", "v0.3.1")
        assert found is not None
        digest, media_type, body = found
        assert (media_type, digest) == (INDEX_MEDIA_TYPE, multi["digest"])
        assert index_entries(json.loads(body)) == [
            (multi["platforms"][0]["digest"], Platform("linux", "amd64")),
            (multi["platforms"][1]["digest"], Platform("linux", "arm64")),
        ]
        fingerprints = set()
        for entry in multi["platforms"]:  # every platform image has the OCI labels and its own fingerprint
            config = api.image_config(f"{namespace}/{MULTI}", entry["digest"])
            assert config is not None
            assert config["architecture"] == entry["platform"].split("/")[1]
            labels = config["config"]["Labels"]
            assert labels["org.opencontainers.image.revision"] == src.tag_commit
            assert labels["org.opencontainers.image.version"] == "v0.3.1"
            fingerprints.add(labels[FINGERPRINT_LABEL])
        single_manifest = api.manifest_bytes(f"{namespace}/{SINGLE}", "v0.3.1")
        assert single_manifest is not None and single_manifest[0] == single["digest"]
        assert single_manifest[1] == "application/vnd.docker.distribution.manifest.v2+json"
        assert api.tags(f"{namespace}/{SINGLE}") == ["v0.3.1"]
    assert len(fingerprints) == 2 and "" not in fingerprints

    ref = multi["ref"].replace(fault_proxy.host, registry.host)
    try:
        assert run_on(ref, "linux/arm64", "/bin/busybox", "uname", "-m") == "aarch64"
        assert run_on(ref, "linux/arm64", "/bin/busybox", "cat", "/app/arch") == "aarch64"  # the build step's
        assert run_on(ref, "linux/amd64", "/bin/busybox", "uname", "-m") == "x86_64"
        assert run_on(ref, "linux/amd64", "/bin/busybox", "cat", "/app/VERSION").startswith("0.3.1")
    finally:  # a pulled image keeps a reference by digest after its tag moves on: remove that too
        for image in engine.images():
            for name in (image.get("RepoTags") or []) + (image.get("RepoDigests") or []):
                if name.startswith(f"{registry.host}/{namespace}/"):
                    with contextlib.suppress(docker.errors.ImageNotFound):  # gone with an earlier reference
                        engine.remove_image(name, force=True, noprune=True)

    from tests.integration.prefect_helpers import recorded_task_runs, run_of, wait_for

    expected = {f"build {MULTI} linux/arm64", f"push {MULTI} linux/arm64", f"build {SINGLE}", f"push {SINGLE}",
                f"index {MULTI}"}
    first_run = run_of(src.tag, src.path).id
    names = {t.name for t in recorded_task_runs(first_run, *expected)}
    assert expected <= names, names

    order = [(item, state) for item, state, _ in events]
    assert order.index((MULTI, "index pushed")) < order.index(("chart fma-controllers", "pushed"))
    assert {item for item, state in order if state == "building"} == {
        f"{MULTI} linux/amd64", f"{MULTI} linux/arm64", SINGLE}

    # Resume: without the release record the run goes through the flow and finds everything in place.
    for record in (tmp_path / "state").rglob("*.json"):
        record.unlink()
    events.clear()
    puts = fault_proxy.count(f"/{MULTI}", "manifest_put")
    again = release(**run).summary()
    assert [e for e in events if e[1] in ("building", "pushing", "index pushed") and not e[0].startswith("chart")] == []
    assert fault_proxy.count(f"/{MULTI}", "manifest_put") == puts  # no platform push, no index PUT
    assert again["images"][0]["digest"] == multi["digest"]
    assert again["images"][0]["status"] == "already published"
    assert [p["status"] for p in again["images"][0]["platforms"]] == ["already published"] * 2
    assert [p["ref"] for p in again["images"][0]["platforms"]] == [p["ref"] for p in multi["platforms"]]

    # The resuming run's log says which images it kept, as what, and why.
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName, LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # run logs are sent in batches: send the last ones before reading
    with get_client(sync_client=True) as client:
        (second,) = [r for r in client.read_flow_runs(flow_run_filter=FlowRunFilter(
            name=FlowRunFilterName(any_=[f"release {src.tag}"]))) if (r.parameters or {}).get("source") == str(src.path)
            and r.id != first_run]

    def kept_lines() -> list[str] | None:
        with get_client(sync_client=True) as client:
            logs = [log.message for log in client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[second.id])))]
        found = [m for m in logs if m.startswith(f"{MULTI} linux/") and ": kept as already published" in m]
        return found if len(found) == 2 else None

    lines = wait_for("the resuming run's log lines about the images it kept", kept_lines, timeout=60, every=0.5)
    for platform in multi["platforms"]:
        assert any(line.startswith(f"{MULTI} {platform['platform']}: kept as already published")
                   and platform["ref"] in line and "fingerprint" in line for line in lines), lines


def test_platform_without_an_emulator_fails_in_one_line_naming_the_fix(
    engine: Any, tmp_path: Path, run_context: RunContext
) -> None:
    """A RUN step the engine cannot execute (exec format error) fails the build with what to do about it."""
    import logging

    from tasks.builders.docker import build_image
    from tasks.core.errors import ImageBuildError
    from tasks.run.plan import ImageSpec

    foreign = bytearray(Path("/bin/busybox").read_bytes())
    foreign[18:20] = (0x1234).to_bytes(2, "little")  # an ELF e_machine that no kernel or qemu runs
    (tmp_path / "busybox").write_bytes(bytes(foreign))
    (tmp_path / "busybox").chmod(0o755)
    (tmp_path / "Dockerfile").write_text('FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "true"]\n')
    spec = ImageSpec(name="odd", ref="127.0.0.1:1/fma/odd:v0.3.1-linux-riscv64", dockerfile=tmp_path / "Dockerfile",
                     context=tmp_path, platform="linux/riscv64", index_ref="127.0.0.1:1/fma/odd:v0.3.1")
    try:
        with pytest.raises(ImageBuildError) as caught:
            build_image(engine, spec, run_context, logging.getLogger("test"))
    finally:  # the steps before the failing one stay in the engine as untagged images
        for image_id in engine.images(all=True, quiet=True, filters={"dangling": True}):
            if engine.inspect_image(image_id).get("Architecture") == "riscv64":
                engine.remove_image(image_id, force=True, noprune=True)
    message = str(caught.value)
    assert message.startswith("image odd linux/riscv64 failed to build at Step 3/3 : RUN")
    assert "exec format error" in message and "qemu-riscv64" in message
    assert "remove linux/riscv64 from 'platforms'" in message and "\n" not in message


@pytest.mark.parametrize("left", ["noted", "tagged the old way"])
def test_failed_index_put_is_retried_then_resumed_without_rebuild_or_repush(
    fault_proxy: FaultProxy, registry: RegistryProcess, namespace: str, base: str,
    sample: Callable[..., SampleSource], events: list[tuple[str, str, str]], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, left: str,
) -> None:
    """The index PUT answers 503: retried as a push is, then the run fails naming the image, with no chart and
    no tag at all (its platform images went by digest); the next run builds and pushes no platform image again
    and only PUTs the index. It finds them as the failed run noted them, or, with that note gone, under the
    per-platform tags that releases made before platform images went by digest (``v0.3.1-linux-arm64``)."""
    monkeypatch.setenv("FMA_STATE_DIR", str(tmp_path / "state"))
    fault_proxy.add(Rule(repo_suffix=f"/{MULTI}", op="manifest_put", ref="v0.3.1", status=503))
    src = sample(images=(MULTI, SINGLE), base=base, platforms={MULTI: ["linux/amd64", "linux/arm64"]})
    run: dict[str, Any] = {"tag": src.tag, "source": str(src.path), "registry": f"{fault_proxy.host}/{namespace}",
                           "config": str(src.config), "push_attempts": 2, "retry_base_delay": 0.1}

    with pytest.raises(ImagesFailedError) as caught:
        release(**run)
    assert set(caught.value.failures) == {MULTI}
    assert "503" in caught.value.failures[MULTI] and "\n" not in str(caught.value)
    assert fault_proxy.injected[(f"{namespace}/{MULTI}", "manifest_put")] == 2  # two attempts, both refused
    assert (MULTI, "push failed") in {(item, state) for item, state, _ in events}
    pushed = {item.split()[1]: detail for item, state, detail in events if item.startswith(f"{MULTI} ")
              and state == "pushed"}
    assert set(pushed) == {"linux/amd64", "linux/arm64"}
    with RegistryAPI(registry.host) as api:
        assert api.tags(f"{namespace}/charts/fma-controllers") == []
        assert api.tags(f"{namespace}/{MULTI}") == []  # by digest only: nothing but the index would be tagged
        if left == "tagged the old way":
            shutil.rmtree(tmp_path / "state" / "platforms")
            for platform, digest in pushed.items():
                found = api.manifest_bytes(f"{namespace}/{MULTI}", digest)
                assert found is not None
                api.put_manifest(f"{namespace}/{MULTI}", f"v0.3.1-{platform.replace('/', '-')}", found[2], found[1])

    fault_proxy.clear()
    events.clear()
    puts = fault_proxy.count(f"/{MULTI}", "manifest_put")
    summary = release(**run).summary()
    assert [e for e in events if e[1] in ("building", "pushing")] == [("chart fma-controllers", "pushing", "")]
    assert fault_proxy.count(f"/{MULTI}", "manifest_put") == puts + 1  # the index alone
    multi = summary["images"][0]
    assert multi["status"] == "pushed"
    assert [(p["platform"], p["digest"], p["status"]) for p in multi["platforms"]] == [
        (platform, pushed[platform], "already published") for platform in ("linux/amd64", "linux/arm64")]
    assert [p["ref"] for p in multi["platforms"]] == [f"{run['registry']}/{MULTI}@{p['digest']}"
                                                      for p in multi["platforms"]]
    with RegistryAPI(registry.host) as api:
        assert api.digest(f"{namespace}/{MULTI}", "v0.3.1") == multi["digest"]
        assert api.tags(f"{namespace}/charts/fma-controllers") == ["0.3.1"]


def test_layer_cache_of_another_platform_is_not_used(
    engine: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture, run_context: RunContext,
) -> None:
    """The legacy builder's cache ignores the platform: a FROM scratch step built for one platform comes
    back for the other from the cache; the build notices and builds again uncached, either way round."""
    import logging
    import uuid

    from tasks.builders.docker import build_image
    from tasks.run.plan import ImageSpec

    (tmp_path / "busybox").write_bytes(Path("/bin/busybox").read_bytes())
    (tmp_path / "busybox").chmod(0o755)
    (tmp_path / "nonce").write_text(uuid.uuid4().hex)
    # The nonce comes first: these layers are this test's own, no other build's cache ever sees them.
    (tmp_path / "Dockerfile").write_text(
        'FROM scratch\nCOPY nonce /nonce\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "true"]\n')
    log = logging.getLogger("test.cache")
    refs = []
    try:
        for platform in ("linux/amd64", "linux/arm64", "linux/amd64"):
            ref = f"fma-release-test/cache:{platform.replace('/', '-')}-{len(refs)}"
            refs.append(ref)
            spec = ImageSpec(name="cache", ref=ref, dockerfile=tmp_path / "Dockerfile", context=tmp_path,
                             platform=platform)
            with caplog.at_level(logging.INFO, logger="test.cache"):
                built = build_image(engine, spec, run_context, log)
            assert engine.inspect_image(built.image_id)["Architecture"] == platform.split("/")[1]
        assert "cache gave a linux/amd64 image: building again without the cache" in caplog.text
    finally:
        for ref in reversed(refs):  # and with them their layers: no arm64 layer stays in the cache
            engine.remove_image(ref, force=True, noprune=True)


def test_a_cached_image_deleted_mid_build_is_built_again_without_the_cache(
    engine: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture, run_context: RunContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another build's clean-up deletes an image the legacy builder's cache has just offered (a race of
    microseconds: it failed a CI run as 'COPY busybox /bin/busybox: unable to find image "sha256:..."').
    The engine's answer is given to the first build here, as the race leaves it; the build runs again
    without the cache, on the real engine, and the image is built."""
    import logging
    import uuid

    from tasks.builders import docker as docker_builder
    from tasks.core.errors import ImageBuildError
    from tasks.run.plan import ImageSpec

    (tmp_path / "nonce").write_text(uuid.uuid4().hex)
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY nonce /nonce\n")
    real, calls = docker_builder._build, []

    def raced(*args: Any, nocache: bool = False, **kwargs: Any) -> Any:
        calls.append(nocache)
        if len(calls) == 1:
            raise ImageBuildError("race", 'image race failed to build at Step 2/2 : COPY nonce /nonce: unable to '
                                          'find image "sha256:9e1b1a67cff8313ba10a54ff01803c301b2463ed"')
        return real(*args, nocache=nocache, **kwargs)

    monkeypatch.setattr(docker_builder, "_build", raced)
    ref = f"fma-release-test/raced:{uuid.uuid4().hex[:8]}"
    spec = ImageSpec(name="raced", ref=ref, dockerfile=tmp_path / "Dockerfile", context=tmp_path,
                     platform="linux/amd64")
    log = logging.getLogger("test.raced")
    try:
        with caplog.at_level(logging.INFO, logger="test.raced"):
            built = docker_builder.build_image(engine, spec, run_context, log)
        assert calls == [False, True]
        assert engine.inspect_image(built.image_id)["Architecture"] == "amd64"
        assert "deleted mid-build: building again without the cache" in caplog.text
    finally:
        engine.remove_image(ref, force=True)
