"""Which failures are retried, and how long to wait: bounded, with jitter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect.client.schemas.objects import State, TaskRun


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` in all (first try included); waits double from ``base_delay`` up to ``max_delay``."""

    attempts: int = 5
    base_delay: float = 2.0
    max_delay: float = 30.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base_delay < 0 or self.max_delay < self.base_delay:
            raise ValueError("retry policy needs attempts >= 1 and 0 <= base_delay <= max_delay")

    @property
    def delays(self) -> list[float]:
        return [min(self.base_delay * 2**i, self.max_delay) for i in range(self.attempts - 1)]

    def task_options(self) -> dict[str, Any]:
        """Options for ``Task.with_options``."""
        return {
            "retries": self.attempts - 1,
            "retry_delay_seconds": self.delays,
            "retry_jitter_factor": self.jitter,
            "retry_condition_fn": retry_if_transient,
        }


def retry_if_transient(task: Any, task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect retry condition: retry only errors that say they are transient."""
    try:
        state.result()
    except TimeoutError:
        return True  # a hung attempt (task timeout) is worth another try
    except Exception as err:
        return bool(getattr(err, "transient", False))
    return False
