"""The Go tools scripts/setup.sh installed: each, found through tasks/core/tools.py, reports its pinned version.

No skip: a tool that is missing fails the test with the line that says how to install it
(CI runs scripts/setup.sh first).
"""

from __future__ import annotations

import pytest

from tasks.core import cmd, tools
from tasks.core.errors import ReleaseError


@pytest.mark.parametrize("name", ["ko", "cosign", "syft"])
def test_installed_tool_reports_its_pinned_version(name: str) -> None:
    version = tools.pinned(name)
    try:
        path = tools.tool(name)
        out = cmd.run([name, "version"], what=f"ask {name} its version", fix="run bash scripts/setup.sh", timeout=60)
    except ReleaseError as err:  # a missing tool: ToolMissingError, or CommandError from cmd.run
        pytest.fail(str(err))
    words = {word.removeprefix("v") for word in out.split()}
    assert version.removeprefix("v") in words, f"{path} version said:\n{out}"
