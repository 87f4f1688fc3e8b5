"""bench/chaos.py without real parts: a round's part drawn before any release, and a lab that uses a Prefect
server it does not own (a test session's) refusing, before anything runs, rounds that would kill it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import chaos
from devkit.engine import EngineProcess
from devkit.registry import RegistryProcess

URL = "http://127.0.0.1:9/api"  # nothing listens: a lab that reached for the server would fail otherwise


def shape() -> chaos.Shape:
    return chaos.Shape(moments={"requester: building": 3.0, "requester: pushing": 1.0, "chart: signing": 0.5},
                       processes={"ko": 2, "buildkit": 2, "cosign": 9},
                       lifetimes={"ko": 4.0, "buildkit": 6.0, "cosign": 0.4},
                       platforms={"requester": ("linux/amd64",)}, took=20.0)


def lab(tmp_path: Path, *, owned: bool = False) -> chaos.Lab:
    """A lab whose parts never started (nothing to kill): on a server it does not own unless ``owned``."""
    return chaos.Lab(tmp_path, RegistryProcess(tmp_path / "registry", 9), EngineProcess(root=tmp_path / "engine"),
                     URL, tmp_path / "prefect" if owned else None, None,
                     slot_namespace="" if owned else "chaos-test")


def test_the_part_of_a_round_is_drawn_before_its_moment_as_the_plan_draws_it() -> None:
    for seed in range(1, 60):
        for number in range(1, 8):
            assert chaos.round_part(seed, number) == chaos.plan_round(seed, number, shape()).part
            assert chaos.round_part(seed, number, "registry") == "registry"
    assert [chaos.round_part(16, n) for n in (1, 2, 3)] == ["dockerd", "release:SIGKILL", "cosign"]  # CI's seed


def test_rounds_that_would_kill_a_server_the_lab_does_not_own_are_refused_before_the_first_round_plays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    played: list[int] = []
    monkeypatch.setattr(chaos, "play", lambda _lab, _shape, plan: played.append(plan.round))
    assert [chaos.round_part(2, n) for n in (1, 2)] == ["ko", "prefect"]  # round 1 could play: it must not

    with pytest.raises(chaos.CannotRun) as refused:
        chaos.run_rounds(lab(tmp_path), shape(), 2, [1, 2])
    message = str(refused.value)
    assert played == []
    assert "\n" not in message
    assert message.startswith("round 2 would kill part 'prefect', the Prefect server at " + URL)
    assert "play it on a lab that starts its own server" in message

    with pytest.raises(chaos.CannotRun, match="round 1 would kill part 'prefect'"):
        chaos.run_rounds(lab(tmp_path), shape(), 2, [1], part="prefect")
    assert played == []


def test_a_lab_never_kills_nor_starts_a_server_it_does_not_own(tmp_path: Path) -> None:
    parts = lab(tmp_path)
    plan = chaos.plan_round(7, 1, shape(), "prefect")
    with pytest.raises(chaos.CannotRun, match="round 1 would kill part 'prefect'"):
        chaos.play(parts, shape(), plan)  # before it tags, runs or kills anything (its source is not even made)
    with pytest.raises(chaos.CannotRun, match="would kill part 'prefect'"):
        parts.kill("prefect")
    with pytest.raises(chaos.CannotRun, match="not the lab's to start"):
        parts.restart("prefect")


def test_a_lab_with_a_server_of_its_own_plays_rounds_that_kill_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    played: list[str] = []

    def play(_lab: chaos.Lab, _shape: chaos.Shape, plan: chaos.Plan) -> chaos.Outcome:
        played.append(plan.part)
        return chaos.Outcome(plan.round, plan.part, plan.moment)

    monkeypatch.setattr(chaos, "play", play)
    outcomes, broken = chaos.run_rounds(lab(tmp_path, owned=True), shape(), 2, [1, 2])
    assert broken == "" and played == ["ko", "prefect"] and len(outcomes) == 2


def test_the_runs_and_the_slot_checks_of_a_lab_on_a_server_it_does_not_own_use_its_namespace_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    parts = lab(tmp_path)
    parts.key = tmp_path / "cosign.key"
    monkeypatch.setenv("FMA_SLOT_NAMESPACE", "gw1")  # an xdist worker's: not the lab's
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:1/api")
    env = parts.env()
    assert env["FMA_SLOT_NAMESPACE"] == "chaos-test" and env["PREFECT_API_URL"] == URL
    owned = lab(tmp_path, owned=True)
    owned.key = parts.key
    assert "FMA_SLOT_NAMESPACE" not in owned.env()  # its own server: the product's default

    asked: list[tuple[str, Any]] = []

    def get(url: str) -> dict[str, Any]:
        asked.append((url, None))
        return {"active_slots": []}

    def post(url: str, body: Any) -> list[Any]:
        asked.append((url, body))
        return []

    monkeypatch.setattr(chaos, "api_get", get)
    monkeypatch.setattr(chaos, "api_post", post)
    assert chaos._slot_problems(parts, "v1.2.0") == []
    assert asked == [(f"{URL}/v2/concurrency_limits/release-chaos-test-v1.2.0", None),
                     (f"{URL}/variables/filter", {"variables": {"name": {"any_": ["fma_slot_chaos_test_v1_2_0"]}}})]
