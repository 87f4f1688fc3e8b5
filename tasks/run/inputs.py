"""What a run's input may say, checked before anything runs (pure): a source URL carries no
credentials, and a workspace is a name under the release's own root, never a path elsewhere.

The request (tasks/run/context.py) calls these; docs/security.md says who sets which input.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from tasks.core.errors import ConfigError
from tasks.core.redact import redact

WORKSPACE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# scheme://user[:password]@host... ; scp-like user@host:path has no scheme and no secret (ssh keys).
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def check_source(source: str) -> str:
    """``source`` when it carries no credentials; :class:`ConfigError` (the URL masked) otherwise.

    ``https://x-access-token:ghp_...@github.com/o/r.git`` and ``https://ghp_...@github.com/...`` are
    refused (GitHub takes a token as the user name as well); ``ssh://git@host/...`` names a user whose
    key is the ssh agent's, and passes. A private source's credential comes from git's own
    configuration on the release host (docs/security.md)."""
    if not _URL.match(source):
        return source
    parts = urlsplit(source)
    scheme = parts.scheme.lower()
    has_user = "@" in parts.netloc
    if has_user and (parts.password is not None or scheme not in ("ssh", "git+ssh")):
        raise ConfigError(
            f"the source URL {redact(source)} carries credentials: give it without them; credentials come "
            "from the release host's environment or a Secret block (git's credential helper or "
            "GIT_CONFIG_* http.extraHeader, docs/security.md), never from the run's input"
        )
    return source


def workspace_name(workdir: str | None) -> str | None:
    """``workdir`` as a workspace name under the release's workspace root, ``None`` for a run's own.

    :class:`ConfigError` for anything but a plain name (``/etc``, ``../x``, ``a/b``): a run removes
    what it puts in its workspace, so a workspace can never be a path of the caller's choosing."""
    if workdir is None or workdir == "":
        return None
    if not WORKSPACE_NAME.fullmatch(workdir) or workdir in (".", ".."):
        raise ConfigError(
            f"workdir {workdir!r} is not a workspace name: give a name (letters, digits, '.', '_', '-'; "
            "up to 64) and the workspace is <state dir>/workspaces/<name>; paths are refused"
        )
    return workdir


def workspace_root(state_dir: Path) -> Path:
    """Where every workspace of the release lives: ``<state dir>/workspaces``."""
    return state_dir / "workspaces"


_REPO_PART = re.compile(r"[A-Za-z0-9_.-]+")


def is_repo_name(repo: str) -> bool:
    """Whether ``repo`` is a GitHub OWNER/NAME (pure): two parts of letters, digits, ``_.-``, neither ``.`` nor
    ``..``: nothing that could walk a URL path elsewhere."""
    parts = (repo or "").split("/")
    return len(parts) == 2 and all(p not in ("", ".", "..") and _REPO_PART.fullmatch(p) for p in parts)


def check_github_repo(repo: str | None) -> str:
    """``--github-repo``: "" when not given; :class:`ConfigError` unless OWNER/NAME."""
    if not repo:
        return ""
    if not is_repo_name(repo):
        raise ConfigError(f"--github-repo {redact(repo)!r} is not OWNER/NAME: write it like "
                          "llm-d-incubation/llm-d-fast-model-actuation")
    return repo

