"""``fma.release.succeeded`` / ``fma.release.failed``: Prefect events for automations.

Flow-state hooks of the release flow emit them, so a notification (Slack,
e-mail, a webhook) is an automation on the event, not code in the release.
The resource is the tag: ``{"prefect.resource.id": "fma.release.v0.3.1",
"fma.release.tag": "v0.3.1"}``; the flow run is a related resource. Failure
messages are masked like every other output.
"""

from __future__ import annotations

from typing import Any

from tasks.core.redact import redact
from tasks.run.result import ReleaseResult

SUCCEEDED = "fma.release.succeeded"
FAILED = "fma.release.failed"


def release_resource(tag: str) -> dict[str, str]:
    return {"prefect.resource.id": f"fma.release.{tag}", "prefect.resource.name": tag, "fma.release.tag": tag}


def success_payload(result: Any) -> dict[str, Any]:
    """What a notification needs of the release result: references, digests, the chart version."""
    if not isinstance(result, ReleaseResult):
        return {}
    return {
        "version": result.version,
        "prerelease": result.prerelease,
        "dry_run": result.dry_run,
        "images": [f"{i.ref}@{i.digest}" for i in result.images],
        "charts": [f"{c.ref}:{c.version}" for c in result.charts],
    }


def failure_payload(message: str | None) -> dict[str, Any]:
    first = redact(message or "").strip().splitlines()
    return {"error": first[0] if first else "the release failed"}


def _emit(name: str, flow_run: Any, payload: dict[str, Any]) -> None:
    from prefect.events import emit_event

    tag = str((flow_run.parameters or {}).get("tag", ""))
    emit_event(
        event=name,
        resource=release_resource(tag),
        related=[{
            "prefect.resource.id": f"prefect.flow-run.{flow_run.id}",
            "prefect.resource.role": "flow-run",
            "prefect.resource.name": str(flow_run.name),
        }],
        payload=payload,
    )


async def on_release_completed(flow: Any, flow_run: Any, state: Any) -> None:
    """Flow hook: emit ``fma.release.succeeded`` with the result's references.

    Async, so that it reads the result the same way under the sync and the async flow engine
    (both await a hook's coroutine).
    """
    try:
        summary = await state.aresult(raise_on_failure=False)
    except Exception:  # the result may not be retrievable here; the event still goes out
        summary = None
    _emit(SUCCEEDED, flow_run, success_payload(summary))


def on_release_failed(flow: Any, flow_run: Any, state: Any) -> None:
    """Flow hook (failed or crashed): emit ``fma.release.failed`` with the one-line error."""
    _emit(FAILED, flow_run, failure_payload(state.message))
