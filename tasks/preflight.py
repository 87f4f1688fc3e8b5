"""Checks that fail a release in well under a second, before anything is checked out or built."""

from __future__ import annotations

from tasks.images import DEFAULT_ENGINE, Engine, engine
from tasks.registry import Reference, RegistryAPI
from tasks.source import resolve_tag


def check_registries(registry: str, chart_remote: str) -> None:
    """One ``GET /v2/`` per registry with the credentials: unreachable or refused fails here, once."""
    for ref in dict.fromkeys([registry, chart_remote.removeprefix("oci://")]):
        target = Reference.parse(ref)
        with RegistryAPI(target.host) as api:
            api.check_access(target.repository)


def preflight(
    source: str, tag: str, registry: str, chart_remote: str, push: bool = True, engines: tuple[Engine, ...] = ()
) -> str:
    """Every Docker engine answers, the registries accept the credentials (when pushing), the tag is in
    the source; returns the commit the tag names.

    Reads only, a few tens of milliseconds: the flow calls it before any task (a task run would cost
    more than the checks), so a run that cannot succeed fails before anything starts.
    """
    check_engines_and_registries(registry, chart_remote, push, engines)
    return resolve_tag(source, tag)


def check_engines_and_registries(
    registry: str, chart_remote: str, push: bool = True, engines: tuple[Engine, ...] = ()
) -> None:
    """Every Docker engine answers and, when pushing, the registries accept the credentials."""
    for target in engines or (DEFAULT_ENGINE,):
        with engine(target):
            pass
    if push:
        check_registries(registry, chart_remote)
