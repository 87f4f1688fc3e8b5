"""Whether a run signs, and the key it signs with, opened before anything is built.

A run signs when a key is named by FMA_SIGNING_KEY (a file) or FMA_SIGNING_KEY_BLOCK (a Prefect
Secret block), unless ``--no-sign`` or the release config's ``sign: false`` turns it off
(:func:`signing_decision`, pure). :func:`load_signer` opens the key with its password, so a bad key
is one line before any build.
"""

from __future__ import annotations

from pathlib import Path

from tasks.core.errors import SigningError
from tasks.run.facts import Signer, SigningKey
from tasks.run.settings import Settings
from tasks.supplychain.cosign import Cosign

UNSIGNED = "unsigned: no signing key is configured (set FMA_SIGNING_KEY to a cosign key file to sign)"


def signing_decision(*, configured: bool, no_sign: bool, config_sign: bool) -> tuple[bool, str]:
    """Whether the run signs, and the one line that says why not (pure)."""
    if no_sign:
        return False, "unsigned: --no-sign"
    if not config_sign:
        return False, "unsigned: the release config says sign: false"
    if not configured:
        return False, UNSIGNED
    return True, ""


def load_signer(settings: Settings) -> Signer:
    """The configured key, opened with its password (a one-line :class:`SigningError` when it cannot be)."""
    if settings.signing_key and not Path(settings.signing_key).is_file():
        raise SigningError(f"the signing key {settings.signing_key} does not exist: point FMA_SIGNING_KEY at a "
                           "cosign key file (cosign generate-key-pair makes one), or release with --no-sign")
    key = SigningKey.from_settings(settings)
    if key is None:
        raise SigningError("no signing key is configured: set FMA_SIGNING_KEY")
    with Cosign(settings, "localhost", key=key) as tool:
        public = tool.public_key()
    return Signer(key=key, public_pem=public)
