"""Real parts for integration tests: dockerd, a Distribution registry, git sources, the Prefect server.

The registry and the Prefect server are the run's (tests/conftest.py starts them once, for every
worker); what is made once per run lives in tests/integration/shared.py. Nothing here imports
Prefect at module level: the session sets PREFECT_API_URL after this loads.
"""

from __future__ import annotations

import os
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
    from devkit.fma_sample import FmaBases
    from tasks.run.context import RunContext
    from tests.integration.shared import Signed

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


@pytest.fixture(scope="session", autouse=True)
def prefect_server() -> str:
    """The run's Prefect server, once it answers (it starts while the unit tests run)."""
    from devkit.prefect_server import wait_for_prefect_server

    url = os.environ["PREFECT_API_URL"]
    log = os.environ.get("FMA_TEST_PREFECT_LOG")
    try:
        wait_for_prefect_server(url, timeout=180, log=Path(log) if log else None)
    except RuntimeError as err:
        pytest.fail(str(err))
    return url


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory, engine: docker.APIClient) -> Iterator[RegistryProcess]:
    """A real Distribution registry on a free loopback port: the run's (FMA_TEST_REGISTRY, shared by every
    worker and stopped by the run), else one of this session's own."""
    shared = os.environ.get("FMA_TEST_REGISTRY")
    if shared:
        port, root = shared.split(":", 1)
        yield RegistryProcess(Path(root), int(port))
        return
    reg = RegistryProcess(tmp_path_factory.mktemp("registry"), free_port()).start()
    yield reg
    reg.stop()
    remove_images(engine, f"127.0.0.1:{reg.port}/")


@pytest.fixture(scope="session")
def prefect_template() -> Path:
    """A migrated SQLite database for a Prefect server of a test's own (start_prefect_server's ``template``)."""
    from tests.integration.shared import shared_prefect_template

    return shared_prefect_template()


@pytest.fixture(scope="session")
def fma_bases(registry: RegistryProcess) -> FmaBases:
    """The FMA sample's bases and the Go toolchain image, pushed once per run under ``fma-bases``."""
    from tests.integration.shared import shared_bases

    return shared_bases(registry.host)


@pytest.fixture(scope="session")
def fma_signed_release(registry: RegistryProcess, fma_bases: FmaBases, engine: docker.APIClient) -> Signed:
    """The FMA sample released once per run by the CLI, signed (tests/integration/shared.py); read it through
    ``signed``."""
    from tests.integration.shared import shared_signed_release

    return shared_signed_release(registry.host, fma_bases)


@pytest.fixture
def signed(fma_signed_release: Signed) -> Iterator[Signed]:
    """The run's signed release, which nobody changes while this test reads it."""
    from tests.integration.shared import release_lock

    with release_lock():
        yield fma_signed_release


@pytest.fixture
def signed_exclusively(fma_signed_release: Signed) -> Iterator[Signed]:
    """The run's signed release, which no other test reads while this one changes it (and puts it back)."""
    from tests.integration.shared import release_lock

    with release_lock(exclusive=True):
        yield fma_signed_release


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
