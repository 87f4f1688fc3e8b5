"""The unprivileged user that builds run as: the source's own code (a compiler's helpers, ko's Go
toolchain) never runs as the release process's user, so it cannot read that process's environment
(``/proc/<pid>/environ`` needs the same user, or root), its files, or its credentials.

``scripts/setup.sh`` creates the user (``fma-build`` by default, ``FMA_BUILD_USER`` names another)
with a home directory of its own, where its Go caches live. A release process that is not root
cannot switch users: its builds run as itself (docs/security.md says what that gives up).
"""

from __future__ import annotations

import os
import pwd
import shutil
from dataclasses import dataclass
from pathlib import Path

from tasks.core.errors import ConfigError

DEFAULT_BUILD_USER = "fma-build"
SETUP_FIX = "run bash scripts/setup.sh (it creates the user), or useradd --system --create-home {name}"


@dataclass(frozen=True)
class BuildUser:
    """Who a build runs as: a uid and gid other than the release's, and a home it owns."""

    name: str
    uid: int
    gid: int
    home: Path

    def own(self, path: Path) -> None:
        """Hand ``path`` (and, for a directory, everything below it, links not followed) to this user."""
        os.chown(path, self.uid, self.gid, follow_symlinks=False)
        if path.is_dir() and not path.is_symlink():
            for root, dirs, files in os.walk(path):
                for name in dirs + files:
                    os.chown(Path(root) / name, self.uid, self.gid, follow_symlinks=False)

    def job_dir(self, prefix: str) -> Path:
        """A new directory of this user's, for one build; the caller removes it."""
        jobs = self.home / "jobs"
        jobs.mkdir(mode=0o700, exist_ok=True)
        os.chown(jobs, self.uid, self.gid)
        for n in range(1000):
            candidate = jobs / f"{prefix}-{os.getpid()}-{os.urandom(4).hex()}-{n}"
            try:
                candidate.mkdir(mode=0o700)
            except FileExistsError:
                continue
            os.chown(candidate, self.uid, self.gid)
            return candidate
        raise ConfigError(f"cannot make a build directory under {jobs}: remove what is left there")


def build_user(name: str = DEFAULT_BUILD_USER, *, euid: int | None = None) -> BuildUser | None:
    """The user builds run as; ``None`` when this process is not root (it cannot switch users).

    :class:`ConfigError` (one line) when root but the user is missing, is root itself, or has no home.
    """
    if (os.geteuid() if euid is None else euid) != 0:
        return None
    name = name or DEFAULT_BUILD_USER
    try:
        entry = pwd.getpwnam(name)
    except KeyError as err:
        raise ConfigError(f"the build user {name!r} does not exist: {SETUP_FIX.format(name=name)}") from err
    if entry.pw_uid == 0 or entry.pw_gid == 0:
        raise ConfigError(f"the build user {name!r} has uid or gid 0: builds must run as an unprivileged user; "
                          f"name another with FMA_BUILD_USER")
    home = Path(entry.pw_dir)
    if not home.is_dir() or home.stat().st_uid != entry.pw_uid:
        raise ConfigError(f"the build user {name!r} has no home directory of its own ({home}): "
                          f"{SETUP_FIX.format(name=name)}")
    return BuildUser(name=name, uid=entry.pw_uid, gid=entry.pw_gid, home=home)


def remove_job(path: Path) -> None:
    """Remove a build directory (links inside are removed, never followed)."""
    shutil.rmtree(path, ignore_errors=True)
