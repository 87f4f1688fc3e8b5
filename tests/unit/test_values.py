"""values.yaml edits keep everything but the two image values."""

from __future__ import annotations

import difflib

import pytest
import yaml

from tasks.core.errors import ChartError
from tasks.core.project import PROJECT_ROOT
from tasks.helm.chart import set_image_values

VALUES = """\
# top comment
global:
  # where images live
  imageRegistry: ghcr.io/example/old   # trailing comment
  # the tag
  imageTag: "latest"
  local: false
zeta: 1   # keys stay in this order
alpha:
  - a
  - b
"""


def changed_lines(before: str, after: str) -> list[str]:
    return [
        line for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


def test_only_the_two_values_change_and_comments_stay() -> None:
    """Comments, key order, quoting and every other line are kept."""
    out = set_image_values(VALUES, "127.0.0.1:5000/fma", "v0.3.1")
    changed = sorted(changed_lines(VALUES, out))
    assert changed[:2] == ["+  imageRegistry: 127.0.0.1:5000/fma    # trailing comment", '+  imageTag: "v0.3.1"']
    assert changed[2:] == ["-  imageRegistry: ghcr.io/example/old   # trailing comment", '-  imageTag: "latest"']
    data = yaml.safe_load(out)
    assert data["global"] == {"imageRegistry": "127.0.0.1:5000/fma", "imageTag": "v0.3.1", "local": False}
    assert list(data) == ["global", "zeta", "alpha"]


def test_project_chart_values_round_trip_changes_two_lines() -> None:
    """The shipped chart's values.yaml, with its comments on every value, changes in two lines only."""
    text = (PROJECT_ROOT / "charts/fma-controllers/values.yaml").read_text()
    out = set_image_values(text, "reg.example/fma", "v1.2.3-rc.1")
    changed = changed_lines(text, out)
    assert len(changed) == 4
    assert "+  imageRegistry: reg.example/fma" in changed
    assert "+  imageTag: v1.2.3-rc.1" in changed
    assert out.count("#") == text.count("#")


def test_tag_that_looks_like_a_number_stays_a_string() -> None:
    """A value YAML would read as a number or bool is written so that it reads back as a string."""
    out = set_image_values("global:\n  imageRegistry: r\n  imageTag: x\n", "r", "1.0")
    assert yaml.safe_load(out)["global"]["imageTag"] == "1.0"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("global: [\n", "not valid YAML"),
        ("other: 1\n", "no global.imageRegistry"),
        ("global:\n  imageRegistry: r\n", "no global.imageRegistry / global.imageTag"),
        ("global: 3\n", "no global.imageRegistry"),
        ("- a\n", "no global.imageRegistry"),
        ("", "no global.imageRegistry"),
    ],
)
def test_bad_values_files_raise_chart_error(text: str, needle: str) -> None:
    """Malformed values or missing global keys are a one-line ChartError."""
    with pytest.raises(ChartError) as caught:
        set_image_values(text, "r", "v1.0.0")
    assert needle in str(caught.value) and "\n" not in str(caught.value)
