"""Multi-platform images in the release flow: the platform images of each image become one tag.

Kept apart from flows/release.py: the flow builds and pushes every (image, platform) like any
image (its own build task, its own push task with retries), then hands the outcomes here. Each
image with more than one platform gets one index task once all its platforms are pushed; an
image with one platform passes through unchanged (a plain manifest under the tag).
"""

from __future__ import annotations

from collections.abc import Sequence

from prefect.futures import PrefectFuture

from tasks.core import progress
from tasks.core.status import Status
from tasks.index import index_task
from tasks.run.context import RunContext
from tasks.run.plan import ImageSpec
from tasks.run.result import PushedImage


def assemble_indexes(
    specs: Sequence[ImageSpec], images: Sequence[PushedImage], failures: dict[str, str], run: RunContext,
) -> tuple[list[PushedImage], dict[str, str]]:
    """One result per image, in the config's order: single-platform images as pushed, multi-platform
    ones as their index (PUT by one task each, in parallel). An image with a failed platform gets no
    index; an index that fails is a failure of its image."""
    failures = dict(failures)
    by_label = {image.item: image for image in images}
    names = list(dict.fromkeys(spec.name for spec in specs))
    members = {name: [spec for spec in specs if spec.name == name] for name in names}
    indexer = index_task.with_options(**run.request.retry.task_options())
    futures: dict[str, PrefectFuture[PushedImage]] = {}
    done: dict[str, PushedImage] = {}
    for name in names:
        group = members[name]
        if not group[0].index_ref:
            if name in by_label:
                done[name] = by_label[name]
            continue
        if any(spec.label in failures or spec.label not in by_label for spec in group):
            continue  # the failed platform is reported already; a half index is never published
        pushed = tuple(by_label[spec.label] for spec in group)
        if run.request.dry_run:
            done[name] = PushedImage(name=name, ref=group[0].index_ref, digest="", status=Status.DRY_RUN,
                                     platforms=pushed)
            continue
        futures[name] = indexer.submit(name, group[0].index_ref, pushed, run)
    for name, future in futures.items():
        try:
            done[name] = future.result()
        except Exception as err:  # the task's own error (one line), reported with the image's name
            failures[name] = str(err)
            progress.report(name, Status.FAILED, str(err))
    return [done[name] for name in names if name in done], failures
