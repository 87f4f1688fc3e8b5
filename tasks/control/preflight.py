"""Checks that fail a release in well under a second, before anything is checked out or built."""

from __future__ import annotations

from tasks.oci.references import Reference
from tasks.run.context import RunContext
from tasks.run.engines import configured_engines


def check_registries(run: RunContext) -> None:
    """One ``GET /v2/`` per registry with the credentials: unreachable or refused fails here, once."""
    request = run.request
    for ref in dict.fromkeys([request.registry, request.chart_remote.removeprefix("oci://")]):
        target = Reference.parse(ref)
        with run.registries.api(target.host) as api:
            api.check_access(target.repository)


def check_engines_and_registries(run: RunContext) -> None:
    """Every Docker engine answers and, unless a dry run, the registries accept the credentials.

    Reads only, a few tens of milliseconds: the flow calls it before any task (a task run would
    cost more than the checks), so a run that cannot succeed fails before anything starts.
    """
    for target in configured_engines(run.request.config):
        with run.engines.client(target):
            pass
    if not run.request.dry_run:
        check_registries(run)
