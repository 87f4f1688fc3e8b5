"""``fma-release serve``: the deployments, served by this one process (no work pool).

The same deployments as prefect.yaml: ``publish-release`` (the release flow,
``tag`` required, run by the ``github.release.published`` trigger),
``watch-releases`` (the watcher, on an interval) and, with ``--promote-to``,
``promote-release`` (a published release copied from ``--registry`` to that
registry; started by hand with a tag). ``prefect.serve`` registers them, creates
the trigger's automation, and runs each flow run in a subprocess of this
process. For more than one machine use prefect.yaml with a work pool
(docs/triggers.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flows.triggers import EVENT_NAME

TAG_TEMPLATE = "{{ event.resource['github.tag'] }}"


def release_trigger(repository: str) -> Any:
    """The event trigger of ``publish-release``: a published release of ``repository``, tag from the event."""
    from prefect.events import DeploymentEventTrigger

    return DeploymentEventTrigger(
        name=f"publish-release on {EVENT_NAME}",
        description="A GitHub release was published (webhook receiver): release its tag.",
        expect={EVENT_NAME},
        match={"prefect.resource.id": "github.release.*", "github.repository": repository},
        parameters={"tag": TAG_TEMPLATE},
    )


def _defined(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


@dataclass(frozen=True)
class ServeOptions:
    """The defaults of served runs (``fma-release serve``'s options)."""

    source: str
    registry: str
    repo: str
    config: str | None = None
    chart_registry: str | None = None
    dry_run: bool = False
    api_url: str | None = None
    watch_interval: float = 3600.0
    name_suffix: str = ""
    promote_to: str | None = None  # serve promote-release too: from ``registry`` to this registry
    promote_chart_registry: str | None = None  # where its charts go (default oci://<promote_to>/charts)


def build_deployments(options: ServeOptions) -> list[Any]:
    """The runner deployments (for ``prefect.serve``): two, three with ``promote_to``."""
    from flows.release import release_flow
    from flows.watch import watch_releases

    publish_name = f"publish-release{options.name_suffix}"
    publish = release_flow.to_deployment(
        name=publish_name,
        description="Release a tag: images, chart, summary. Started by published GitHub releases, "
                    "the watcher, or by hand with a tag.",
        parameters=_defined({"source": options.source, "registry": options.registry, "config": options.config,
                             "chart_registry": options.chart_registry, "dry_run": options.dry_run}),
        triggers=[release_trigger(options.repo)],
        tags=["fma-release"],
    )
    watch = watch_releases.to_deployment(
        name=f"watch-releases{options.name_suffix}",
        description="Start publish-release for published GitHub releases not in the registry yet.",
        interval=options.watch_interval if options.watch_interval > 0 else None,
        # No registry of its own: the watcher reads publish-release's (flows/watch.py).
        parameters=_defined({"repo": options.repo, "api_url": options.api_url,
                             "deployment": f"publish-release/{publish_name}"}),
        tags=["fma-release"],
    )
    if not options.promote_to:
        return [publish, watch]
    from flows.promote import promote_flow

    promote = promote_flow.to_deployment(
        name=f"promote-release{options.name_suffix}",
        description="Promote a published release to another registry: images by digest with their signatures "
                    "and attestations, the charts packaged for it and signed, verified there. Run it with a tag.",
        parameters=_defined({"from_registry": options.registry, "to_registry": options.promote_to,
                             "config": options.config, "chart_registry_from": options.chart_registry,
                             "chart_registry_to": options.promote_chart_registry}),
        tags=["fma-release"],
    )
    return [publish, watch, promote]


def serve_deployments(options: ServeOptions, on_registered: Callable[[Any], None] | None = None) -> None:
    """Register the deployments, call ``on_registered`` with the runner, and run their flow runs until
    interrupted (``prefect.serve``, with a hook between the two)."""
    import asyncio

    from prefect.exceptions import TerminationSignal
    from prefect.runner import Runner

    runner = Runner(pause_on_shutdown=True)
    for deployment in build_deployments(options):
        runner.add_deployment(deployment)  # registers it on the server, with its trigger
    if on_registered:
        on_registered(runner)
    with contextlib.suppress(KeyboardInterrupt, TerminationSignal):
        asyncio.run(runner.start())
