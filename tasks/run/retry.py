"""Which failures are retried (the classifier), and how long to wait: bounded, with jitter."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tasks.core.errors import ImagePushError

if TYPE_CHECKING:
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
            "retry_delay_seconds": waits(*self.delays),
            "retry_jitter_factor": self.jitter,
            "retry_condition_fn": retry_if_transient,
        }


class Waits(float):
    """Retry waits that double, given to Prefect as one number: the first wait.

    Prefect records a task's ``retry_delay_seconds`` in the task run, and its UI shows that record as a
    number of seconds: a list shows as "NaNs". A :class:`Waits` is a ``float`` (the first wait) to the
    record and the UI, and a sequence (one wait per retry) to the engine, which takes the n-th wait of a
    sequence for the n-th retry."""

    _waits: tuple[float, ...]

    def __new__(cls, *seconds: float) -> Waits:
        first = float(seconds[0]) if seconds else 0.0
        made = super().__new__(cls, first)
        made._waits = tuple(float(s) for s in seconds) or (0.0,)
        return made

    def __getitem__(self, index: int) -> float:
        return self._waits[index]

    def __len__(self) -> int:
        return len(self._waits)

    def __iter__(self) -> Iterator[float]:
        return iter(self._waits)

    def __reduce__(self) -> tuple[Any, ...]:  # pickled whole for remote task runners
        return (Waits, self._waits)

    def __repr__(self) -> str:
        return f"Waits{self._waits!r}"


Sequence.register(Waits)


def waits(*seconds: float) -> Waits:
    """``retry_delay_seconds`` for a task: these waits, one per retry, shown in the UI as the first."""
    return Waits(*seconds)


def retry_if_transient(task: Any, task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect retry condition: retry only errors that say they are transient."""
    try:
        state.result()
    except TimeoutError:
        return True  # a hung attempt (task timeout) is worth another try
    except Exception as err:
        return bool(getattr(err, "transient", False))
    return False


# -- which failures are transient -------------------------------------------------

_AUTH = re.compile(
    r"unauthorized|authentication required|denied|forbidden|\b401\b|\b403\b|"
    r"no basic auth credentials|incorrect username or password",
    re.IGNORECASE,
)
_TRANSIENT = re.compile(
    r"\b5\d\d\b|service unavailable|bad gateway|gateway time-?out|internal server error|"
    r"toomanyrequests|too many requests|\b429\b|connection reset|connection refused|"
    r"broken pipe|\bEOF\b|timed? ?out|timeout|i/o timeout|tls handshake|"
    r"server closed|connection aborted|remote end closed|temporar",
    re.IGNORECASE,
)


def is_auth_error(message: str) -> bool:
    return bool(_AUTH.search(message))


def is_transient_push_error(message: str) -> bool:
    """Whether another push attempt may succeed. Auth and denial never are."""
    if is_auth_error(message):
        return False
    return bool(_TRANSIENT.search(message))


def push_error(name: str, ref: str, message: str) -> ImagePushError:
    """A push failure as an error that says whether it is retried and what to do."""
    transient = is_transient_push_error(message)
    if transient:
        fix = "the registry failed; it is retried, re-run the release if it keeps failing"
    elif is_auth_error(message):
        fix = "check FMA_REGISTRY_USERNAME / FMA_REGISTRY_PASSWORD and the token's push rights"
    else:
        fix = "check the registry address and that it accepts pushes"
    return ImagePushError(name, f"push of {ref} failed: {message.strip()}; {fix}", transient=transient)
