"""Real parts for integration tests: dockerd, a Distribution registry, git sources.

Nothing here imports Prefect at module level: the session sets PREFECT_API_URL after this loads.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker
import pytest

from devkit.cleanup import remove_images
from devkit.faultproxy import FaultProxy
from devkit.registry import RegistryProcess, free_port
from devkit.sample_source import SampleSource, make_sample_source
from tasks.core import progress

if TYPE_CHECKING:
    from tasks.run.context import RunContext

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def engine() -> Iterator[docker.APIClient]:
    """The local Docker engine; the tests fail (not skip) without one."""
    try:
        client = docker.APIClient(version="auto")
        client.ping()
    except Exception as err:  # the one message that tells how to get an engine
        pytest.fail(f"no Docker engine ({err}); run: bash scripts/setup.sh")
    yield client
    client.close()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory, engine: docker.APIClient) -> Iterator[RegistryProcess]:
    """A real Distribution registry on a free loopback port, for the whole session."""
    reg = RegistryProcess(tmp_path_factory.mktemp("registry"), free_port()).start()
    yield reg
    reg.stop()
    remove_images(engine, f"127.0.0.1:{reg.port}/")


@pytest.fixture
def fault_proxy(registry: RegistryProcess, engine: docker.APIClient) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of the session registry."""
    proxy = FaultProxy("127.0.0.1", registry.port).start()
    yield proxy
    proxy.stop()
    remove_images(engine, f"{proxy.host}/")


@pytest.fixture
def namespace() -> str:
    """A registry path of this test's own, so that tests never see each other's images."""
    return f"t{uuid.uuid4().hex[:10]}/fma"


@pytest.fixture
def sample(tmp_path: Path) -> Callable[..., SampleSource]:
    """Make an FMA-like tagged source repository in this test's directory."""

    def make(**kwargs: Any) -> SampleSource:
        return make_sample_source(tmp_path / f"sample-{uuid.uuid4().hex[:6]}", **kwargs)

    return make


@pytest.fixture
def run_context() -> RunContext:
    """A run of this test's own (settings from the environment, caches of its own), for calling steps directly."""
    # Imported here: Prefect reads PREFECT_API_URL when imported, and the session sets it after this module loads.
    from tasks.run.context import ReleaseRequest, RunContext

    return RunContext(ReleaseRequest(tag="v0.0.0", source=""))


@pytest.fixture
def events() -> Iterator[list[tuple[str, str, str]]]:
    """Every progress report of the run (item, state, detail)."""
    seen: list[tuple[str, str, str]] = []

    def listen(item: str, state: str, detail: str) -> None:
        seen.append((item, state, detail))

    progress.subscribe(listen)
    yield seen
    progress.unsubscribe(listen)
