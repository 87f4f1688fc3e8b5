"""Where a CLI run's time went, told from the progress reports' arrival times."""

from __future__ import annotations

from collections.abc import Sequence

from tasks.core.progress import GO_MODULES, RUN
from tasks.core.status import IMAGE_DONE, Status


def where_time_went(started: float, ended: float, reports: Sequence[tuple[float, str, str]],
                    server_configured: bool) -> str:
    """One line: the total, then Prefect's start-up, the images, their signing and the rest.

    ``reports`` are ``(monotonic time, item, state)`` in arrival order; the run's first report
    ("run", "started") marks the moment Prefect had started the flow run. Images are signed as each
    one is published, so their signing overlaps the other images: the line says how much of it came
    after the last image was published, which is what it added to the release.
    """
    total = ended - started
    flow_started = next((at for at, item, state in reports if item == RUN and state == Status.STARTED), None)
    if flow_started is None:
        return f"{total:.1f}s"
    parts = [f"Prefect start-up {flow_started - started:.1f}s"
             + ("" if server_configured else " (a temporary server: start one with scripts/services.sh, "
                                             "or set PREFECT_API_URL)")]
    image_times = [at for at, item, state in reports if item != RUN and not item.startswith("chart ")
                   and state in {Status.BUILDING, Status.PUSHING, *IMAGE_DONE}]
    signing = {Status.SIGNING, Status.SIGNED, Status.ALREADY_SIGNED}
    image_signing = [at for at, item, state in reports if state in signing and not item.startswith("chart ")]
    if not image_times:
        parts.append(f"release {ended - flow_started:.1f}s")
        return f"{total:.1f}s: " + ", ".join(parts)
    last_image = max(image_times)
    parts.append(f"images {last_image - flow_started:.1f}s")
    modules = [at for at, item, state in reports if item == GO_MODULES and state in (Status.DOWNLOADING,
                                                                                    Status.DOWNLOADED)]
    if len(modules) == 2:  # the ko builds compiled after it: their share of the images' time
        parts.append(f"of which Go module download {modules[1] - modules[0]:.1f}s")
    if image_signing:
        after = max(0.0, max(image_signing) - last_image)
        parts.append(f"image signing {max(image_signing) - min(image_signing):.1f}s ({after:.1f}s after the "
                     "last image)")
    parts.append(f"charts and summary {max(0.0, ended - max([last_image, *image_signing])):.1f}s")
    return f"{total:.1f}s: " + ", ".join(parts)
