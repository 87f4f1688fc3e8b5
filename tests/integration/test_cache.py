"""A cached build is never a stale one: a release of a tag already built for another registry reuses the ko
builds (their layouts live in the state directory), publishes under its own references, and shows no
failed task run (real ko, BuildKit, registry and Prefect server)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from devkit.fma_sample import FmaBases, make_fma_source
from devkit.registry import RegistryProcess
from flows.release import release
from tasks.core import progress
from tasks.oci.registry import RegistryAPI
from tests.integration.prefect_helpers import recorded_task_runs

pytestmark = pytest.mark.integration


KO_BUILDS = ("build dual-pods-controller", "build launcher-populator")


def test_a_release_to_another_registry_reuses_ko_builds_without_a_failed_task(
    registry: RegistryProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fma_bases: FmaBases,
    events: list[tuple[str, str, str]],
) -> None:
    """The first run downloads the Go modules before its ko builds compile (the sample's go.mod requires none:
    no warning); the second registry gets both controllers from the first run's cached builds, under its own
    references; none of the second run's task runs failed, and its ko builds were not run again."""
    monkeypatch.setenv("FMA_STATE_DIR", str(tmp_path / "state"))
    first_ns, second_ns = (f"t{uuid.uuid4().hex[:10]}/fma" for _ in range(2))
    src = make_fma_source(tmp_path / "fma", bases=fma_bases)  # the run's bases: only the builds are this test's
    run_ids: list[Any] = []
    progress.on_run_started(run_ids.append)
    for namespace in (first_ns, second_ns):
        release(tag=src.tag, source=str(src.path), registry=f"{registry.host}/{namespace}", sign=False,
                retry_base_delay=0.1)
    assert ("Go modules", "downloaded", "0 module(s)") in [(i, s, d.split(" in ")[0]) for i, s, d in events]
    assert [d for i, s, d in events if s == "warning" and "Go modules" in d] == []
    first = recorded_task_runs(run_ids[0], f"go modules {src.tag}", *KO_BUILDS, f"summary {src.tag}")
    (modules,) = [r for r in first if r.name == f"go modules {src.tag}"]
    assert modules.state.is_completed()
    first_ko = [r for r in first if r.name in KO_BUILDS]
    assert len(first_ko) == 2 and all(r.start_time >= modules.end_time for r in first_ko)  # compiled after it
    runs = recorded_task_runs(run_ids[-1], *KO_BUILDS, f"summary {src.tag}")
    assert [r.name for r in runs if r.state and r.state.is_failed()] == []
    ko_builds = [r for r in runs if r.name in KO_BUILDS]
    assert len(ko_builds) == 2 and all(r.state.name == "Cached" for r in ko_builds), [
        (r.name, r.state.name) for r in ko_builds]
    with RegistryAPI(registry.host) as api:
        for name in ("dual-pods-controller", "launcher-populator"):
            first = api.digest(f"{first_ns}/{name}", src.tag)
            assert first and api.digest(f"{second_ns}/{name}", src.tag) == first  # the same build, published twice
    layouts = [p for p in (tmp_path / "state" / "layouts").iterdir() if (p / "index.json").is_file()]
    assert len(layouts) == 2  # one layout per controller, kept for the next run
