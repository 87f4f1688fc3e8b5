"""Chaos rounds on real parts (bench/chaos.py): one part of a signed release of the FMA sample killed at one
moment, the same tag run again, and every invariant checked (whole or absent, the re-run complete, verified
and rebuilding nothing published, a line within 60 s, a bounded console without a traceback, no leaked slot,
no process left). CI plays three rounds of a fixed seed; the benchmark plays 30 (docs/chaos.md).

The runner starts its own registry and a second dockerd on its own bridge, and kills them: nothing the other
tests use. Its Prefect server is the session's (tests/conftest.py), which none of the seed's rounds kills (the
``lab`` fixture checks that before it starts anything, and the lab refuses a round that would kill a server it
does not own); its releases keep their tags' slots in a namespace of their own there. Its rounds are
``serial``: they read the machine's process table (what the release left running) and are timed against
bounds. The two single faults after them run beside the other tests: each kills a part of its own (a
registry, a private dockerd) at a moment a log line or a held request marks, not a clock."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench import chaos
from devkit.engine import EngineProcess
from devkit.faultproxy import FaultProxy, Rule
from devkit.fma_sample import FmaBases, make_fma_source
from devkit.processes import stop_process
from devkit.registry import RegistryProcess, free_port
from devkit.sample_source import SampleSource
from tasks.oci.registry import RegistryAPI
from tests.integration.prefect_helpers import wait_for
from tests.integration.test_engines import with_engines

pytestmark = pytest.mark.integration

SEED = 16  # rounds 1-3 kill dockerd, the release process (SIGKILL), a cosign process
ROUNDS = [1, 2, 3]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, prefect_server: str) -> Iterator[tuple[chaos.Lab, chaos.Shape]]:
    """The runner's parts on the session's Prefect server, and what a release of the sample without a fault looks
    like on them. The parts each round kills are drawn before any release (chaos.round_part): a round that would
    kill the Prefect server fails here, before anything starts, rather than on a server other tests share."""
    killed = [chaos.round_part(SEED, number) for number in ROUNDS]
    if "prefect" in killed:
        pytest.fail(f"seed {SEED}'s rounds {ROUNDS} kill {killed}: the lab plays them on the session's Prefect server, "
                    "which it must not kill; choose a seed whose rounds do not kill part 'prefect'")
    parts = chaos.Lab.start(tmp_path_factory.mktemp("chaos"), prefect_url=prefect_server)
    try:
        yield parts, chaos.clean_release(parts)
    finally:
        parts.stop()


@pytest.mark.serial  # reads the process table; its rounds are timed against bounds
def test_three_rounds_of_a_fixed_seed_break_no_invariant(lab: tuple[chaos.Lab, chaos.Shape]) -> None:
    """The seed's three rounds each kill their part while the release runs, and each re-run ends whole, verified,
    with nothing published rebuilt; the re-run after SIGKILL of the release takes the tag's slot from the dead
    process at once (play() fails a take-over by the stale bound)."""
    parts, shape = lab
    outcomes, broken = chaos.run_rounds(parts, shape, SEED, ROUNDS)
    assert broken == ""
    assert [o.part for o in outcomes] == ["dockerd", "release:SIGKILL", "cosign"]
    assert all(o.killed for o in outcomes), [(o.part, o.moment) for o in outcomes]  # each moment was reached


def _cli(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([str(Path(sys.executable).with_name("fma-release")), "run", *args], stdout=log.open("w"),
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})})


def test_a_registry_killed_while_the_images_build_fails_the_run_naming_the_registry_not_the_server(
    tmp_path: Path, fma_bases: FmaBases,
) -> None:
    """As a chaos round killed it: the release's registry (not the bases') is killed with SIGKILL as the images
    start building. The run fails in one line naming the registry, with exit 1; it never says that the Prefect
    server is gone (a refused connection to the registry once passed for one: exit 3 and a second, false line)."""
    target = RegistryProcess(tmp_path / "registry", free_port()).start()
    src = make_fma_source(tmp_path / "fma", bases=fma_bases)
    log = tmp_path / "run.log"
    proc = _cli([src.tag, "--source", str(src.path), "--config", str(src.config), "--registry",
                 f"{target.host}/fma", "--no-sign"], log, {"FMA_STATE_DIR": str(tmp_path / "state")})
    try:
        wait_for("the images to start building", lambda: "dual-pods-controller: building" in log.read_text(),
                 timeout=180)
        target.kill()
        code = proc.wait(timeout=600)
    finally:
        stop_process(proc)
        target.stop()
    out = log.read_text()
    errors = [line for line in out.splitlines() if line.startswith("fma-release: error:")]
    assert code == 1, out[-3000:]
    assert len(errors) == 1 and target.host in errors[0], out[-3000:]
    assert "Prefect server" not in out and "Traceback" not in out, out[-3000:]


def test_dockerd_killed_while_it_pushes_is_waited_for_and_the_push_goes_through(
    registry: RegistryProcess, namespace: str, sample: Callable[..., SampleSource], tmp_path: Path,
) -> None:
    """A private dockerd killed with SIGKILL while it pushes (the registry holds its manifest PUT, so the push is in
    flight) and started again a second later: the broken connection to the engine is a restart, the push is tried
    again on the restarted engine, and the release completes (it failed at once, naming the registry)."""
    engine = EngineProcess().start()
    proxy = FaultProxy("127.0.0.1", registry.port).start()
    proxy.rules.append(Rule(repo_suffix="requester", op="manifest_put", hang=30, times=1))
    src = sample(images=("requester",), nonce=uuid.uuid4().hex)
    with_engines(src, f"engines:\n  - {{name: private, docker_host: '{engine.docker_host}'}}\n")
    log = tmp_path / "run.log"
    proc = _cli([src.tag, "--source", str(src.path), "--config", str(src.config), "--registry",
                 f"{proxy.host}/{namespace}", "--retry-delay", "1"], log)
    try:
        wait_for("the manifest PUT to be held", lambda: proxy.injected[(f"{namespace}/requester", "manifest_put")],
                 timeout=300)
        engine.kill()
        time.sleep(1)
        engine.restart(timeout=60)
        code = proc.wait(timeout=600)
    finally:
        stop_process(proc)
        proxy.stop()
        engine.stop()
    out = log.read_text()
    assert code == 0, out[-3000:]
    assert "requester: push failed: push of" in out and "the connection to the Docker engine broke" in out, out[-3000:]
    with RegistryAPI(registry.host) as api:
        assert api.tags(f"{namespace}/requester") == [src.tag]
