"""The CLI refuses bad input before anything runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flows.cli import main
from flows.timing import where_time_went

EXE = Path(sys.executable).with_name("fma-release")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "0.3.1", "--source", "."], "invalid release tag '0.3.1'"),
        (["run", "v1.4", "--source", "."], "invalid release tag 'v1.4'"),
        (["run", "v1.0.0;rm -rf /", "--source", "."], "invalid release tag"),
        (["run", "", "--source", "."], "the release tag is empty"),
        (["run", "v1.0.0", "--source", ".", "--config", "/nonexistent.yaml"], "cannot read release config"),
        (["promote", "v1.4", "--from", "a.io/x", "--to", "b.io/y"], "invalid release tag 'v1.4'"),
        (["promote", "v1.0.0", "--from", "a.io/x", "--to", "a.io/x"], "--from and --to are both a.io/x"),
        (["promote", "v1.0.0", "--from", "a.io/x", "--to", "fma"], "--to 'fma' names no registry host"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], needle: str) -> None:
    """One line on stderr naming the problem and the fix, exit code 2, no traceback."""
    proc = subprocess.run([str(EXE), *args], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert lines[0].startswith("fma-release: error: ")


def test_bad_config_content_is_rejected_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A config with a path escaping the checkout fails before Prefect starts."""
    config = tmp_path / "r.yaml"
    config.write_text("images:\n  - name: a\n    dockerfile: ../../etc/passwd\n")
    code = main(["run", "v1.0.0", "--source", ".", "--config", str(config)])
    err = capsys.readouterr().err
    assert code == 2
    assert "without '..'" in err and err.count("\n") == 1


def test_where_time_went_splits_prefect_images_and_the_rest() -> None:
    reports = [(10.0, "run", "started"), (10.5, "a", "building"), (13.0, "a", "built"),
               (13.2, "a", "pushing"), (14.0, "a", "pushed"), (14.1, "chart fma-controllers", "pushed"),
               (14.3, "run", "done")]
    line = where_time_went(2.0, 14.5, reports, server_configured=False)
    assert line == ("12.5s: Prefect start-up 8.0s (a temporary server: start one with scripts/services.sh, or set "
                    "PREFECT_API_URL), images 4.0s, charts and summary 0.5s")
    assert where_time_went(2.0, 14.5, reports, server_configured=True).startswith("12.5s: Prefect start-up 8.0s, ")


def test_where_time_went_names_the_signing() -> None:
    """Image signing that came after the last image is what it added; charts (and their signing) follow it."""
    reports = [(10.0, "run", "started"), (10.5, "a", "building"), (12.0, "a", "pushed"), (12.1, "a", "signing"),
               (14.1, "a", "signed"), (14.2, "chart c", "signing"), (15.1, "chart c", "already signed")]
    assert where_time_went(9.0, 15.5, reports, True) == (
        "6.5s: Prefect start-up 1.0s, images 2.0s, image signing 2.0s (2.1s after the last image), "
        "charts and summary 1.4s")


def test_where_time_went_when_signing_overlaps_a_slower_image() -> None:
    """A fast image signed while a slow one builds adds nothing after the last image."""
    reports = [(10.0, "run", "started"), (10.1, "fast", "building"), (10.2, "slow", "building"),
               (11.0, "fast", "pushed"), (11.1, "fast", "signing"), (12.0, "fast", "signed"),
               (16.0, "slow", "pushed"), (16.1, "slow", "signing"), (16.9, "slow", "signed")]
    assert where_time_went(9.0, 17.4, reports, True) == (
        "8.4s: Prefect start-up 1.0s, images 6.0s, image signing 5.8s (0.9s after the last image), "
        "charts and summary 0.5s")


def test_where_time_went_names_the_go_module_download() -> None:
    """A cold release's module download is said apart from the images' time it is part of."""
    reports = [(10.0, "run", "started"), (10.2, "Go modules", "downloading"), (13.2, "Go modules", "downloaded"),
               (13.3, "c", "building"), (16.0, "c", "pushed")]
    assert where_time_went(9.0, 16.5, reports, True) == (
        "7.5s: Prefect start-up 1.0s, images 6.0s, of which Go module download 3.0s, charts and summary 0.5s")


def test_where_time_went_without_images_or_without_a_run() -> None:
    assert where_time_went(0.0, 1.0, [(0.4, "run", "started"), (0.9, "run", "done")], True) == (
        "1.0s: Prefect start-up 0.4s, release 0.6s")
    assert where_time_went(0.0, 0.2, [], True) == "0.2s"


@pytest.mark.parametrize(
    ("argv", "code"),
    [(["--help"], 0), (["run", "v1.4", "--source", "x"], 2), (["run", "v1.0.0", "--source", "x", "--bogus"], 2),
     (["promote", "v1.4", "--from", "a.io/x", "--to", "b.io/y"], 2), (["promote", "--help"], 0)],
)
def test_help_bad_tag_and_bad_option_load_no_prefect_docker_or_helm(argv: list[str], code: int) -> None:
    """The answers that need nothing run import neither Prefect, the Docker SDK nor Helm (a fresh interpreter)."""
    probe = (
        "import sys\nfrom flows.cli import main\n"
        "try:\n    rc = main(sys.argv[1:])\nexcept SystemExit as exit_:\n    rc = exit_.code\n"
        "print(rc, sorted(m for m in ('prefect', 'docker', 'helm_python') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, check=False,
                          timeout=60)
    assert done.stdout.splitlines()[-1] == f"{code} []", done.stdout + done.stderr


def test_a_run_says_at_once_that_it_starts_a_prefect_server_of_its_own(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """No server configured and none answering locally: one line says a server is being started for the run,
    before its start-up (seconds of otherwise silent console)."""
    import socket

    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.cli import _local_server

    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api"
    monkeypatch.setenv("FMA_LOCAL_PREFECT_URL", url)
    with temporary_settings(updates={PREFECT_API_URL: None}):
        assert _local_server() == ""
    assert f"no Prefect server answers at {url} and PREFECT_API_URL is not set: starting one" in capsys.readouterr().err
