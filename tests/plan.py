"""How a parallel run (pytest-xdist) spreads the tests over its workers.

A unit of work goes whole to one worker. Tests of a module that share a module- or class-scoped
fixture form one unit, so that fixture is made once; every other test is a unit of its own
(session fixtures are made once per worker, or once per run: tests/integration/shared.py). Units
go to whichever worker is idle: the unit tests first (each worker runs its unit tests before any
integration test: see pyproject.toml), then the units never timed, then the longest units first, by
the durations of the last run (pytest's cache) or else of tests/durations.json. Tests marked ``serial`` (they restart
engines, measure, or read the machine's process table) run after every other test, one by one on
one worker, with no other worker left running.

The workers tell the scheduler what it cannot see in node ids (which tests are serial, which share
a fixture) through a file in the run's shared directory, written as they finish collecting.

An xdist worker runs a test only once it knows the next one (or that none follows): a worker with
one test pending is idle, so it gets more work as soon as it has one test left.
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from xdist.workermanage import WorkerController

PLAN_FILE = "plan.json"
DURATIONS_KEY = "fma-release/durations"
SEED_DURATIONS = Path(__file__).with_name("durations.json")
SHARED_SCOPES = ("module", "class", "package")


def shared_dir() -> Path | None:
    """The run's shared directory (tests/conftest.py makes it), or ``None`` outside a test run."""
    found = os.environ.get("FMA_TEST_SHARED")
    return Path(found) if found else None


def unit_keys(items: Sequence[pytest.Item]) -> dict[str, str]:
    """Each test's unit: ``serial``, its module and first shared fixture when it shares one, else itself."""
    keys: dict[str, str] = {}
    parent: dict[str, str] = {}  # union-find over "<module>::<fixture>"

    def root(key: str) -> str:
        while parent.setdefault(key, key) != key:
            key = parent[key]
        return key

    shared_of: dict[str, list[str]] = {}
    for item in items:
        if item.get_closest_marker("serial") is not None:
            keys[item.nodeid] = "serial"
            continue
        module = item.nodeid.split("::", 1)[0]
        info = getattr(item, "_fixtureinfo", None)  # pytest's own record of the fixtures a test uses
        if info is None:
            shared_of[item.nodeid] = [f"{module}::?"]
            continue
        names = sorted(name for name, defs in info.name2fixturedefs.items() if defs and defs[-1].scope in SHARED_SCOPES)
        shared_of[item.nodeid] = [f"{module}::{name}" for name in names]
        for first, other in zip(shared_of[item.nodeid], shared_of[item.nodeid][1:], strict=False):
            parent[root(other)] = root(first)
    for nodeid, fixtures in shared_of.items():
        keys[nodeid] = root(fixtures[0]) if fixtures else nodeid
    return keys


def write_plan(items: Sequence[pytest.Item]) -> None:
    """Record each collected test's unit for the scheduler (every worker writes the same; one rename wins)."""
    directory = shared_dir()
    if directory is None:
        return
    partial = directory / f".{PLAN_FILE}.{os.getpid()}"
    partial.write_text(json.dumps(unit_keys(items)))
    partial.replace(directory / PLAN_FILE)


def read_plan() -> dict[str, str]:
    directory = shared_dir()
    path = directory / PLAN_FILE if directory else None
    found: dict[str, str] = json.loads(path.read_text()) if path and path.is_file() else {}
    return found


def known_durations(config: pytest.Config) -> dict[str, float]:
    """Seconds per test: the last run's (pytest's cache), else the ones kept in tests/durations.json."""
    cache = getattr(config, "cache", None)
    found = cache.get(DURATIONS_KEY, None) if cache is not None else None
    if not found and SEED_DURATIONS.is_file():
        found = json.loads(SEED_DURATIONS.read_text())
    return {str(k): float(v) for k, v in (found or {}).items()}


def save_durations(config: pytest.Config, durations: dict[str, float]) -> None:
    """Keep this run's durations (with those of tests it did not run) for the next run's order."""
    cache = getattr(config, "cache", None)
    if cache is None or not durations:
        return
    merged = {**(cache.get(DURATIONS_KEY, None) or {}), **{k: round(v, 2) for k, v in durations.items()}}
    cache.set(DURATIONS_KEY, merged)


def area(nodeid: str) -> str:
    """``tests/unit`` or ``tests/integration``: areas run in collection order, whatever their durations."""
    return "/".join(nodeid.split("/")[:2])


class SerialLastScheduling:
    """Units to idle workers, longest first; then the serial tests on one worker while no other runs."""

    def __init__(self, config: pytest.Config, log: Any = None) -> None:
        from xdist.workermanage import parse_tx_spec_config

        self.config = config
        self.numnodes = len(parse_tx_spec_config(config))
        self.log = log.serialsched if log is not None else (lambda *_: None)
        self.collection: list[str] | None = None
        self.registered: dict[WorkerController, list[str]] = {}
        self.node2pending: dict[WorkerController, list[int]] = {}
        self.units: deque[list[int]] = deque()  # parallel units not yet sent
        self.serial: list[int] = []  # serial tests not yet sent
        self.serial_ids: set[int] = set()  # every serial test
        self.serial_node: WorkerController | None = None

    # -- what xdist asks -------------------------------------------------------------------------

    @property
    def nodes(self) -> list[WorkerController]:
        return list(self.node2pending)

    @property
    def collection_is_completed(self) -> bool:
        return len(self.registered) >= self.numnodes

    @property
    def tests_finished(self) -> bool:
        if not self.collection_is_completed or self.collection is None or self.units or self.serial:
            return False
        return all(len(pending) < 2 for pending in self.node2pending.values())

    @property
    def has_pending(self) -> bool:
        return bool(self.units or self.serial or any(self.node2pending.values()))

    def add_node(self, node: WorkerController) -> None:
        assert node not in self.node2pending
        self.node2pending[node] = []

    def add_node_collection(self, node: WorkerController, collection: Sequence[str]) -> None:
        assert node in self.node2pending
        if self.collection is not None and list(collection) != self.collection:
            from xdist.report import report_collection_diff

            self.log(report_collection_diff(self.collection, collection, "first", node.gateway.id))
            return
        self.registered[node] = list(collection)

    def mark_test_complete(self, node: WorkerController, item_index: int, duration: float = 0) -> None:
        self.node2pending[node].remove(item_index)
        self._dispatch()

    def mark_test_pending(self, item: str) -> None:
        raise NotImplementedError("tests are not stolen back under this scheduler")

    def remove_pending_tests_from_node(self, node: WorkerController, indices: Sequence[int]) -> None:
        raise NotImplementedError("tests are not stolen back under this scheduler")

    def remove_node(self, node: WorkerController) -> str | None:
        """Forget a worker that ended; what a crashed one left goes back, in order, to be run again."""
        pending = self.node2pending.pop(node)
        if node is self.serial_node:
            self.serial_node = None
        crashed = None
        if pending:
            assert self.collection is not None
            crashed = self.collection[pending.pop(0)]
            self.serial[:0] = [i for i in pending if i in self.serial_ids]
            rest = [i for i in pending if i not in self.serial_ids]
            if rest:
                self.units.appendleft(rest)
        self._dispatch()
        return crashed

    def schedule(self) -> None:
        assert self.collection_is_completed
        if self.collection is None:
            collections = list(self.registered.values())
            if any(c != collections[0] for c in collections[1:]):
                self.log("the workers collected different tests: nothing is run")
                return
            self.collection = collections[0]
            self._plan(self.collection, read_plan(), known_durations(self.config))
        self._dispatch()

    # -- the plan ----------------------------------------------------------------------------------

    def _plan(self, collection: list[str], keys: dict[str, str], durations: dict[str, float]) -> None:
        by_key: dict[str, list[int]] = {}
        for index, nodeid in enumerate(collection):
            key = keys.get(nodeid, nodeid.split("::", 1)[0])  # unknown: its module, the safe guess
            if key == "serial":
                self.serial_ids.add(index)
                self.serial.append(index)
            else:
                by_key.setdefault(key, []).append(index)
        areas = list(dict.fromkeys(area(nodeid) for nodeid in collection))

        def order(unit: list[int]) -> tuple[int, bool, float]:
            known = [durations[collection[i]] for i in unit if collection[i] in durations]
            # A unit never timed (a new test) may be long: it goes before the timed ones.
            return areas.index(area(collection[unit[0]])), bool(known), -sum(known)

        self.units.extend(sorted(by_key.values(), key=order))  # stable: equal units keep collection order

    def _idle(self, node: WorkerController) -> bool:
        return not node.shutting_down and len(self.node2pending[node]) < 2

    def _send(self, node: WorkerController, indices: list[int]) -> None:
        self.node2pending[node].extend(indices)
        node.send_runtest_some(indices)

    def _dispatch(self) -> None:
        """Give idle workers a unit; once none is left, keep one worker for the serial tests and
        end the others; send it the serial tests when it is the only one left."""
        if self.collection is None:
            return
        for node in self.nodes:
            while self.units and self._idle(node):  # a unit of one test leaves the worker idle: it needs the next
                self._send(node, self.units.popleft())
        if self.units:
            return
        if self.serial:
            if self.serial_node is None:
                self.serial_node = next((n for n in self.nodes if self._idle(n)), None)
            if self.serial_node is None:
                return  # the first worker to go idle keeps the serial tests
            for node in self.nodes:
                if node is not self.serial_node and not node.shutting_down:
                    node.shutdown()  # it runs what it holds, then ends
            if self.nodes == [self.serial_node]:
                serial, self.serial = self.serial, []
                self._send(self.serial_node, serial)
                self.serial_node.shutdown()
            return
        for node in self.nodes:
            if not node.shutting_down:
                node.shutdown()


def make_scheduler(config: pytest.Config, log: Any) -> SerialLastScheduling | None:
    """Our scheduler for xdist's default distribution (``--dist load``); xdist's own for any other."""
    return SerialLastScheduling(config, log) if config.getoption("dist") == "load" else None
