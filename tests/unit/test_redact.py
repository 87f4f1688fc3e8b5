"""Secrets are masked in text and in log records."""

from __future__ import annotations

import logging

import pytest

from tasks.core.redact import RedactingFilter, redact, register


def test_registered_secret_and_url_credentials_are_masked() -> None:
    """A registered value and the user-info of any URL become ***."""
    register("s3cr3t-value-xyz")
    text = "login with s3cr3t-value-xyz to https://bot:tok3n@github.com/o/r.git"
    assert redact(text) == "login with *** to https://***@github.com/o/r.git"


def test_filter_masks_message_arguments(caplog: pytest.LogCaptureFixture) -> None:
    """A log call that formats a secret into its message is stored masked."""
    register("hunter2-password")
    logger = logging.getLogger("fma_release.test_redact")
    handler = logging.Handler()
    records: list[logging.LogRecord] = []
    handler.emit = records.append  # type: ignore[method-assign]
    handler.addFilter(RedactingFilter())
    logger.addHandler(handler)
    try:
        logger.warning("password is %s", "hunter2-password")
        try:
            raise ValueError("bad hunter2-password")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    assert records[0].getMessage() == "password is ***"
    assert records[1].exc_info is None and "hunter2" not in records[1].getMessage()
