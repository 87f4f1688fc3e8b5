"""This project's own version, as installed (pyproject.toml)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def project_version() -> str:
    try:
        return version("fma-release")
    except PackageNotFoundError:
        return "unknown"
