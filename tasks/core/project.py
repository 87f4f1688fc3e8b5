"""This project: where its checkout is (the default release config and chart live there) and its
installed version (pyproject.toml)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def project_version() -> str:
    try:
        return version("fma-release")
    except PackageNotFoundError:
        return "unknown"
