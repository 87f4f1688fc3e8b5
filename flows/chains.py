"""Each image's own chain: build, push, index, sign, one step after the other, every image at once.

An image's steps start as soon as the step before them ends for that image, never when the slowest
image's does: a platform's push starts when its build ends; a multi-platform image's index is PUT
once all its platforms are pushed; an image is signed and attested once its tag is there. So a
release takes about as long as its slowest image's chain, and signing overlaps the other builds.

Each step is a task of its own with the run's retry policy; it is submitted with the result of the
step before it, never that step's future (Prefect would read an unwaited future's state back from
the server, which fails a run whose server went away mid-build). One loop (:meth:`ImageChains.run`)
waits for whichever step ends next and submits what follows it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from prefect.futures import PrefectFuture, as_completed

from flows.fanout import dry_run_image, outcome
from tasks.build import build_task
from tasks.control.records import build_records, build_times, recorded_builds, save_build_times, save_builds
from tasks.core import progress
from tasks.core.errors import ImageMissingError
from tasks.core.status import Status
from tasks.index import index_task
from tasks.push import push_task, still_there
from tasks.run.context import RunContext
from tasks.run.plan import ImageSpec, build_order, head_start
from tasks.run.result import BuiltImage, PushedImage, SignatureResult
from tasks.signing import sign_task
from tasks.supplychain.signer import image_jobs

Handler = Callable[[PrefectFuture[Any]], None]


@dataclass
class ChainsOutcome:
    """What the chains ended with: every image that made it (in the config's order), each failure by
    image or platform, and the signatures (with each artifact that could not be signed)."""

    images: list[PushedImage]
    failures: dict[str, str]
    built: list[BuiltImage]
    signatures: list[SignatureResult]
    sign_failures: dict[str, str]


@dataclass
class ImageChains:
    """The chains of one run's images; ``kept`` are platform images the registry already holds exactly."""

    run: RunContext
    specs: Sequence[ImageSpec]
    packages: Sequence[PrefectFuture[Any]] = ()  # every push waits for the charts' packaging
    modules: Sequence[PrefectFuture[Any]] = ()  # every ko build waits for the Go modules' download
    _pending: dict[PrefectFuture[Any], Handler] = field(default_factory=dict)
    _pushed: dict[str, PushedImage] = field(default_factory=dict)
    _built: dict[str, BuiltImage] = field(default_factory=dict)
    _images: dict[str, PushedImage] = field(default_factory=dict)
    _failures: dict[str, str] = field(default_factory=dict)
    _signatures: list[SignatureResult] = field(default_factory=list)
    _sign_failures: dict[str, str] = field(default_factory=dict)
    _rebuilt: set[str] = field(default_factory=set)
    _began: float = 0.0  # when the builds started (monotonic)
    _times: dict[str, float] = field(default_factory=dict)  # seconds to each build's push, this run

    def __post_init__(self) -> None:
        policy = self.run.request.retry.task_options()
        # A build is retried only when its engine was lost (tasks/build.py); the others on transient faults.
        self._builder = build_task.with_options(**policy)
        self._pusher = push_task.with_options(**policy)
        self._indexer = index_task.with_options(**policy)
        self._signer = sign_task.with_options(**policy)
        self._by_label = {spec.label: spec for spec in self.specs}
        self._members: dict[str, list[ImageSpec]] = {}
        for spec in self.specs:
            self._members.setdefault(spec.name, []).append(spec)

    @property
    def submitted(self) -> list[PrefectFuture[Any]]:
        """The steps still running (waited for before the workspace goes)."""
        return list(self._pending)

    def run_all(self, kept: Sequence[PushedImage]) -> ChainsOutcome:
        """Build what is not ``kept``, and carry every image to its end."""
        for image in kept:
            self._platform_done(image)
        # The build measured to take longest starts first, and a little ahead when it ends well after the others.
        state = self.run.settings.state_dir
        earlier = build_times(state)
        order = build_order([spec for spec in self.specs if spec.label not in self._pushed], earlier)
        lead = head_start(order, earlier, self.run.settings.head_start_seconds)
        self._began = time.monotonic()
        for position, spec in enumerate(order):
            after = list(self.modules) if spec.builder == "ko" else []
            build = self._builder.submit(spec, self.run, wait_for=after, return_state=False)
            self._submit(build, self._on_build(spec.label))
            if position == 0 and lead:
                build.wait(lead)  # returns at once when it ends sooner (a cached build)
        while self._pending:
            future = next(iter(as_completed(list(self._pending))))
            self._pending.pop(future)(future)
        if not self.run.request.dry_run:
            save_build_times(state, self._times)
        names = list(self._members)
        return ChainsOutcome(
            images=[self._images[name] for name in names if name in self._images], failures=self._failures,
            built=list(self._built.values()), signatures=self._signatures, sign_failures=self._sign_failures,
        )

    def _submit(self, future: PrefectFuture[Any], handler: Handler) -> None:
        self._pending[future] = handler

    def _fail(self, key: str, error: BaseException) -> None:
        self._failures[key] = str(error)
        progress.report(key, Status.FAILED, str(error))

    def _on_build(self, label: str) -> Handler:
        def handle(future: PrefectFuture[Any]) -> None:
            built, error = outcome(future)
            if error is not None:
                self._fail(label, error)
                return
            spec = self._by_label[label]
            # A ko build is the same for every registry: a cached one from a run elsewhere names that
            # run's reference; this run publishes it under its own. A platform of a multi-platform
            # image goes by digest: its image's tag is the index.
            built = replace(built, ref=spec.ref, by_digest=bool(spec.index_ref))
            if not self.run.request.dry_run and label not in self._rebuilt and not still_there(built, self.run):
                # A cached result whose image or layout is gone: built again now, never a failed push.
                self._rebuilt.add(label)  # its build task says "building" again
                rebuild = self._builder.with_options(refresh_cache=True)
                self._submit(rebuild.submit(spec, self.run), self._on_build(label))
                return
            self._built[label] = built
            if self.run.request.dry_run:
                self._platform_done(dry_run_image(built))
                return
            push = self._pusher.submit(built, self.run, wait_for=list(self.packages), return_state=False)
            self._submit(push, self._on_push(label))

        return handle

    def _on_push(self, label: str) -> Handler:
        def handle(future: PrefectFuture[Any]) -> None:
            pushed, error = outcome(future)
            if isinstance(error, ImageMissingError) and label not in self._rebuilt:
                # A cached build whose image or layout is gone: built again, ignoring the cache.
                self._rebuilt.add(label)
                rebuild = self._builder.with_options(refresh_cache=True)
                self._submit(rebuild.submit(self._by_label[label], self.run), self._on_build(label))
            elif error is not None:
                self._fail(label, error)
            else:
                self._platform_done(pushed)

        return handle

    def _platform_done(self, image: PushedImage) -> None:
        """A platform image (or a whole single-platform image) is published: its image may go on."""
        self._pushed[image.item] = image
        built = self._built.get(image.item)
        if built is not None and built.run_id == self.run.run_id:  # built by this run, not a cached result
            self._times[image.item] = round(time.monotonic() - self._began, 3)
        group = self._members[image.name]
        if not group[0].index_ref:  # one build makes the whole image (one platform, or ko's own index)
            self._image_done(image.name, image)
            return
        if any(spec.label not in self._pushed for spec in group):
            return  # a failed platform is reported already; a half index is never published
        platforms = tuple(self._pushed[spec.label] for spec in group)
        if self.run.request.dry_run:
            self._image_done(image.name, PushedImage(name=image.name, ref=group[0].index_ref, digest="",
                                                     status=Status.DRY_RUN, platforms=platforms))
            return
        self._submit(self._indexer.submit(image.name, group[0].index_ref, platforms, self.run),
                     self._on_index(image.name))

    def _on_index(self, name: str) -> Handler:
        def handle(future: PrefectFuture[Any]) -> None:
            image, error = outcome(future)
            if error is not None:
                self._fail(name, error)
            else:
                self._image_done(name, image)

        return handle

    def _image_done(self, name: str, image: PushedImage) -> None:
        """An image's tag is published: it is signed now, while other images still build. Which builds
        made it is recorded by digest, for a later run that signs it (its provenance names them)."""
        self._images[name] = image
        built = [b for b in self._built.values() if b.name == name]
        if self.run.request.dry_run:
            return
        state = self.run.settings.state_dir
        # What an earlier run recorded of the platforms this run found already published.
        earlier = recorded_builds(state, image) if len(built) < len(self._members[name]) else ()
        (job,) = image_jobs([image], built, self.specs, earlier)
        save_builds(state, build_records(image, job.builds))
        if self.run.signs:
            self._submit(self._signer.submit(job, self.run), self._on_sign(job.label))

    def _on_sign(self, label: str) -> Handler:
        def handle(future: PrefectFuture[Any]) -> None:
            results, error = outcome(future)
            if error is not None:
                self._sign_failures[label] = str(error)
                progress.report(label, Status.FAILED, str(error))
            else:
                self._signatures.extend(results)

        return handle
