"""The same flow with its tasks on a Dask cluster (prefect-dask): worker processes build and push."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from distributed import Client, LocalCluster

from devkit.registry import RegistryProcess
from devkit.sample_source import SampleSource
from flows.release import release
from flows.runners import task_runner
from tasks.core.errors import ConfigError
from tasks.oci.references import Reference
from tasks.oci.registry import RegistryAPI

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """Two worker processes, as two machines would be (the scheduler stands where a remote one would)."""
    with LocalCluster(n_workers=2, threads_per_worker=4, processes=True, dashboard_address=None) as local:
        yield local


def test_release_with_tasks_on_dask_workers(
    registry: RegistryProcess, namespace: str, sample: Callable[..., SampleSource], cluster: LocalCluster,
) -> None:
    """Builds and pushes run in the workers' processes; the registry gets every image and the chart."""
    src = sample()
    reg = f"{registry.host}/{namespace}"

    summary = release(task_runner(cluster.scheduler_address), tag=src.tag, source=str(src.path), registry=reg,
                      config=str(src.config), retry_base_delay=0.1).summary()

    with Client(cluster) as client:
        executed = client.run(lambda dask_worker: dask_worker.state.executed_count)
    assert sum(executed.values()) >= 2 * len(summary["images"])  # a build and a push per image, at least
    with RegistryAPI(registry.host) as api:
        for image in summary["images"]:
            target = Reference.parse(image["ref"])
            assert api.digest(target.repository, target.tag) == image["digest"]
    assert [chart["status"] for chart in summary["charts"]] == ["pushed"]


@pytest.mark.parametrize("address", ["scheduler:8786", "http://scheduler:8786"])
def test_a_dask_address_that_is_no_scheduler_address_is_refused(address: str) -> None:
    with pytest.raises(ConfigError, match="use tcp://host:8786 or local"):
        task_runner(address)
