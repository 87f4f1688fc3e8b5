"""What the console says while the FMA sample's images build and when they fail, through the real CLI
(BuildKit, ko, a Distribution registry, the Prefect server): a failing RUN's own lines and the Dockerfile as
the release config names it, a base that cannot be reached named by its FROM line with mirrors: as the way
out, a compile error with the compiler's lines, and a long ko build that says what it does at least every
30 s."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from devkit.fma_files import REQUESTER_FAILURE
from devkit.fma_sample import FmaBases, make_fma_source
from devkit.registry import RegistryProcess, free_port
from tasks.core import tools
from tasks.run.config import DEFAULT_CONFIG
from tests.integration.shared import fma_release

pytestmark = pytest.mark.integration

# The console's bound (30 s, with the pulse's 15 s heartbeat) at a smaller scale: the same shape in seconds.
PULSE = 4.0  # FMA_PULSE_SECONDS of the long build's run
CONSOLE_BOUND = 2 * PULSE  # seconds the console may stay silent while a build runs
SLOW_BUILD = 12  # seconds each `go build` of the slow toolchain waits before compiling
BROKEN_GO = 'var sampleBroken int = "launcher-populator: not an int"\n'
_STAMPED = re.compile(r"^\[\s*(\d+\.\d)s\] (.*)$")


@dataclass(frozen=True)
class Console:
    returncode: int
    lines: list[str]  # stderr: the progress lines and the final one

    def stamped(self) -> list[tuple[float, str]]:
        """``(seconds, text)`` of each progress line."""
        found = (_STAMPED.match(line) for line in self.lines)
        return [(float(match.group(1)), match.group(2)) for match in found if match]

    def about(self, item: str) -> list[str]:
        """The progress lines about ``item`` (its states and its output lines), without the time stamps."""
        return [text for _, text in self.stamped() if text.startswith((f"{item}: ", f"{item} | "))]


def _config(path: Path, **changes: object) -> Path:
    config = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    config.update(changes)
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _break_populator(tree: Path) -> None:
    main = tree / "cmd" / "launcher-populator" / "main.go"
    main.write_text(main.read_text(encoding="utf-8") + "\n" + BROKEN_GO, encoding="utf-8")


@pytest.fixture(scope="module")
def failed(tmp_path_factory: pytest.TempPathFactory, registry: RegistryProcess, fma_bases: FmaBases) -> Console:
    """One release of the FMA sample by the CLI where three images fail three ways: requester's RUN fails
    (the sample's "fails" variant), launcher's base comes through a mirror nobody listens on, and
    launcher-populator does not compile. dual-pods-controller builds."""
    root = tmp_path_factory.mktemp("failing")
    src = make_fma_source(root, bases=fma_bases, requester_builder="fails", mutate=_break_populator)
    launcher_repo = fma_bases.launcher.ref.rsplit(":", 1)[0]
    config = _config(root / "release.yaml", mirrors={launcher_repo: f"127.0.0.1:{free_port()}/mirror/launcher"})
    run = fma_release("run", src.tag, "--source", str(src.path), "--config", str(config), "--registry",
                      f"{registry.host}/t{uuid.uuid4().hex[:10]}/fma", "--retry-delay", "0.1", "--no-sign",
                      env={"FMA_STATE_DIR": str(root / "state")})
    return Console(run.returncode, run.stderr.splitlines())


def test_the_release_fails_in_one_line_naming_each_failed_image(failed: Console) -> None:
    """Exit 1; the last line is the one error, naming the three images that failed and not the one that built."""
    assert failed.returncode == 1, "\n".join(failed.lines[-20:])
    last = failed.lines[-1]
    assert last.startswith("fma-release: error: ") and "no chart was published" in last
    for name in ("requester linux/amd64", "requester linux/arm64", "launcher", "launcher-populator"):
        assert f"{name}: image " in last, name
    assert "dual-pods-controller:" not in last


@pytest.mark.parametrize("platform", ["linux/amd64", "linux/arm64"])
def test_a_failing_run_shows_its_own_message_and_the_dockerfile_in_at_most_10_lines(
    failed: Console, platform: str,
) -> None:
    """Each platform's failure says the RUN's stderr line, dockerfiles/Dockerfile.requester (as release.yaml
    names it, not the staged copy) with the RUN's line and the platform, in at most 10 console lines."""
    item = f"requester {platform}"
    about = failed.about(item)
    failure = [line for line in about if line.startswith(f"{item}: failed: ")]
    output = [line for line in about if line.startswith(f"{item} | ")]
    assert len(failure) == 1, about
    assert 0 < len(failure) + len(output) <= 10
    assert f"{item} | {REQUESTER_FAILURE}" in output
    assert "fix the Dockerfile dockerfiles/Dockerfile.requester (line 8) and re-run" in failure[0]
    assert f"{item} failed to build at [builder 4/4] RUN" in failure[0]
    assert "Dockerfile.requester.linux" not in "\n".join(failed.lines)  # the staged copy is never named


def test_an_unreachable_base_names_its_from_line_and_mirrors(failed: Console, fma_bases: FmaBases) -> None:
    """launcher's base, mapped by mirrors: to a port nobody listens on, is named as its FROM line writes it,
    with the file and line, the mirror, and that entry of mirrors: to check."""
    (failure,) = [line for line in failed.about("launcher") if line.startswith("launcher: failed: ")]
    assert failure.startswith("launcher: failed: image launcher (linux/amd64): cannot reach the registry 127.0.0.1:")
    assert f"FROM {fma_bases.launcher.ref} (dockerfiles/Dockerfile.launcher.benchmark line 2)" in failure
    assert "(mirrors: in the release config); check that entry of mirrors:" in failure


def test_a_compile_error_shows_the_compilers_lines(failed: Console) -> None:
    """launcher-populator's failure is followed by the compiler's own lines: the package, then file:line: why."""
    output = [line.split(" | ", 1)[1] for line in failed.about("launcher-populator") if " | " in line]
    assert output[0] == "# example.invalid/fma-sample/cmd/launcher-populator"
    assert re.fullmatch(r"cmd/launcher-populator/main\.go:\d+:\d+: cannot use \"launcher-populator: not an int\" "
                        r"\(untyped string constant\) as int value in variable declaration", output[1]), output


# -- a long build -----------------------------------------------------------------------------------


@pytest.fixture
def slow_go() -> Iterator[Path]:
    """A directory holding `go`: the machine's toolchain, except that each `go build` first waits SLOW_BUILD
    seconds, as a cold compile of a large main does. World-readable: ko runs it as the build user."""
    directory = Path(tempfile.mkdtemp(prefix="fma-slow-go-", dir="/tmp"))
    directory.chmod(0o755)
    wrapper = directory / "go"
    wrapper.write_text("#!/bin/sh\n"
                       f'if [ "$1" = build ]; then sleep {SLOW_BUILD}; fi\n'
                       f'exec {os.path.realpath(tools.go_binary())} "$@"\n', encoding="utf-8")
    wrapper.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_a_long_ko_build_says_what_it_does_at_least_every_heartbeat_twice_over(
    tmp_path: Path, registry: RegistryProcess, fma_bases: FmaBases, slow_go: Path,
) -> None:
    """While dual-pods-controller's ko build runs longer than the bound, no two console lines are more than
    twice the pulse's heartbeat apart (30 s by default; shortened here), and the lines in between say what ko
    does (the platforms it compiles) and for how long."""
    src = make_fma_source(tmp_path, bases=fma_bases)
    config = _config(tmp_path / "release.yaml", images=[
        {"name": "dual-pods-controller", "builder": "ko", "main": "./cmd/dual-pods-controller", "platforms": "all"}],
        charts=[])
    run = fma_release("run", src.tag, "--source", str(src.path), "--config", str(config), "--registry",
                      f"{registry.host}/t{uuid.uuid4().hex[:10]}/fma", "--no-sign",
                      env={"FMA_STATE_DIR": str(tmp_path / "state"), "PATH": f"{slow_go}:{os.environ['PATH']}",
                           "FMA_PULSE_SECONDS": str(PULSE)})
    console = Console(run.returncode, run.stderr.splitlines())
    assert run.returncode == 0, "\n".join(console.lines[-20:])
    stamped = console.stamped()
    began = next(at for at, text in stamped if text == "dual-pods-controller: building")
    ended = next(at for at, text in stamped if text.startswith("dual-pods-controller: built"))
    assert ended - began > CONSOLE_BOUND  # the build outlasted the bound (each go build waits SLOW_BUILD s)
    during = [at for at, _ in stamped if began <= at <= ended]
    gaps = [later - earlier for earlier, later in itertools.pairwise(during)]
    assert max(gaps) <= CONSOLE_BOUND, stamped
    pulses = [text for _, text in stamped if text.startswith("dual-pods-controller: still building: ")]
    assert any(re.search(r"compiling for linux/(amd64|arm64).* \(\d+s so far\)$", text) for text in pulses), pulses
