"""Release tag parsing."""

from __future__ import annotations

import pytest
import semver
from hypothesis import given
from hypothesis import strategies as st

from tasks.core.errors import InvalidTagError
from tasks.run.tags import parse_tag


@pytest.mark.parametrize(
    ("tag", "version", "prerelease"),
    [
        ("v0.3.1", "0.3.1", False),
        ("v0.3.0-rc.1", "0.3.0-rc.1", True),
        ("v1.0.0-alpha.2", "1.0.0-alpha.2", True),
        ("v1.0.0-beta.10", "1.0.0-beta.10", True),
        ("v10.20.30", "10.20.30", False),
        ("v0.0.0", "0.0.0", False),
    ],
)
def test_valid_tags(tag: str, version: str, prerelease: bool) -> None:
    """A well-formed tag gives the version without v and the pre-release flag."""
    parsed = parse_tag(tag)
    assert (parsed.tag, parsed.version, parsed.prerelease) == (tag, version, prerelease)


@pytest.mark.parametrize(
    "tag",
    [
        "", "0.3.1", "V0.3.1", "v1.4", "v1", "v1.4.0.1", "v01.2.3", "v1.02.3", "v1.2.03",
        "v1.2.3-rc.01", "v1.2.3-", "v1.2.3-rc..1", "v1.2.3+build.1", "v1.2.3 ", " v1.2.3",
        "v1.2.3;rm -rf /", "v1.2.3$(id)", "v1.2.3`id`", "v1.2.3\n", "v1.2.3-rc 1", "vv1.2.3",
        "v1.2.3/../x", "v-1.2.3",
    ],
)
def test_invalid_tags_are_rejected_in_one_line(tag: str) -> None:
    """Anything but vMAJOR.MINOR.PATCH[-PRE] fails with a one-line message giving the form."""
    with pytest.raises(InvalidTagError) as caught:
        parse_tag(tag)
    message = str(caught.value)
    assert "\n" not in message
    assert "vMAJOR.MINOR.PATCH" in message


@given(st.text(max_size=40))
def test_any_string_either_parses_to_its_own_version_or_is_rejected(text: str) -> None:
    """For every string: a result means 'v' + version == tag and a valid semver; else InvalidTagError."""
    try:
        parsed = parse_tag(text)
    except InvalidTagError as err:
        assert "\n" not in str(err)  # noqa: PT017 - a property over arbitrary input, not one expected error
        return
    assert text == f"v{parsed.version}"
    assert semver.Version.parse(parsed.version).build is None
    assert parsed.prerelease == ("-" in parsed.version)


_num = st.integers(min_value=0, max_value=10_000)


@given(_num, _num, _num, st.sampled_from(["", "-rc.", "-alpha.", "-beta."]), st.integers(0, 99))
def test_generated_release_tags_always_parse(major: int, minor: int, patch: int, pre: str, n: int) -> None:
    """Every tag of the accepted form parses, pre-release exactly when it has a suffix."""
    tag = f"v{major}.{minor}.{patch}" + (f"{pre}{n}" if pre else "")
    parsed = parse_tag(tag)
    assert parsed.version == tag[1:]
    assert parsed.prerelease == bool(pre)
