"""How a parallel run (pytest-xdist) spreads the tests over its workers.

Each test module is one unit of work, sent whole to one worker, so a module's fixtures are made
once. Units go out in collection order (the unit tests come first: see pyproject.toml), each to
the next worker that is idle. Tests marked ``serial`` (they restart engines, measure, or read the
machine's process table) run after every other test, one by one on one worker, with no other
worker left running.

The workers tell the scheduler which tests are serial through a file in the run's shared
directory, written as they finish collecting (the scheduler sees node ids only).

An xdist worker runs a test only once it knows the next one (or that none follows): a worker
with one test pending is idle, so a worker gets more work as soon as it has one test left.
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

SERIAL_FILE = "serial-tests.json"


def shared_dir() -> Path | None:
    """The run's shared directory (tests/conftest.py makes it), or ``None`` outside a test run."""
    found = os.environ.get("FMA_TEST_SHARED")
    return Path(found) if found else None


def write_serial_ids(items: Sequence[pytest.Item]) -> None:
    """Record the node ids of the collected tests marked ``serial``, for the scheduler."""
    directory = shared_dir()
    if directory is None:
        return
    ids = [item.nodeid for item in items if item.get_closest_marker("serial") is not None]
    partial = directory / f".{SERIAL_FILE}.{os.getpid()}"
    partial.write_text(json.dumps(ids))
    partial.replace(directory / SERIAL_FILE)  # every worker writes the same list; one rename wins


def read_serial_ids() -> set[str]:
    directory = shared_dir()
    path = directory / SERIAL_FILE if directory else None
    return set(json.loads(path.read_text())) if path and path.is_file() else set()


def module_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


class SerialLastScheduling:
    """Modules to idle workers, whole; then the serial tests on one worker while no other runs."""

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
        self.serial_ids: list[int] = []  # every serial test
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
        """Forget a worker that ended; the tests a crashed one left go back, in order, to be run again."""
        pending = self.node2pending.pop(node)
        if node is self.serial_node:
            self.serial_node = None
        crashed = None
        if pending:
            assert self.collection is not None
            crashed = self.collection[pending.pop(0)]
            serial_ids = set(self.serial_ids)
            self.serial[:0] = [i for i in pending if i in serial_ids]
            rest = [i for i in pending if i not in serial_ids]
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
            self.serial_ids = [i for i, nodeid in enumerate(self.collection) if nodeid in read_serial_ids()]
            self._plan(self.collection)
        self._dispatch()

    # -- the plan ----------------------------------------------------------------------------------

    def _plan(self, collection: list[str]) -> None:
        serial = set(self.serial_ids)
        by_module: dict[str, list[int]] = {}
        for index, nodeid in enumerate(collection):
            if index not in serial:
                by_module.setdefault(module_of(nodeid), []).append(index)
        self.units.extend(by_module.values())
        self.serial = list(self.serial_ids)

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
            if self.units and self._idle(node):
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
