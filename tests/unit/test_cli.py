"""The CLI refuses bad input before anything runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flows.cli import main

EXE = Path(sys.executable).with_name("fma-release")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "0.3.1", "--source", "."], "invalid release tag '0.3.1'"),
        (["run", "v1.4", "--source", "."], "invalid release tag 'v1.4'"),
        (["run", "v1.0.0;rm -rf /", "--source", "."], "invalid release tag"),
        (["run", "", "--source", "."], "the release tag is empty"),
        (["run", "v1.0.0", "--source", ".", "--config", "/nonexistent.yaml"], "cannot read release config"),
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
