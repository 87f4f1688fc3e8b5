"""Builds spread over two Docker engines: the local dockerd and a second one on its own bridge."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from devkit.engine import EngineProcess
from devkit.registry import RegistryProcess
from devkit.sample_source import FMA_IMAGES, SampleSource
from flows.release import release
from tasks.core.errors import EngineError
from tasks.oci.references import Reference
from tasks.oci.registry import RegistryAPI
from tests.integration.prefect_helpers import wait_for

pytestmark = pytest.mark.integration

LOCAL = "unix:///var/run/docker.sock"


@pytest.fixture(scope="module")
def second_engine() -> Iterator[EngineProcess]:
    engine = EngineProcess().start()
    yield engine
    engine.stop()


def with_engines(src: SampleSource, engines: str, pins: dict[str, str] | None = None) -> None:
    """Add an ``engines:`` section (and optional per-image pins) to the sample's release config."""
    text = src.config.read_text()
    for name, engine in (pins or {}).items():
        text = text.replace(f"  - name: {name}\n", f"  - name: {name}\n    engine: {engine}\n")
    src.config.write_text(text + engines)


def images_on(docker_host: str, prefix: str) -> set[str]:
    """Names of the images tagged under ``prefix`` that an engine holds."""
    client = docker.APIClient(base_url=docker_host, version="auto")
    try:
        return {
            tag.removeprefix(prefix).split(":")[0]
            for image in client.images() for tag in image.get("RepoTags") or [] if tag.startswith(prefix)
        }
    finally:
        client.close()


def test_builds_are_spread_over_two_engines_and_pushed_from_each(
    registry: RegistryProcess, namespace: str, sample: Callable[..., SampleSource],
    second_engine: EngineProcess, events: list[tuple[str, str, str]],
) -> None:
    """Four images over two engines: each engine builds and pushes two, the registry gets all four."""
    src = sample()
    with_engines(src, f"engines:\n  - {{name: local, docker_host: '{LOCAL}'}}\n"
                      f"  - {{name: second, docker_host: '{second_engine.docker_host}', max_builds: 2}}\n")
    reg = f"{registry.host}/{namespace}"

    summary: dict[str, Any] = release(tag=src.tag, source=str(src.path), registry=reg, config=str(src.config),
                                      retry_base_delay=0.1).summary()

    prefix = f"{reg}/"
    local, second = images_on(LOCAL, prefix), images_on(second_engine.docker_host, prefix)
    assert len(local) == len(second) == 2
    assert local | second == set(FMA_IMAGES)
    building = {item: detail for item, state, detail in events if state == "building"}
    assert {name for name, detail in building.items() if detail == "on second"} == second
    with RegistryAPI(registry.host) as api:
        for image in summary["images"]:
            target = Reference.parse(image["ref"])
            assert api.digest(target.repository, target.tag) == image["digest"]
    assert summary["charts"], "the chart is published once every engine has pushed"


def test_an_image_pinned_to_an_engine_is_built_there(
    registry: RegistryProcess, namespace: str, sample: Callable[..., SampleSource], second_engine: EngineProcess,
) -> None:
    src = sample(images=("requester", "launcher"))
    with_engines(src, f"engines:\n  - {{name: local, docker_host: '{LOCAL}'}}\n"
                      f"  - {{name: second, docker_host: '{second_engine.docker_host}'}}\n",
                 pins={"requester": "second", "launcher": "second"})
    reg = f"{registry.host}/{namespace}"

    release(tag=src.tag, source=str(src.path), registry=reg, config=str(src.config))

    assert images_on(second_engine.docker_host, f"{reg}/") == {"requester", "launcher"}
    assert images_on(LOCAL, f"{reg}/") == set()


def test_an_unreachable_engine_fails_the_preflight_by_name(
    registry: RegistryProcess, namespace: str, sample: Callable[..., SampleSource],
    events: list[tuple[str, str, str]],
) -> None:
    src = sample(images=("requester",))
    with_engines(src, f"engines:\n  - {{name: local, docker_host: '{LOCAL}'}}\n"
                      "  - {name: gone, docker_host: 'unix:///tmp/fma-no-such-engine.sock'}\n")

    with pytest.raises(EngineError, match=r"cannot reach the Docker engine at unix:///tmp/fma-no-such-engine.sock: "
                                          r"start it or fix engine 'gone' in the release config"):
        release(tag=src.tag, source=str(src.path), registry=f"{registry.host}/{namespace}", config=str(src.config))
    assert not [event for event in events if event[1] == "building"]


def _release_losing_the_engine(
    engine: EngineProcess, src: SampleSource, reg: str, tmp_path: Path, lose: Callable[[], Any], *extra: str,
) -> tuple[int, str]:
    """Release ``src`` with its build on ``engine``, call ``lose`` once the build has started; the exit
    code and the CLI's stderr."""
    with_engines(src, f"engines:\n  - {{name: private, docker_host: '{engine.docker_host}'}}\n")
    err = tmp_path / "run.err"
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("fma-release")), "run", src.tag, "--source", str(src.path),
         "--config", str(src.config), "--registry", reg, *extra],
        stdout=(tmp_path / "run.log").open("w"), stderr=err.open("w"), text=True, env=dict(os.environ))
    try:
        wait_for("the build to start on the private engine", lambda: "requester: building" in err.read_text(),
                 timeout=180)
        lose()
        code = proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, err.read_text()


def test_dockerd_restarted_mid_build_is_built_again_and_the_release_completes(
    registry: RegistryProcess, namespace: str, sample: Callable[..., SampleSource], tmp_path: Path,
) -> None:
    """A private dockerd restarted while it builds: the build's engine error is transient, the build task
    runs again on the restarted engine and the image is published once."""
    engine = EngineProcess().start()
    try:
        # The step outlasts the restart (it starts as the run says "building"), then runs again in full.
        src = sample(images=("requester",), sleeps={"requester": 10}, nonce=uuid.uuid4().hex)
        code, text = _release_losing_the_engine(engine, src, f"{registry.host}/{namespace}", tmp_path, engine.restart)
    finally:
        engine.stop()
    assert code == 0, text[-3000:]
    assert len(text) < 20_000
    assert "requester: engine lost: cannot reach the Docker engine" in text, text[-3000:]
    assert "requester: building: on private, attempt 2" in text, text[-3000:]
    assert text.count("requester: pushed:") == 1, text[-3000:]
    with RegistryAPI(registry.host) as api:
        assert api.tags(f"{namespace}/requester") == [src.tag]


def test_dockerd_gone_mid_build_fails_in_one_line_naming_the_engine_and_publishes_nothing(
    registry: RegistryProcess, namespace: str, sample: Callable[..., SampleSource], tmp_path: Path,
) -> None:
    """A private dockerd stopped for good while it builds: the build is tried again as the policy says
    (2 attempts here), then the run fails with one line naming the engine and publishes nothing."""
    engine = EngineProcess().start()
    try:
        src = sample(images=("requester",), sleeps={"requester": 20}, nonce=uuid.uuid4().hex)
        code, text = _release_losing_the_engine(engine, src, f"{registry.host}/{namespace}", tmp_path, engine.stop,
                                                "--push-attempts", "2", "--retry-delay", "1")
    finally:
        engine.stop()
    assert code == 1, text[-3000:]
    assert len(text) < 20_000
    assert "requester: building: on private, attempt 2" in text, text[-3000:]
    errors = [line for line in text.splitlines() if line.startswith("fma-release: error:")]
    assert len(errors) == 1, text[-3000:]
    assert engine.docker_host in errors[0] and "no chart was published" in errors[0], errors[0]
    assert text.count("requester: failed:") == 1, text[-3000:]  # the task's failure and the verdict: one line
    with RegistryAPI(registry.host) as api:
        assert api.tags(f"{namespace}/requester") == []
