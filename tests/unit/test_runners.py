"""Which task runners run a release's tasks on this machine (flows/runners.py): the run's copy of its signing key
is only for those (docs/security.md)."""

from __future__ import annotations

import pytest
from prefect.task_runners import ThreadPoolTaskRunner

from flows.runners import runs_here, task_runner


def test_threads_and_a_cluster_of_this_machine_run_here() -> None:
    assert runs_here(None)
    assert runs_here(ThreadPoolTaskRunner())
    assert runs_here(task_runner(""))


@pytest.mark.parametrize(("address", "here"), [
    ("local", True),
    ("tcp://127.0.0.1:8786", True),
    ("tcp://localhost:8786", True),
    ("tcp://10.0.0.5:8786", False),
    ("tcp://scheduler:8786", False),
    ("tls://127.0.0.1:8786", False),  # TLS to the scheduler: taken for a cluster of several machines
])
def test_a_dask_cluster_runs_here_only_on_this_machines_loopback(address: str, here: bool) -> None:
    pytest.importorskip("prefect_dask")
    assert runs_here(task_runner(address)) is here
