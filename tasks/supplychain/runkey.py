"""The run's own copy of its signing key, opened once (``fma-runkey``, built from tools/runkey).

Every cosign process that signs opens its key, an scrypt derivation at the cost the key was written
with (a quarter second of CPU for a key of ``cosign generate-key-pair``), and a release starts
several of them on its slowest image's chain. The preflight opens the configured key once with its
password and writes a copy for the run: the same private key, encrypted with a random password that
only this process holds (registered for masking, never stored) at the lowest scrypt cost cosign
accepts, in a private directory that the flow removes at its end. A copy left behind by a killed run
is a ciphertext whose password is gone.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from pathlib import Path

from pydantic import SecretStr

from tasks.core import cmd
from tasks.core.errors import CommandError, SigningError
from tasks.core.redact import register
from tasks.run.facts import SigningKey

PROGRAM = "fma-runkey"
PASSWORD_VARIABLE = "FMA_RUN_KEY_PASSWORD"  # noqa: S105 - the variable's name, not a password


def key_directory() -> Path:
    """A new private directory (0700) for a run's copy of its key."""
    return Path(tempfile.mkdtemp(prefix="fma-run-key-"))


def remove_key_directory(directory: Path | None) -> None:
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)


def run_copy(directory: Path) -> SigningKey:
    """The run's key: a file in ``directory`` (written by :func:`write_run_copy`) and its random password."""
    password = secrets.token_urlsafe(32)
    register(password)
    return SigningKey(path=str(directory / "cosign.key"), password=SecretStr(password))


def where(key: SigningKey) -> str:
    """The configured key as a message names it."""
    return f"the key file {key.path}" if key.path else "the key in FMA_SIGNING_KEY_BLOCK"


def write_run_copy(key: SigningKey, copy: SigningKey) -> str:
    """Open ``key`` with its password, write it as ``copy``; its public half (PEM, as ``cosign public-key``
    prints it). A key that does not open is a one-line :class:`SigningError` naming the fix."""
    try:
        return cmd.run([PROGRAM, key.ref, copy.path], what="open the signing key", fix="see the message above",
                       secrets={**key.env(), PASSWORD_VARIABLE: copy.password.get_secret_value()}, timeout=60)
    except CommandError as err:
        if err.returncode == 127:
            raise SigningError(str(err)) from err
        reason = err.stderr.strip().splitlines()[-1] if err.stderr.strip() else ""
        if "wrong password" in reason:
            raise SigningError(f"cannot open {where(key)}: wrong password; set FMA_SIGNING_PASSWORD to the key's "
                               "password") from err
        if "not a cosign private key" in reason:
            raise SigningError(f"cannot read {where(key)} as a cosign private key: make one with "
                               "'cosign generate-key-pair' and point FMA_SIGNING_KEY at cosign.key") from err
        raise SigningError(f"cannot open {where(key)}: {reason.removeprefix(PROGRAM + ': ') or err}") from err
