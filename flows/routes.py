"""The two routes onto a Prefect server, kept apart: a work pool (``prefect deploy``) and ``fma-release serve``.

Both register ``publish-release/publish-release`` and ``watch-releases/watch-releases`` (and
``promote-release/promote-release``: prefect.yaml has it, ``serve`` with ``--promote-to``). A deployment
that ``prefect deploy`` made names its work pool; one that ``serve`` made names none. ``serve`` refuses to
start over the pool's deployments (it would take them over and drop their pull step), and stops with one
line when ``prefect deploy`` takes its deployments while it runs. ``fma-release routes`` lists what each
route has on the server; ``fma-release routes remove ROUTE`` removes a route's deployments together with
their trigger automations (Prefect keeps an automation when its deployment is deleted, and it then fails
on every event), and any release trigger left behind by a deployment deleted earlier.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from tasks.core.errors import ReleaseError

POOL = "pool"
SERVED = "served"
ROUTES = (POOL, SERVED)
RELEASE_EVENT = "github.release.published"
RECOMMENDED = POOL  # a team's route (docs/operations.md); serve is for one machine


def deployment_names(suffix: str = "") -> tuple[str, ...]:
    """The FLOW/DEPLOYMENT names of the deployments of a route (``serve --name-suffix``): the two, and
    promote-release where the route has it (prefect.yaml; ``serve --promote-to``)."""
    return (f"publish-release/publish-release{suffix}", f"watch-releases/watch-releases{suffix}",
            f"promote-release/promote-release{suffix}")


@dataclass(frozen=True)
class Deployed:
    """A deployment as found on the server."""

    name: str  # FLOW/DEPLOYMENT
    id: str
    pool: str | None  # None: made by serve

    @property
    def route(self) -> str:
        return POOL if self.pool else SERVED

    def describe(self) -> str:
        return f"work pool {self.pool} (prefect deploy)" if self.pool else "fma-release serve"


@dataclass(frozen=True)
class Trigger:
    """An automation on the server, with the deployments its actions run."""

    id: str
    name: str
    deployment_ids: tuple[str, ...]
    expects_release: bool  # it fires on github.release.published


# -- pure -------------------------------------------------------------------------


def serve_refusal(found: Iterable[Deployed], server: str) -> str | None:
    """Why ``serve`` must not start over these deployments (pure), or None."""
    taken = [d for d in found if d.pool]
    if not taken:
        return None
    first = taken[0]
    return (f"{first.name} on {server} belongs to the work pool {first.pool} (prefect deploy): serving it would take "
            f"it over; remove that route first (fma-release routes remove {POOL}) or serve under other names "
            "(fma-release serve --name-suffix=-NAME)")


def taken_over(found: Iterable[Deployed], served_ids: Iterable[str]) -> Deployed | None:
    """One of serve's own deployments that now belongs to a work pool (pure), or None."""
    ids = set(served_ids)
    return next((d for d in found if d.id in ids and d.pool), None)


def triggers_to_remove(removed: Iterable[Deployed], triggers: Iterable[Trigger],
                       existing_ids: Iterable[str]) -> list[Trigger]:
    """The automations to delete with ``removed`` (pure): those that run one of them, and release triggers
    that run a deployment no longer on the server."""
    gone = {d.id for d in removed}
    present = set(existing_ids) - gone
    chosen = []
    for trigger in triggers:
        runs_removed = any(i in gone for i in trigger.deployment_ids)
        orphan = trigger.expects_release and any(i not in present for i in trigger.deployment_ids)
        if runs_removed or orphan:
            chosen.append(trigger)
    return chosen


# -- the server -------------------------------------------------------------------


def _deployed(client: Any, names: Sequence[str]) -> list[Deployed]:
    from prefect.exceptions import ObjectNotFound

    found = []
    for name in names:
        try:
            d = client.read_deployment_by_name(name)
        except ObjectNotFound:
            continue
        found.append(Deployed(name, str(d.id), d.work_pool_name or None))
    return found


def _triggers(client: Any) -> list[Trigger]:
    out = []
    for automation in client.read_automations():
        trigger = automation.trigger.model_dump(mode="json")
        expects = set(trigger.get("expect") or ())
        ids = tuple(str(a.deployment_id) for a in automation.actions
                    if getattr(a, "type", "") == "run-deployment" and getattr(a, "deployment_id", None))
        out.append(Trigger(str(automation.id), automation.name, ids, RELEASE_EVENT in expects))
    return out


def _server() -> str:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or "the local Prefect server"


def check_serve_may_start(suffix: str) -> None:
    """:class:`ReleaseError` (one line) when a work pool's deployments hold serve's names."""
    from prefect import get_client

    with get_client(sync_client=True) as client:
        refusal = serve_refusal(_deployed(client, deployment_names(suffix)), _server())
    if refusal:
        raise ReleaseError(refusal)


class TakeoverWatch:
    """While serve runs: every ``every`` seconds, look whether ``prefect deploy`` took serve's deployments;
    if so, remember why and interrupt serve (it then ends with that one line)."""

    def __init__(self, suffix: str, every: float = 10.0) -> None:
        self.suffix = suffix
        self.every = every
        self.reason: str | None = None
        self._stop = threading.Event()
        self._ids: list[str] = []
        self._runner: Any = None

    def start(self, runner: Any) -> None:
        from prefect import get_client

        self._runner = runner
        with get_client(sync_client=True) as client:
            self._ids = [d.id for d in _deployed(client, deployment_names(self.suffix))]
        threading.Thread(target=self._loop, name="fma-serve-takeover-watch", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        from prefect import get_client

        while not self._stop.wait(self.every):
            try:
                with get_client(sync_client=True) as client:
                    found = taken_over(_deployed(client, deployment_names(self.suffix)), self._ids)
            except Exception:  # noqa: S112 - a server away for a moment is serve's own concern
                continue
            if found:
                self.reason = (f"{found.name} was taken over by the work pool {found.pool} (prefect deploy): serve "
                               "stopped; keep one route (fma-release routes remove ...) or serve under other names "
                               "(--name-suffix=-NAME)")
                # The deployments are the pool's now: serve must not pause them on its way out.
                self._runner.pause_on_shutdown = False
                self._stop_serve()
                return

    def _stop_serve(self) -> None:
        """End serve: the runner's own stop (what it does on SIGTERM), scheduled on its loop. A SIGINT this
        thread sent to its own process was lost at times: with four serves taken over at once, two went on
        polling for minutes. Before the runner's loop has started there is nothing to stop but the start-up,
        which SIGINT ends."""
        if getattr(self._runner, "started", False):
            self._runner.execute_in_background(self._runner.astop)
        else:
            os.kill(os.getpid(), signal.SIGINT)


@dataclass(frozen=True)
class Removal:
    deployments: tuple[Deployed, ...]
    triggers: tuple[Trigger, ...]


def list_routes(suffix: str = "") -> tuple[list[Deployed], list[Trigger]]:
    """The route deployments on the server and the release triggers (and what they run)."""
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return _deployed(client, deployment_names(suffix)), [t for t in _triggers(client) if t.expects_release]


def remove_route(route: str, suffix: str = "") -> Removal:
    """Delete ``route``'s deployments and their automations, and release triggers left by deleted deployments."""
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        doomed = [d for d in _deployed(client, deployment_names(suffix)) if d.route == route]
        triggers = _triggers(client)
        referenced = sorted({i for t in triggers for i in t.deployment_ids})
        existing = [str(d.id) for d in client.read_deployments(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=referenced)))] if referenced else []
        chosen = triggers_to_remove(doomed, triggers, existing)
        # Gone already is removed: another `routes remove` (a teammate's, another suffix's) may take the same
        # orphaned trigger, or the same route, between the read above and these deletes.
        for trigger in chosen:
            _gone_is_fine(client.delete_automation, UUID(trigger.id))
        for deployment in doomed:
            client.delete_resource_owned_automations(f"prefect.deployment.{deployment.id}")
            _gone_is_fine(client.delete_deployment, UUID(deployment.id))
    return Removal(tuple(doomed), tuple(chosen))


def _gone_is_fine(delete: Callable[[UUID], object], what: UUID) -> None:
    """``delete(what)``, where a 404 (the object is gone already) is the outcome wanted, not an error."""
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    try:
        delete(what)
    except ObjectNotFound:
        return
    except PrefectHTTPStatusError as err:  # delete_automation raises its 404 this way
        if err.response.status_code != 404:
            raise
