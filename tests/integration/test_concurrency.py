"""One run per tag at a time, real runs side by side; success and failure events."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

from devkit.registry import RegistryProcess
from devkit.sample_source import SampleSource
from flows.events import FAILED, SUCCEEDED
from flows.release import release
from tasks.core.errors import SourceError
from tests.integration.prefect_helpers import events, slot_limit, task_log_window, wait_for

pytestmark = pytest.mark.integration
CLI = str(Path(sys.executable).with_name("fma-release"))
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
IMAGES = ("dual-pods-controller", "launcher-populator")


def flow_runs_of(tag: str, source: Path) -> list[Any]:
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[f"release {tag}"])))
    return [r for r in runs if (r.parameters or {}).get("source") == str(source)]


def overlap(a: tuple[datetime, datetime], b: tuple[datetime, datetime]) -> float:
    return (min(a[1], b[1]) - max(a[0], b[0])).total_seconds()


def start_run(src: SampleSource, registry: str, tmp: Path) -> subprocess.Popen[str]:
    log = (tmp / f"run-{uuid.uuid4().hex[:6]}.log").open("w")
    return subprocess.Popen(
        [CLI, "run", src.tag, "--source", str(src.path), "--config", str(src.config), "--registry", registry,
         "--dry-run"],
        stdout=log, stderr=subprocess.STDOUT, text=True, env=dict(os.environ),
    )


def test_same_tag_runs_never_overlap_while_other_tags_do(
    registry: RegistryProcess, namespace: str, sample: Callable[..., SampleSource], tmp_path: Path,
) -> None:
    """Two CLI runs of one tag hold its slot one after the other; a run of another tag runs alongside. The tags are
    the test's own: a slot another test of this worker left counted would hold a shared tag for the stale bound."""
    sleeps = dict.fromkeys(IMAGES, 3)
    minor = uuid.uuid4().int % 10_000
    tag, other_tag = f"v1.{minor}.1", f"v1.{minor}.2"
    same = sample(tag=tag, images=IMAGES, sleeps=sleeps, nonce=uuid.uuid4().hex)
    other = sample(tag=other_tag, images=IMAGES, sleeps=sleeps, nonce=uuid.uuid4().hex)
    reg = f"{registry.host}/{namespace}"
    procs = [start_run(same, reg, tmp_path), start_run(same, reg, tmp_path), start_run(other, reg, tmp_path)]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, [p.read_text() for p in tmp_path.glob("run-*.log")]

    first, second = wait_for(f"two runs of {tag}", lambda: flow_runs_of(tag, same.path) or None)
    (third,) = flow_runs_of(other_tag, other.path)
    for run in (first, second, third):
        assert run.state.is_completed()
    a, b, c = (task_log_window(os.environ["PREFECT_API_URL"], str(r.id)) for r in (first, second, third))
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "concurrency.json").write_text(json.dumps({
        "same_tag_gap_s": -overlap(a, b), "other_tag_overlap_s": max(overlap(a, c), overlap(b, c)),
        "windows": {n: [w[0].isoformat(), w[1].isoformat()] for n, w in zip("abc", (a, b, c), strict=True)},
    }, indent=2))
    assert overlap(a, b) < 0, f"runs of one tag overlapped by {overlap(a, b):.2f}s"
    assert max(overlap(a, c), overlap(b, c)) > 0, "runs of two tags never ran side by side"
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(slot_limit(tag))
    assert limit.limit == 1 and limit.active_slots == 0
    # Each finished run announced itself for automations.
    succeeded = wait_for("three success events", lambda: _events_for_runs(SUCCEEDED, [first, second, third]))
    assert {e.resource["fma.release.tag"] for e in succeeded} == {tag, other_tag}


def _events_for_runs(name: str, runs: list[Any]) -> list[Any] | None:
    wanted = {f"prefect.flow-run.{r.id}" for r in runs}
    found = [e for e in events(name) if {r.id for r in e.related} & wanted]
    return found if len(found) == len(runs) else None


def test_failed_release_emits_failed_event(registry: RegistryProcess, namespace: str,
                                           sample: Callable[..., SampleSource]) -> None:
    """A tag missing from the source fails the run and emits fma.release.failed naming the problem."""
    src = sample(tag="v0.3.1", images=IMAGES)
    tag = f"v0.{uuid.uuid4().int % 10_000}.7"
    with pytest.raises(SourceError):
        release(tag=tag, source=str(src.path), registry=f"{registry.host}/{namespace}",
                     config=str(src.config), dry_run=True)
    found = wait_for("the failure event", lambda: events(FAILED, f"fma.release.{tag}"))
    (event,) = found
    assert f"tag {tag} is not in the source" in event.payload["error"]
    assert event.resource["fma.release.tag"] == tag
