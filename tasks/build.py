"""The build task: one image (one platform of it) from the checkout at the tag, by its builder."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prefect import get_run_logger, task
from prefect.runtime import task_run as current_task_run

from tasks.builders import builder_for
from tasks.core import progress
from tasks.core.errors import EngineError, ImageBuildError
from tasks.core.pulse import Pulse
from tasks.core.redact import install_log_filter
from tasks.core.status import Status
from tasks.run.plan import ImageSpec
from tasks.run.result import BuiltImage

if TYPE_CHECKING:
    from tasks.run.context import RunContext


def build_cache_key(context: Any, parameters: dict[str, Any]) -> str:
    """Prefect cache key of a build: its inputs' fingerprint on its engine."""
    spec: ImageSpec = parameters["spec"]
    run: RunContext = parameters["run"]
    engine_id = run.engines.address(spec.engine)
    return f"fma-build-{spec.fingerprint}-{hashlib.sha256(engine_id.encode()).hexdigest()[:8]}"


@task(
    name="build",
    task_run_name="build {spec.label}",
    cache_key_fn=build_cache_key,
    persist_result=True,
)
def build_task(spec: ImageSpec, run: RunContext) -> BuiltImage:
    """Build one image from the checkout at the tag.

    The result is cached by the build inputs' fingerprint (Prefect result storage:
    PREFECT_LOCAL_STORAGE_PATH), so a re-run does not build again; images the registry already
    holds are not even submitted (the flow asks first).

    The preflight reached every engine before any build, so an engine lost during a build is
    taken as a restart: the error is transient and the flow's retry policy builds again.
    """
    install_log_filter()  # a no-op here; in a Dask worker's process it is the first task's job
    log = get_run_logger()
    builder = builder_for(spec)
    attempt = current_task_run.run_count
    with progress.reporting(spec.label, transient_state=Status.ENGINE_LOST), run.engines.build_slot(spec.engine):
        where = "" if spec.engine.is_default else f"on {spec.engine.name}"
        progress.report(spec.label, Status.BUILDING,
                        ", ".join(part for part in (where, f"attempt {attempt}" if attempt > 1 else "") if part))
        started = _now()
        try:
            # what a long build does, on the console at least every 15 s (FMA_PULSE_SECONDS)
            with Pulse(spec.label, heartbeat=run.settings.pulse_seconds) as pulse:
                built = builder.build(spec, run, log, pulse.step)
        except ImageBuildError as err:
            # A step's container is killed as its engine stops: that failure says nothing of the
            # Dockerfile when the engine no longer answers (ko builds use no engine).
            lost = None if spec.builder == "ko" else run.engines.unreachable(spec.engine)
            if lost is not None:
                raise EngineError(f"{lost} (lost while building {spec.label})", transient=True) from err
            if spec.engine.is_default:
                raise
            raise ImageBuildError(err.image, f"{err} (built on engine {spec.engine.name})", output=err.output) from err
        except EngineError as err:
            raise EngineError(str(err), transient=True) from err
    # The run that built it: a later run that reuses this result (the cache) or signs the image names it.
    built = dataclasses.replace(built, started=started, finished=_now(), run_id=run.run_id, run_url=run.run_url)
    progress.report(spec.label, Status.BUILT, (built.digest or built.image_id)[:19])
    return built


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
