"""Symbolic links in a tree that came from the source: none may lead outside the checkout, or to
/proc or /dev. A chart, a Dockerfile's context or a ko main holding one is refused with one line
naming the link, before anything reads through it.

:func:`link_escape` decides for one link (pure: it only looks at the link's text and where it
sits); :func:`check_links` walks a tree without following links and raises on the first escape.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from tasks.core.errors import SourceError

FORBIDDEN_ROOTS = (PurePosixPath("/proc"), PurePosixPath("/dev"), PurePosixPath("/sys"))


def link_escape(link: PurePosixPath, target: str, root: PurePosixPath, scope: str = "the checkout") -> str:
    """Why the link at ``link`` (absolute, inside ``root``) pointing at ``target`` is refused, or ``""``.

    The target is resolved lexically from the link's directory: a link to a link inside the tree is
    checked when that link is, so a chain cannot leave the tree either."""
    joined = PurePosixPath(os.path.normpath(link.parent / target))
    for forbidden in FORBIDDEN_ROOTS:
        if joined == forbidden or forbidden in joined.parents:
            return f"points into {forbidden} ({target})"
    if joined != root and root not in joined.parents:
        return f"points outside {scope} ({target})"
    return ""


def check_links(tree: Path, root: Path, what: str, scope: str = "the checkout") -> None:
    """Refuse ``tree`` (a directory or file of the checkout ``root``) when it is, or holds, a link that
    :func:`link_escape` refuses; ``what`` names the tree in the message ("chart fma-controllers")."""
    root_path = PurePosixPath(os.path.realpath(root))
    start = Path(os.path.abspath(tree))
    candidates = [start]
    if start.is_dir() and not start.is_symlink():
        for current, dirs, files in os.walk(start):  # links to directories are listed, never entered
            candidates += [Path(current) / name for name in dirs + files]
    for path in candidates:
        if not path.is_symlink():
            continue
        real_parent = PurePosixPath(os.path.realpath(path.parent))
        link = real_parent / path.name
        reason = link_escape(link, os.readlink(path), root_path, scope)
        if reason:
            shown = path.relative_to(root) if path.is_relative_to(root) else path
            raise SourceError(
                f"{what}: the link {shown} {reason}: links in the source may point only inside "
                f"{scope}; replace it with the file itself"
            )
