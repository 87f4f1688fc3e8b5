"""What a run of a deployment may change: the form's fields only (tasks/run/options.py decides; docs/security.md).

Shared by the release and the promotion flows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from tasks.core.errors import ConfigError
from tasks.run.options import OPTIONS, Option, form_fields, pinned_changes


async def refuse_pinned_changes(parameters: dict[str, Any], allowed: str, options: Sequence[Option] = OPTIONS) -> None:
    """A run of a deployment may change only the form's fields (of ``options``: the release's, or a
    promotion's): the rest are the operator's, read from the deployment itself (not from the run, whose
    parameters are the deployment's merged with what the form or the event sent)."""
    deployment_id = _deployment_id()
    if deployment_id is None:
        return  # the CLI, a test, a benchmark: whoever runs it is the operator
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        deployed = await client.read_deployment(UUID(str(deployment_id)))
    changed = pinned_changes(parameters, deployed.parameters or {}, form_fields(allowed, options), options)
    if changed:
        raise ConfigError(
            f"this run changes {', '.join(changed)}, which the deployment {deployed.name} sets: a run may change "
            "only the tag and the retry settings; change the deployment's parameters, or let runs set them "
            f"with FMA_FORM_FIELDS={','.join(changed)} where it runs"
        )


def _deployment_id() -> UUID | None:
    """The deployment of the running flow run, from its context (``prefect.runtime.deployment.id`` reads the
    flow run back from the server when no deployment context is set: a request per run, for nothing)."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    if ctx is not None and ctx.flow_run is not None:
        return ctx.flow_run.deployment_id
    from prefect.runtime import deployment

    found = deployment.id
    return UUID(str(found)) if found is not None else None
