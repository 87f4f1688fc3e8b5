"""The Go modules step: a cold release downloads the source's Go modules as soon as the checkout is
there, once for every ko image and platform, into the cache ko's builds then read."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from tasks.builders.ko import download_modules
from tasks.core import progress
from tasks.core.errors import SourceError
from tasks.core.pulse import Pulse
from tasks.core.status import Status

if TYPE_CHECKING:
    from tasks.run.context import RunContext
    from tasks.run.facts import Checkout

ITEM = progress.GO_MODULES


@task(name="go modules", task_run_name="go modules {checkout.tag}", cache_policy=NONE)
def go_modules_task(checkout: Checkout, run: RunContext) -> float:
    """``go mod download`` of the checkout, as the build user; the seconds it took. A failure is a
    warning: the ko builds download the modules themselves, and fail with ko's own words."""
    started = time.monotonic()
    log = get_run_logger()
    progress.report(ITEM, Status.DOWNLOADING)
    try:
        # A cold download of a large module graph takes minutes: its pulse keeps the console told.
        with Pulse(ITEM, state=Status.DOWNLOADING, heartbeat=run.settings.pulse_seconds) as pulse:
            count = download_modules(checkout.path, log, user=run.build_user(), step=pulse.step)
    except SourceError as err:  # ko downloads them itself, and says why it cannot
        log.warning("%s", err)
        progress.report(ITEM, Status.WARNING, f"{err}; the ko builds download them themselves")
        return time.monotonic() - started
    took = time.monotonic() - started
    progress.report(ITEM, Status.DOWNLOADED, f"{count} module(s) in {took:.1f}s")
    return took
