"""The promotion benchmark's short mode runs in CI: it must measure every figure, and within one registry no
blob byte may be uploaded again."""

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


def test_promotion_benchmark_measures_every_figure(tmp_path: Path) -> None:
    """One repetition: the release's push time and both promotions are measured (whether the machine meets the
    targets is the benchmark's report, not this test's verdict); the promotion within one registry sent 0 bytes
    of blobs into the images' repositories."""
    figures_file = tmp_path / "promote.json"
    done = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "bench" / "promote_bench.py"), "--quick", "--json", str(figures_file)],
        capture_output=True, text=True, timeout=1200, env={**os.environ}, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(figures_file.read_text())
    assert set(figures["ratios"]) == {"pr1", "pr2", "pr1c", "pr2c"}
    assert all(math.isfinite(value) and value > 0 for value in figures["ratios"].values())
    assert figures["blob_bytes_uploaded_again"] == [0]
    assert figures["median_s"]["within_copy"] < figures["median_s"]["within"]  # the copy is part of the promotion
    assert all(value > 0 for key, value in figures["phases_median_s"].items() if "signing" not in key)
    assert "B1 blob bytes uploaded again within (target 0)" in done.stdout
