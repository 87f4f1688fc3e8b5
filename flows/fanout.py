"""The release flow's fan-out: submitting steps as their inputs finish, and reading their outcomes.

flows/release.py says the order of the steps; this module holds how Prefect futures carry them.
A task never takes another task's future as an argument: Prefect reads the state of a future
argument that nobody has waited on from the server (``read_task_run``), a needless call that failed
pushes of a run whose server went away mid-build. The flow waits on the future and passes the
result instead (:func:`push_as_built`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from prefect import Task
from prefect.futures import PrefectFuture, as_completed

from tasks.build import build_task
from tasks.core import progress
from tasks.core.errors import ImageMissingError, ReleaseError, SigningError
from tasks.core.status import Status
from tasks.helm.chart import PackagedChart
from tasks.run.context import RunContext
from tasks.run.plan import ImageSpec
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


def push_as_built(
    builds: dict[str, PrefectFuture[BuiltImage]], pusher: Task[..., PushedImage], run: RunContext,
    packages: Sequence[PrefectFuture[PackagedChart]],
) -> dict[str, PrefectFuture[PushedImage]]:
    """Each built image's push, submitted as its build finishes, with the build's result (never its
    future); a push waits for every chart package, so a broken chart stops the release before any
    push. A build that failed gets no push; :func:`collect_images` reports it."""
    name_of = {future: name for name, future in builds.items()}
    pushes: dict[str, PrefectFuture[PushedImage]] = {}
    for future in as_completed(list(builds.values())):
        built, error = outcome(future)
        if error is None:
            pushes[name_of[future]] = pusher.submit(built, run, wait_for=list(packages))
    return pushes


def collect_images(
    builds: dict[str, PrefectFuture[BuiltImage]], pushes: dict[str, PrefectFuture[PushedImage]],
    run: RunContext, rebuild: Callable[[str], PushedImage],
) -> tuple[list[PushedImage], dict[str, str]]:
    """Every image's outcome: the published ones, and each failure's reason by name.

    A cached build whose image is gone from the engine is built again and pushed (``rebuild``).
    """
    images: list[PushedImage] = []
    failures: dict[str, str] = {}
    for name, build in builds.items():
        built, error = outcome(build)
        if error is None:
            if run.request.dry_run:
                images.append(dry_run_image(built))
                continue
            pushed, error = outcome(pushes[name])
            if isinstance(error, ImageMissingError):
                try:
                    pushed, error = rebuild(name), None
                except ReleaseError as again:
                    error = again
        if error is None:
            images.append(pushed)
        else:
            failures[name] = str(error)
            progress.report(name, Status.FAILED, str(error))
    return images, failures


def rebuilder(
    specs: Sequence[ImageSpec], pusher: Task[..., PushedImage], run: RunContext,
) -> Callable[[str], PushedImage]:
    """Build an image again, ignoring the cache, and push it (its cached build's image is gone)."""
    by_label = {spec.label: spec for spec in specs}  # one build per (image, platform)

    def rebuild(name: str) -> PushedImage:
        built = build_task.with_options(refresh_cache=True)(by_label[name], run)
        return pusher(built, run)

    return rebuild


def finished_builds(builds: dict[str, PrefectFuture[BuiltImage]]) -> list[BuiltImage]:
    """The builds of this run that finished."""
    return [future.result() for future in builds.values() if future.state.is_completed()]


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
        listed = "; ".join(f"{name}: {reason}" for name, reason in sorted(failures.items()))
        raise SigningError(f"{len(failures)} artifact(s) could not be signed: {listed}")
    return done


def dry_run_image(built: BuiltImage) -> PushedImage:
    """A dry run's image: nothing is pushed, the local image id stands where the registry digest would."""
    return PushedImage(name=built.name, ref=built.ref, digest=built.digest or built.image_id, status=Status.DRY_RUN,
                       platform=built.platform, label=built.label)
