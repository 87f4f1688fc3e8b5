"""Release tags: ``vMAJOR.MINOR.PATCH`` with an optional pre-release part."""

from __future__ import annotations

import re
from dataclasses import dataclass

import semver

from tasks.core.errors import InvalidTagError

# semver alone accepts build metadata ("+build") and, with optional parts, "1.4".
# A release tag is stricter: a leading "v", three numbers, an optional
# pre-release of dot-separated [0-9A-Za-z-] identifiers, nothing else. The
# semver parse below then rejects leading zeros and empty identifiers.
_TAG_SHAPE = re.compile(r"v(?P<version>\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?)")
_FIX = "use vMAJOR.MINOR.PATCH, optionally with -alpha.N, -beta.N or -rc.N (e.g. v0.3.1, v0.3.0-rc.1)"


@dataclass(frozen=True)
class ReleaseVersion:
    """What a tag means for a release."""

    tag: str  # v0.3.1
    version: str  # 0.3.1, the chart version
    prerelease: bool

    @property
    def semver(self) -> semver.Version:
        return semver.Version.parse(self.version)


def parse_tag(tag: str) -> ReleaseVersion:
    """Parse a release tag or raise :class:`InvalidTagError` naming the fix."""
    if not isinstance(tag, str) or not tag:
        raise InvalidTagError(f"the release tag is empty: {_FIX}")
    shown = tag if len(tag) <= 60 and tag.isprintable() else repr(tag[:60])
    match = _TAG_SHAPE.fullmatch(tag)
    if match is None:
        raise InvalidTagError(f"invalid release tag {shown!r}: {_FIX}")
    version = match.group("version")
    try:
        parsed = semver.Version.parse(version)
    except ValueError as err:
        raise InvalidTagError(f"invalid release tag {shown!r} ({err}): {_FIX}") from err
    return ReleaseVersion(tag=tag, version=version, prerelease=parsed.prerelease is not None)
