"""The signing benchmark runs in CI: it must measure every figure with the real cosign."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.core.project import PROJECT_ROOT

# Beside other tests: this test checks that the benchmark measures every figure, not the figures themselves
# (the benchmark's targets are judged when it runs alone, bench/README.md).
pytestmark = pytest.mark.integration


def test_signing_benchmark_measures_every_figure(tmp_path: Path) -> None:
    figures_file = tmp_path / "signing.json"
    done = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "bench" / "signing_bench.py"), "--count", "2", "--json", str(figures_file)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(figures_file.read_text())
    assert all(math.isfinite(figures[k]) and figures[k] > 0 for k in ("s1", "s2", "s3"))
    assert figures["s2"] < 1  # the HEAD replaced a cosign process: a first signing costs less than before
    assert "S2 first signing" in done.stdout
