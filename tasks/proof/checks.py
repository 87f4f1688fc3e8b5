"""A proof is a list of checks, each with a name, whether it passed, what it saw and how long it took."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class ProofCheck:
    name: str  # "chart fma-controllers: lint", "start dual-pods-controller linux/arm64 (fma-dpc/controller)"
    passed: bool
    detail: str  # "running after 5 s", "exit 1 (its own error): ...", "no such file: /ko-app/x"
    seconds: float = 0.0


@dataclass(frozen=True)
class Proof:
    checks: tuple[ProofCheck, ...] = ()

    @classmethod
    def of(cls, checks: Iterable[ProofCheck]) -> Proof:
        return cls(tuple(checks))

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def failures(self) -> tuple[ProofCheck, ...]:
        return tuple(c for c in self.checks if not c.passed)

    def failure_line(self) -> str:
        """One line naming every failed check (or that the proof checked nothing)."""
        if not self.checks:
            return "the proof checked nothing: the release has no chart and no image to start"
        return "; ".join(f"{c.name}: {c.detail}" for c in self.failures)

    def table(self) -> str:
        """The proof as a markdown table (the summary, the Prefect artifact)."""
        rows = ["| check | result | seen | seconds |", "| --- | --- | --- | ---: |"]
        for c in self.checks:
            seen = c.detail.replace("|", "\\|").replace("\n", " ")
            rows.append(f"| {c.name} | {'passed' if c.passed else '**failed**'} | {seen} | {c.seconds:.1f} |")
        return "\n".join(rows)
