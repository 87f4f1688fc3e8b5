"""Where a CLI run's time went, told from the progress reports' arrival times."""

from __future__ import annotations

from collections.abc import Sequence

from tasks.core.progress import RUN
from tasks.core.status import IMAGE_DONE, Status


def where_time_went(started: float, ended: float, reports: Sequence[tuple[float, str, str]],
                    server_configured: bool) -> str:
    """One line: the total, then Prefect's start-up, the images and the rest.

    ``reports`` are ``(monotonic time, item, state)`` in arrival order; the run's first report
    ("run", "started") marks the moment Prefect had started the flow run.
    """
    total = ended - started
    flow_started = next((at for at, item, state in reports if item == RUN and state == Status.STARTED), None)
    if flow_started is None:
        return f"{total:.1f}s"
    parts = [f"Prefect start-up {flow_started - started:.1f}s"
             + ("" if server_configured else " (a temporary server: set PREFECT_API_URL to a running one)")]
    image_times = [at for at, item, state in reports if item != RUN and not item.startswith("chart ")
                   and state in {Status.BUILDING, Status.PUSHING, *IMAGE_DONE}]
    signing = [at for at, _, state in reports if state in {Status.SIGNING, Status.SIGNED, Status.ALREADY_SIGNED}]
    signed = max(signing) - min(signing) if signing else 0.0  # the chart's push falls within it
    if image_times:
        parts.append(f"images {max(image_times) - flow_started:.1f}s")
        if signing:
            parts.append(f"signing {signed:.1f}s")
        parts.append(f"charts and summary {max(0.0, ended - max(image_times) - signed):.1f}s")
    else:
        parts.append(f"release {ended - flow_started:.1f}s")
    return f"{total:.1f}s: " + ", ".join(parts)
