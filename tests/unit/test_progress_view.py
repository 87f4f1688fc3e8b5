"""The line-per-change display (not a terminal): a state said again with the same detail is not a new line."""

from __future__ import annotations

import io

from rich.console import Console

from flows.progress_view import ProgressView
from tasks.core.status import Status


def _view() -> tuple[ProgressView, io.StringIO]:
    out = io.StringIO()
    return ProgressView(Console(file=out, force_terminal=False, width=200)), out


def test_the_same_state_and_detail_twice_is_one_line() -> None:
    view, out = _view()
    view.update("requester", Status.FAILED, "cannot reach the Docker engine")
    view.update("requester", Status.FAILED, "cannot reach the Docker engine")
    assert out.getvalue().count("requester: failed: cannot reach the Docker engine") == 1


def test_a_new_state_or_detail_is_a_new_line() -> None:
    view, out = _view()
    view.update("requester", Status.ENGINE_LOST, "cannot reach the Docker engine")
    view.update("requester", Status.FAILED, "cannot reach the Docker engine")
    view.update("requester", Status.FAILED, "another reason")
    view.update("launcher", Status.FAILED, "another reason")
    lines = out.getvalue().splitlines()
    assert [line.split("] ", 1)[1] for line in lines] == [
        "requester: engine lost: cannot reach the Docker engine",
        "requester: failed: cannot reach the Docker engine",
        "requester: failed: another reason",
        "launcher: failed: another reason",
    ]


def test_a_failed_steps_output_prints_under_its_failure_and_leaves_the_row_alone() -> None:
    """Output lines print as `item | line`, each time; the run's verdict on the failure after them is not said again."""
    view, out = _view()
    view.update("requester linux/amd64", Status.FAILED, "image requester linux/amd64 failed to build")
    view.update("requester linux/amd64", Status.OUTPUT, "attempt 12 of 12")
    view.update("requester linux/amd64", Status.OUTPUT, "attempt 12 of 12")
    view.update("requester linux/amd64", Status.FAILED, "image requester linux/amd64 failed to build")
    assert [line.split("] ", 1)[1] for line in out.getvalue().splitlines()] == [
        "requester linux/amd64: failed: image requester linux/amd64 failed to build",
        "requester linux/amd64 | attempt 12 of 12",
        "requester linux/amd64 | attempt 12 of 12",
    ]


def test_output_prints_beside_the_live_table_too() -> None:
    """On a terminal the output lines go above the table, as warnings do."""
    out = io.StringIO()
    view = ProgressView(Console(file=out, force_terminal=True, width=200))
    try:
        view.update("launcher", Status.OUTPUT, "No matching distribution found for uvicorn")
    finally:
        view.close()
    assert "launcher | No matching distribution found for uvicorn" in out.getvalue()
