"""Chaos rounds on real parts (bench/chaos.py): one part of a signed release of the FMA sample killed at one
moment, the same tag run again, and every invariant checked (whole or absent, the re-run complete, verified
and rebuilding nothing published, a line within 60 s, a bounded console without a traceback, no leaked slot,
no process left). CI plays three rounds of a fixed seed; the benchmark plays 30 (docs/chaos.md).

The runner starts its own registry, a second dockerd on its own bridge and a Prefect server, and kills them:
nothing the other tests use. It is ``serial`` all the same: it reads the machine's process table (what the
release left running) and its rounds are timed against bounds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import chaos

pytestmark = [pytest.mark.integration, pytest.mark.serial]

SEED = 16  # rounds 1-3 kill dockerd, the release process (SIGKILL), a cosign process


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, prefect_template: Path) -> Iterator[tuple[chaos.Lab, chaos.Shape]]:
    """The runner's parts, and what a release of the sample without a fault looks like on them."""
    parts = chaos.Lab.start(tmp_path_factory.mktemp("chaos"), prefect_template)
    try:
        yield parts, chaos.clean_release(parts)
    finally:
        parts.stop()


def test_three_rounds_of_a_fixed_seed_break_no_invariant(lab: tuple[chaos.Lab, chaos.Shape]) -> None:
    """The seed's three rounds each kill their part while the release runs, and each re-run ends whole, verified,
    with nothing published rebuilt; the re-run after SIGKILL of the release takes the tag's slot from the dead
    process at once (play() fails a take-over by the stale bound)."""
    parts, shape = lab
    outcomes, broken = chaos.run_rounds(parts, shape, SEED, [1, 2, 3])
    assert broken == ""
    assert [o.part for o in outcomes] == ["dockerd", "release:SIGKILL", "cosign"]
    assert all(o.killed for o in outcomes), [(o.part, o.moment) for o in outcomes]  # each moment was reached
