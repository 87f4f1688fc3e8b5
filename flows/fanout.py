"""Reading the outcome of the flow's steps from their futures, and signing several artifacts at once.

A task never takes another task's future as an argument: Prefect reads the state of a future
argument that nobody has waited on from the server (``read_task_run``), a needless call that failed
pushes of a run whose server went away mid-build. The flow waits on the future and passes the
result instead (flows/chains.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect.futures import PrefectFuture

from tasks.core import progress
from tasks.core.errors import SigningError
from tasks.core.status import Status
from tasks.helm.chart import PackagedChart
from tasks.oci.layout import read_layout
from tasks.push import layout_image
from tasks.run.context import RunContext
from tasks.run.result import BuiltImage, PushedImage, SignatureResult
from tasks.signing import sign_task
from tasks.supplychain.signer import SignJob


def outcome(future: PrefectFuture[Any]) -> tuple[Any, BaseException | None]:
    """``(result, None)`` or ``(None, error)`` of a finished future, never raising."""
    future.wait()
    state = future.state
    if state.is_completed():
        return future.result(), None
    if not state.is_final():  # never ran: something it waits for failed
        return None, RuntimeError(f"not run: {state.message or 'a step it waits for failed'}")
    error = future.result(raise_on_failure=False)  # the exception itself, not its message
    if isinstance(error, BaseException):
        return None, error
    return None, RuntimeError(state.message or f"task ended {state.name}")


def collect_charts(
    packages: Sequence[PrefectFuture[PackagedChart]],
) -> tuple[list[PackagedChart], BaseException | None]:
    """Every packaged chart, and the first packaging error if any."""
    done: list[PackagedChart] = []
    failure: BaseException | None = None
    for future in packages:
        package, error = outcome(future)
        if error is None:
            done.append(package)
        else:
            failure = failure or error
    return done, failure






def sign_all(jobs: Sequence[SignJob], run: RunContext) -> list[SignatureResult]:
    """Sign every job at once; a :class:`SigningError` naming each artifact that could not be signed."""
    signer = sign_task.with_options(**run.request.retry.task_options())
    futures = {job.label: signer.submit(job, run) for job in jobs}
    done: list[SignatureResult] = []
    failures: dict[str, str] = {}
    for label, future in futures.items():
        results, error = outcome(future)
        if error is None:
            done += results
        else:
            failures[label] = str(error)
            progress.report(label, Status.FAILED, str(error))
    if failures:
        raise signing_failed(failures)
    return done


def signing_failed(failures: dict[str, str]) -> SigningError:
    """One line naming each artifact that could not be signed, and why."""
    listed = "; ".join(f"{name}: {reason}" for name, reason in sorted(failures.items()))
    return SigningError(f"{len(failures)} artifact(s) could not be signed: {listed}")


def dry_run_image(built: BuiltImage) -> PushedImage:
    """A dry run's image: nothing is pushed, the local image id stands where the registry digest would
    (a layout's own digests, with its platforms, as a push of it would list them)."""
    if built.layout is not None and (built.layout / "index.json").is_file():
        return layout_image(built, read_layout(built.layout), Status.DRY_RUN)
    return PushedImage(name=built.name, ref=built.ref, digest=built.digest or built.image_id, status=Status.DRY_RUN,
                       platform=built.platform, label=built.label)
