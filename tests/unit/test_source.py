"""Checkout at a tag, against a real git repository made on the spot."""

from __future__ import annotations

from pathlib import Path

import pytest

from devkit.sample_source import make_sample_source
from tasks.core.errors import SourceError
from tasks.source import checkout_at_tag, resolve_tag


def test_checkout_is_the_tagged_commit_not_head(tmp_path: Path) -> None:
    """The clone is at the commit the tag names; ls-remote reports the same commit (annotated tag peeled)."""
    src = make_sample_source(tmp_path / "s", images=("requester",))
    assert resolve_tag(str(src.path), src.tag) == src.tag_commit
    checkout = checkout_at_tag(str(src.path), src.tag, tmp_path / "w", expected=src.tag_commit)
    assert checkout.revision == src.tag_commit != src.head_commit
    assert (checkout.path / "VERSION").read_text().startswith("0.3.1")
    assert checkout.created.startswith("20")


def test_a_tag_moved_since_the_preflight_fails_the_checkout(tmp_path: Path) -> None:
    """When the tag no longer names the commit the preflight saw, nothing is released from it."""
    src = make_sample_source(tmp_path / "s", images=("requester",))
    with pytest.raises(SourceError, match=r"tag v0\.3\.1 moved from"):
        checkout_at_tag(str(src.path), src.tag, tmp_path / "w", expected=src.head_commit)
