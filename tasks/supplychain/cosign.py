"""The one place cosign runs, and SBOMs are asked for: signing, attesting, verifying and scanning one
registry's images (the scans by fma-sbomd, syft's library: :mod:`tasks.supplychain.sbom`).

:class:`Cosign` is opened for one registry host (``with Cosign(...) as tool:``). It keeps a private
directory for as long as the block lasts: the registry credentials as a DOCKER_CONFIG (the tools'
keychain), the registry's CA beside the system roots, the public key. The private key reaches cosign
as a file path or, from a Prefect Secret block, in an environment variable (``--key env://``); its
password only as COSIGN_PASSWORD. Neither is ever on a command line, in a file of ours or in an error.

Signatures and attestations are cosign's key-based kind with no transparency log (there is none
here): ``sha256-<digest>.sig`` and ``.att`` tags beside the image, verified with ``--key`` and
``--insecure-ignore-tlog``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tasks.core import cmd
from tasks.core.errors import CommandError, SigningError
from tasks.oci.registry import Schemes, is_loopback, registry_scheme
from tasks.run.facts import SigningKey
from tasks.run.retry import is_transient_push_error
from tasks.run.settings import Settings
from tasks.supplychain import sbom

PROVENANCE = "slsaprovenance1"  # cosign's --type for an in-toto statement with a SLSA v1 predicate
SBOM = "spdxjson"
PREDICATE_TYPES = {PROVENANCE: "https://slsa.dev/provenance/v1", SBOM: "https://spdx.dev/Document"}
# What cosign says when a digest simply has no (matching) signature or attestation yet.
_ABSENT = ("no signatures found", "no matching signatures", "no matching attestations", "none of the attestations")


def _statements(out: str) -> list[dict[str, Any]]:
    """The in-toto statements in ``cosign verify-attestation --output json``'s output: one envelope a line."""
    return [json.loads(base64.b64decode(json.loads(line)["payload"]))
            for line in out.splitlines() if line.strip().startswith("{")]


class VerifyFailed(Exception):
    """cosign did not verify a signature or an attestation; ``absent`` when there was none at all."""

    def __init__(self, reason: str, *, absent: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.absent = absent


def _reason(err: CommandError) -> str:
    """cosign's own one-line reason from its stderr (the last ``Error:`` line), without our framing."""
    lines = [line.strip() for line in err.stderr.splitlines() if line.strip() and not line.startswith("WARNING")]
    errors = [line.removeprefix("Error: ") for line in lines if line.startswith("Error: ")]
    text = errors[-1] if errors else (lines[-1] if lines else f"exit code {err.returncode}")
    return text.removeprefix("main.go:").strip()


class Cosign:
    """cosign and syft against one registry host; use as a context manager."""

    def __init__(self, settings: Settings, host: str, *, schemes: Schemes | None = None,
                 key: SigningKey | None = None, public_pem: str = "") -> None:
        self.settings = settings
        self.host = host
        self.key = key
        self.public_pem = public_pem
        self._schemes = schemes or registry_scheme
        self._dir: Path | None = None
        self._env: dict[str, str] = {}

    def __enter__(self) -> Cosign:
        self._dir = Path(tempfile.mkdtemp(prefix="fma-cosign-"))
        self._dir.chmod(0o700)
        env: dict[str, str] = {"TUF_ROOT": str(self._dir / "tuf"), "SIGSTORE_NO_CACHE": "true"}
        credentials = self.settings.credentials(self.host)  # only when bound to this host
        docker_config = self._dir / "docker"
        docker_config.mkdir()
        if credentials is not None:
            credentials.docker_config(docker_config, self.host)
        env["DOCKER_CONFIG"] = str(docker_config)  # the run's credentials or none: never the user's own
        if self.settings.registry_ca_file:
            certs = self._dir / "certs"
            certs.mkdir()
            shutil.copyfile(self.settings.registry_ca_file, certs / "fma-registry-ca.pem")
            env["SSL_CERT_DIR"] = f"{certs}:/etc/ssl/certs"
        if self.public_pem:
            (self._dir / "cosign.pub").write_text(self.public_pem)
        self._env = env
        return self

    def __exit__(self, *exc: object) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = None

    # -- the commands ------------------------------------------------------------

    @functools.cached_property
    def _scheme(self) -> str:
        """The registry's scheme, asked only when a command talks to it (opening the key does not)."""
        return self._schemes(self.host)

    def _registry_flags(self) -> list[str]:
        flags = []
        if self._scheme == "http":
            flags.append("--allow-http-registry")
        elif is_loopback(self.host) and not self.settings.registry_ca_file:
            flags.append("--allow-insecure-registry")  # as dockerd and our registry client treat loopback
        return flags

    def _run(self, argv: list[str], *, what: str, secret: bool = False, timeout: float = 300) -> str:
        # The key and its password reach cosign only for a command that signs (cmd drops every other secret).
        return cmd.run(["cosign", *argv], what=what, fix="see the cosign output in the run log",
                       env={**os.environ, **self._env}, secrets=self.key.env() if secret and self.key else None,
                       timeout=timeout)

    def _public_key_path(self) -> str:
        if self._dir is None or not self.public_pem:
            raise RuntimeError("Cosign needs a public key and an open context to verify")
        return str(self._dir / "cosign.pub")

    def sign(self, *refs: str) -> None:
        """Sign each of ``refs`` (``repo@sha256:...``) with the private key and push the signatures: one
        cosign process, so the key is opened once (its scrypt is about a quarter second of CPU)."""
        if self.key is None:
            raise RuntimeError("Cosign.sign needs a key")
        if not refs:
            return
        shown = refs[0] if len(refs) == 1 else f"{refs[0]} and {len(refs) - 1} more"
        try:
            self._run(["sign", "--key", self.key.ref, "--tlog-upload=false", "--yes", *self._registry_flags(), *refs],
                      what=f"sign {shown}", secret=True)
        except CommandError as err:
            raise _signing_error(f"cannot sign {shown}", err) from err

    def attest(self, ref: str, predicate: bytes, predicate_type: str) -> None:
        """Attach ``predicate`` (JSON) to ``ref`` as a signed in-toto attestation of ``predicate_type``."""
        if self.key is None or self._dir is None:
            raise RuntimeError("Cosign.attest needs a key and an open context")
        path = self._dir / f"predicate-{predicate_type}-{_file_key(ref)}.json"  # manifests are attested in parallel
        path.write_bytes(predicate)
        try:
            self._run(["attest", "--key", self.key.ref, "--tlog-upload=false", "--yes", "--type", predicate_type,
                       "--predicate", str(path), *self._registry_flags(), ref],
                      what=f"attest {predicate_type} for {ref}", secret=True)
        except CommandError as err:
            raise _signing_error(f"cannot attach the {predicate_type} attestation to {ref}", err) from err
        finally:
            path.unlink(missing_ok=True)

    def verify(self, ref: str) -> list[dict[str, Any]]:
        """The signature payloads of ``ref`` that verify with the public key; :class:`VerifyFailed` if none."""
        payloads: list[dict[str, Any]] = []
        for line in self._verify(["verify"], ref).splitlines():
            if line.strip().startswith("["):
                payloads += _flatten(json.loads(line))
        return payloads

    def verify_attestation(self, ref: str, predicate_type: str) -> list[dict[str, Any]]:
        """The in-toto statements of ``predicate_type`` attached to ``ref`` whose signatures verify."""
        return _statements(self._verify(["verify-attestation", "--type", predicate_type], ref))

    def all_signed(self, refs: Sequence[str]) -> bool:
        """Whether every one of ``refs`` has a signature that verifies with the public key, in one cosign
        process (it checks them in turn and stops at the first that fails). False says only that one did not:
        :meth:`verify` each to learn which and why."""
        try:
            self._verify(["verify"], *refs)
        except VerifyFailed:
            return False
        return True

    def attestations_of_all(self, refs: Sequence[str], predicate_type: str) -> list[dict[str, Any]] | None:
        """The in-toto statements of ``predicate_type`` attached to ``refs`` whose signatures verify, read in one
        cosign process; None when one of ``refs`` has none that verifies (:meth:`verify_attestation` each to
        learn which and why). A statement names its manifest in its subject, not by where it was found."""
        try:
            return _statements(self._verify(["verify-attestation", "--type", predicate_type], *refs))
        except VerifyFailed:
            return None

    def _verify(self, command: list[str], *refs: str) -> str:
        shown = refs[0] if len(refs) == 1 else f"{refs[0]} and {len(refs) - 1} more"
        try:
            return self._run([*command, "--key", self._public_key_path(), "--insecure-ignore-tlog=true",
                              "--offline=true", "--output", "json", *self._registry_flags(), *refs],
                             what=f"{command[0]} {shown}")
        except CommandError as err:
            reason = _reason(err)
            if err.returncode == 127:
                raise SigningError(str(err)) from err
            raise VerifyFailed(reason, absent=any(text in reason.lower() for text in _ABSENT)) from err

    def public_key(self) -> str:
        """The public key of the private key (checks that the key loads with its password)."""
        if self.key is None:
            raise RuntimeError("Cosign.public_key needs a key")
        try:
            return self._run(["public-key", "--key", self.key.ref], what="read the signing key", secret=True,
                             timeout=60)
        except CommandError as err:
            reason = _reason(err).lower()
            where = f"the key file {self.key.path}" if self.key.path else "the key in FMA_SIGNING_KEY_BLOCK"
            if err.returncode == 127:
                raise SigningError(str(err)) from err
            if "decrypt" in reason or "password" in reason:
                raise SigningError(f"cannot open {where}: wrong password; set FMA_SIGNING_PASSWORD to the key's "
                                   "password") from err
            raise SigningError(f"cannot read {where} as a cosign private key: make one with "
                               "'cosign generate-key-pair' and point FMA_SIGNING_KEY at cosign.key") from err

    def sbom(self, ref: str) -> bytes:
        """An SPDX JSON SBOM of the image ``ref`` (one platform's manifest), made by syft's library in
        fma-sbomd (:mod:`tasks.supplychain.sbom`) from the registry."""
        if self._dir is None:
            raise RuntimeError("Cosign.sbom needs an open context")
        out = self._dir / f"sbom-{_file_key(ref)}.spdx.json"  # one file per manifest: they are scanned in parallel
        credentials = self.settings.credentials(self.host)  # only when bound to this host
        request = sbom.ScanRequest(
            image=ref, out=out, http=self._scheme == "http",
            insecure=self._scheme == "https" and is_loopback(self.host) and not self.settings.registry_ca_file,
            ca=self.settings.registry_ca_file or "",
            username=credentials.username if credentials else "",
            password=credentials.password.get_secret_value() if credentials else "")
        try:
            sbom.scan(request)
            return out.read_bytes()
        except sbom.ScanFailed as err:
            transient = err.transient or is_transient_push_error(err.reason)
            fix = "it is retried; re-run the release if it keeps failing" if transient else \
                "check that the image is in the registry and readable with the run's credentials"
            raise SigningError(f"cannot make the SBOM of {ref}: {err.reason}; {fix}", transient=transient) from err
        finally:
            out.unlink(missing_ok=True)


def _file_key(ref: str) -> str:
    """A file name part of its own for ``ref`` (its digest's hex, else a hash of the reference)."""
    return ref.rpartition("@sha256:")[2][:32] if "@sha256:" in ref else hashlib.sha256(ref.encode()).hexdigest()[:32]


def _flatten(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else [value]


def _signing_error(what: str, err: CommandError) -> SigningError:
    reason = _reason(err)
    transient = is_transient_push_error(reason)
    fix = "it is retried; re-run the release if it keeps failing" if transient else \
        "check the registry credentials and that it accepts pushes"
    return SigningError(f"{what}: {reason}; {fix}", transient=transient)
