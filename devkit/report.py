"""The benchmarks' output: their figures as JSON, and a table of them on stdout."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def report(figures: dict[str, Any], rows: Sequence[tuple[str, str]], reps: int, path: Path) -> None:
    """Write ``figures`` to ``path`` and print ``rows`` (label, value) as a two-column table."""
    path.write_text(json.dumps(figures, indent=2) + "\n")
    width = max(len(label) for label, _ in rows) + 2
    print(f"{'measure (medians of ' + str(reps) + ')':<{width}}{'value':>12}")
    for label, value in rows:
        print(f"{label:<{width}}{value:>12}")
    print(f"figures written to {path}")
