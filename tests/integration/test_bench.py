"""The benchmark's short mode runs in CI: it must be able to measure every figure."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.core.project import PROJECT_ROOT

# Beside other tests: this test checks that the benchmark measures every figure, not the figures themselves
# (the benchmark's targets are judged when it runs alone, bench/README.md).
pytestmark = pytest.mark.integration


def test_benchmark_short_mode_measures_every_figure(tmp_path: Path) -> None:
    """One repetition with short sleeps: every ratio is measured (whether the machine meets the targets
    is the benchmark's report, not this test's verdict), the resume rebuilt nothing, and every
    process's CPU time was read."""
    figures_file = tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "bench" / "release_bench.py"), "--quick", "--json", str(figures_file)],
        capture_output=True, text=True, timeout=900, env={**os.environ}, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(figures_file.read_text())
    assert set(figures["ratios"]) == {"p1", "p2", "p3", "p4", "p5", "p6"}
    assert all(math.isfinite(value) and value > 0 for value in figures["ratios"].values())
    assert figures["ratios"]["p2"] < 1 and figures["ratios"]["p3"] < 1  # nothing to do costs less than everything
    assert figures["ratios"]["p5"] < 1  # four at once cost less than four one after another
    assert figures["median_s"]["signed"] > 0 and figures["p6_through_the_proxy"] > 0
    assert figures["resume_rebuilds"] == [0]
    assert figures["median_s"]["single"] > max(figures["sleeps_s"].values())  # the builds did sleep
    assert {"release (this process)", "Docker engine", "registry"} <= set(figures["cpu_s_largest_p4_release"])
    assert all(value > 0 for value in figures["cpu_s_largest_p4_release"].values())
    assert "P4 seconds per extra image" in done.stdout
