"""Chaos rounds on real parts (bench/chaos.py): one part of a signed release of the FMA sample killed at one
moment, the same tag run again, and every invariant checked (whole or absent, the re-run complete, verified
and rebuilding nothing published, a line within 60 s, a bounded console without a traceback, no leaked slot,
no process left). CI plays three rounds of a fixed seed, and rounds at moments that once broke an invariant.

The runner starts its own registry, a second dockerd on its own bridge and a Prefect server, and kills them:
nothing the other tests use. It is ``serial`` all the same: it reads the machine's process table (what the
release left running) and its rounds are timed against bounds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import chaos

pytestmark = [pytest.mark.integration, pytest.mark.serial]

SEED = 6  # rounds 1-3: dockerd, a BuildKit client, the release process with SIGINT


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, prefect_template: Path) -> Iterator[tuple[chaos.Lab, chaos.Shape]]:
    """The runner's parts, and what a clean release of the sample looks like on them."""
    parts = chaos.Lab.start(tmp_path_factory.mktemp("chaos"), prefect_template)
    try:
        yield parts, chaos.clean_release(parts)
    finally:
        parts.stop()


def test_three_rounds_of_a_fixed_seed_break_no_invariant(lab: tuple[chaos.Lab, chaos.Shape]) -> None:
    """The seed's three rounds each kill their part while the release runs, and the re-run ends whole."""
    parts, shape = lab
    outcomes, broken = chaos.run_rounds(parts, shape, SEED, [1, 2, 3])
    assert broken == ""
    assert [o.part for o in outcomes] == ["dockerd", "buildkit", "release:SIGINT"]
    assert all(o.killed for o in outcomes), [(o.part, o.moment) for o in outcomes]  # each moment was reached


def test_release_killed_while_the_controllers_are_signed_resumes_at_once_and_lists_every_platform(
    lab: tuple[chaos.Lab, chaos.Shape],
) -> None:
    """SIGKILL of the release once the ko images are pushed and being signed: the re-run takes the tag's slot from
    the dead process without waiting out the stale bound, keeps the pushed images (its summary lists each of their
    platform manifests, as a clean release's does), and ends whole and verified."""
    parts, shape = lab
    plan = chaos.Plan(round=101, part="release:SIGKILL", moment="dual-pods-controller: signing", delay=0.1, down=0)
    out = chaos.play(parts, shape, plan)
    assert out.killed and "dual-pods-controller" in out.published_before
    assert "dual-pods-controller" not in out.rebuilt
    rerun = (parts.work / "runs" / "round101-rerun.log").read_text()
    assert "slot taken over: release-v1.101.0 from flow run" in rerun and "is gone" in rerun
