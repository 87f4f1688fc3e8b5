"""The parallel run's scheduler (tests/plan.py), driven by fake xdist workers that behave as xdist's do:
a worker runs a test only when it holds the next one or was told to stop."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.plan import DURATIONS_KEY, PLAN_FILE, SerialLastScheduling


class Cache:
    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def get(self, key: str, default: Any) -> Any:
        return self.values.get(key, default)


class Config:
    def __init__(self, workers: int, durations: dict[str, float]) -> None:
        self.workers = workers
        self.cache = Cache({DURATIONS_KEY: durations})

    def getvalue(self, name: str) -> list[str]:
        assert name == "tx"
        return ["popen"] * self.workers


@dataclass(eq=False)
class Gateway:
    id: str


@dataclass(eq=False)
class Worker:
    gateway: Gateway
    queue: list[int] = field(default_factory=list)
    stop_sent: bool = False
    crashed: bool = False

    @property
    def shutting_down(self) -> bool:
        return self.stop_sent

    def send_runtest_some(self, indices: list[int]) -> None:
        assert not self.stop_sent, f"{self.gateway.id} got tests after it was told to stop"
        self.queue.extend(indices)

    def shutdown(self) -> None:
        self.stop_sent = True

    def can_run(self) -> bool:
        return len(self.queue) >= 2 or (self.stop_sent and bool(self.queue))


@dataclass
class Ran:
    worker: str
    nodeid: str
    alive: list[str]  # the workers still in the run as the test started
    done_before: set[str]


def run(collection: list[str], keys: dict[str, str], durations: dict[str, float], workers: int, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, crash: str = "") -> list[Ran]:
    """Run ``collection`` through the scheduler; ``crash``: the test during which its worker dies."""
    monkeypatch.setenv("FMA_TEST_SHARED", str(tmp_path))
    (tmp_path / PLAN_FILE).write_text(json.dumps(keys))
    sched = SerialLastScheduling(Config(workers, durations))  # type: ignore[arg-type]
    nodes = [Worker(Gateway(f"gw{i}")) for i in range(workers)]
    for node in nodes:
        sched.add_node(node)  # type: ignore[arg-type]
        sched.add_node_collection(node, collection)  # type: ignore[arg-type]
    assert sched.collection_is_completed
    sched.schedule()
    ran: list[Ran] = []
    done: set[str] = set()
    spare = 0
    while True:
        alive = [n for n in nodes if n in sched.nodes]
        for node in alive:
            if node.stop_sent and not node.queue:
                assert sched.remove_node(node) is None  # type: ignore[arg-type]
                nodes.remove(node)
                break
        else:
            runnable = [n for n in alive if n.can_run()]
            if not runnable:
                break
            node = runnable[len(ran) % len(runnable)]  # the workers take turns
            index = node.queue.pop(0)
            nodeid = collection[index]
            ran.append(Ran(node.gateway.id, nodeid, [n.gateway.id for n in alive], set(done)))
            if nodeid == crash:
                crash = ""
                lost = sched.remove_node(node)  # type: ignore[arg-type]
                assert lost == nodeid
                nodes.remove(node)
                spare += 1
                new = Worker(Gateway(f"spare{spare}"))  # xdist starts a replacement
                nodes.append(new)
                sched.add_node(new)  # type: ignore[arg-type]
                sched.add_node_collection(new, collection)  # type: ignore[arg-type]
                sched.schedule()
                continue
            done.add(nodeid)
            sched.mark_test_complete(node, index)  # type: ignore[arg-type]
    assert sched.tests_finished
    return ran


UNIT = [f"tests/unit/test_u.py::test_{i}" for i in range(6)]
FIXTURED = [f"tests/integration/test_m.py::test_{i}" for i in range(3)]
LONE = [f"tests/integration/test_l.py::test_{i}" for i in range(4)]
SERIAL = ["tests/integration/test_s.py::test_a", "tests/integration/test_s.py::test_b"]
COLLECTION = UNIT + FIXTURED + SERIAL + LONE
KEYS = {**{n: n for n in UNIT + LONE}, **dict.fromkeys(FIXTURED, "tests/integration/test_m.py::shared"),
        **dict.fromkeys(SERIAL, "serial")}


@pytest.mark.parametrize("workers", [1, 2, 3, 5])
def test_every_test_runs_once_and_serial_tests_run_last_and_alone(
    workers: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever the number of workers: each test once; the serial ones after all others, with one worker left."""
    ran = run(COLLECTION, KEYS, {}, workers, tmp_path, monkeypatch)
    assert sorted(r.nodeid for r in ran) == sorted(COLLECTION)
    serial = [r for r in ran if r.nodeid in SERIAL]
    assert [r.nodeid for r in serial] == SERIAL  # in collection order
    for r in serial:
        assert r.alive == [r.worker], "a serial test ran while another worker was still in the run"
        assert set(COLLECTION) - set(SERIAL) <= r.done_before


def test_tests_that_share_a_module_fixture_run_on_one_worker_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A module fixture's tests go to one worker, in order; tests of no shared fixture spread over workers."""
    ran = run(COLLECTION, KEYS, {}, 3, tmp_path, monkeypatch)
    fixtured = [r for r in ran if r.nodeid in FIXTURED]
    assert [r.nodeid for r in fixtured] == FIXTURED
    assert len({r.worker for r in fixtured}) == 1
    assert len({r.worker for r in ran if r.nodeid in LONE}) > 1  # the tests of no shared fixture spread


def test_each_worker_runs_its_unit_tests_before_any_integration_test_and_long_units_go_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Unit tests before integration tests on every worker (Hypothesis and Prefect's threads); then the units
    never timed, then the last run's longest first."""
    durations = {LONE[3]: 90.0, FIXTURED[0]: 20.0, FIXTURED[1]: 20.0, LONE[0]: 1.0, LONE[1]: 0.5, UNIT[5]: 50.0}
    ran = run(COLLECTION, KEYS, durations, 2, tmp_path, monkeypatch)
    for worker in {r.worker for r in ran}:
        areas = [r.nodeid.split("/")[1] for r in ran if r.worker == worker]
        assert areas == sorted(areas, key=["unit", "integration"].index)
    ran = run(COLLECTION, KEYS, durations, 1, tmp_path, monkeypatch)  # one worker: the order of the queue
    integration = [r.nodeid for r in ran if "integration" in r.nodeid and r.nodeid not in SERIAL]
    assert integration[0] == LONE[2]  # never timed: it may be long
    assert integration[1:] == [LONE[3], *FIXTURED, LONE[0], LONE[1]]  # then longest first


def test_a_crashed_workers_tests_run_again_on_another(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests a crashed worker held go to its replacement; the serial tests still run alone."""
    ran = run(COLLECTION, KEYS, {}, 2, tmp_path, monkeypatch, crash=FIXTURED[1])
    names = [r.nodeid for r in ran]
    assert names.count(FIXTURED[1]) == 1  # xdist reports the crashed test as failed: it is not run again
    assert set(names) == set(COLLECTION) and names.count(FIXTURED[2]) == 1
    for r in ran:
        if r.nodeid in SERIAL:
            assert r.alive == [r.worker]
