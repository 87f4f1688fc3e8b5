"""Whether a run signs, and the key it signs with, opened before anything is built.

A run signs when a key is named by FMA_SIGNING_KEY (a file) or FMA_SIGNING_KEY_BLOCK (a Prefect
Secret block), unless ``--no-sign`` or the release config's ``sign: false`` turns it off
(:func:`signing_decision`, pure). The key is opened with its password before anything is built, so
a bad key is one line. A release signs with a copy of it made for the run (:func:`open_signer`,
tasks/supplychain/runkey.py), cheaper for each cosign process to open; when this machine has opened
the same key before, its public half is read from the state directory and the key is opened while
the source is checked out, the flow waiting for it before the first build. A promotion opens it as
it is (:func:`load_signer`). What a run signs is a :class:`SignJob` per published image or chart
(:func:`image_jobs`, :func:`chart_jobs`, pure).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tasks.core.errors import SigningError
from tasks.core.status import Status
from tasks.oci.registry import RegistryAPI
from tasks.run.facts import BaseUse, BuildFacts, Signer, SigningKey
from tasks.run.plan import ImageSpec
from tasks.run.result import BuiltImage, PublishedChart, PushedImage
from tasks.run.settings import Settings
from tasks.supplychain import runkey
from tasks.supplychain.cosign import Cosign, VerifyFailed
from tasks.supplychain.provenance import cosign_tag

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


def configured_key(settings: Settings) -> SigningKey:
    """The key the settings name (a one-line :class:`SigningError` when there is none, or no such file)."""
    if settings.signing_key and not Path(settings.signing_key).is_file():
        raise SigningError(f"the signing key {settings.signing_key} does not exist: point FMA_SIGNING_KEY at a "
                           "cosign key file (cosign generate-key-pair makes one), or release with --no-sign")
    key = SigningKey.from_settings(settings)
    if key is None:
        raise SigningError("no signing key is configured: set FMA_SIGNING_KEY")
    return key


def load_signer(settings: Settings) -> Signer:
    """The configured key, opened with its password (a one-line :class:`SigningError` when it cannot be)."""
    key = configured_key(settings)
    with Cosign(settings, "localhost", key=key) as tool:
        return Signer(key=key, public_pem=tool.public_key())


def key_identity(key: SigningKey) -> str:
    """sha256 of the key as it is stored, encrypted (the file, or the Secret block's PEM text): which key it
    is, and nothing of its password."""
    data = Path(key.path).read_bytes() if key.path else key.pem.get_secret_value().encode()
    return hashlib.sha256(data).hexdigest()


def _remember_public(path: Path, public_pem: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(public_pem, encoding="utf-8")
        tmp.replace(path)
    except OSError:
        pass  # the next run opens the key before it answers, as this one did


def _known_public(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""
    return text if text.startswith("-----BEGIN PUBLIC KEY-----") else ""


def open_signer(settings: Settings, directory: Path) -> tuple[Signer, Future[None] | None]:
    """The run's signer: a copy of the configured key in ``directory`` (tasks/supplychain/runkey.py) and
    its public half; and the opening of the key, when that is still running.

    The configured key is opened with its password, its copy written, before this returns, unless this
    machine has opened the same key (the same encrypted bytes) before: then its public half is read from
    the state directory, and the returned future opens the key in a thread of its own. It fails with the
    same one-line :class:`SigningError`, or when the key's public half is not the one noted: the flow waits
    for it before anything is built."""
    key = configured_key(settings)
    copy = runkey.run_copy(directory)
    try:
        kept = settings.state_dir / "signing-keys" / f"{key_identity(key)}.pub"
    except OSError:  # an unreadable key file: its opening names it
        kept = None
    known = _known_public(kept) if kept else ""
    if kept is None or not known:
        public = runkey.write_run_copy(key, copy)
        if kept:
            _remember_public(kept, public)
        return Signer(key=copy, public_pem=public), None
    note = kept

    def check() -> None:
        if runkey.write_run_copy(key, copy) != known:
            note.unlink(missing_ok=True)  # the next run opens the key before it answers, and notes it again
            raise SigningError(f"the public key this machine noted for {runkey.where(key)} ({note}) is not the "
                               "key's own (the key or the note changed): the note is removed; run the release again")

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fma-signing-key")
    try:
        return Signer(key=copy, public_pem=known), pool.submit(check)
    finally:
        pool.shutdown(wait=False)


@dataclass(frozen=True)
class SignJob:
    """One published artifact to sign: an image (its tag's top digest) or a chart."""

    name: str
    ref: str  # host/path/name:tag of an image; host/path/charts/name:version of a chart
    digest: str
    kind: Literal["image", "chart"] = "image"
    builder: str = ""
    builds: tuple[BuildFacts, ...] = ()  # this run's builds of it; () when it was already published
    sboms: tuple[Path, ...] = ()  # SBOMs its builder wrote (ko)

    @property
    def label(self) -> str:
        return self.name if self.kind == "image" else f"chart {self.name}"


def build_facts(built: BuiltImage, builder: str) -> BuildFacts:
    """What a provenance statement records of ``built`` (a result cached before bases were recorded as
    written holds (image, platform) pairs: those are taken as pulled, with nothing known of the source)."""
    bases = tuple(base if isinstance(base, BaseUse) else BaseUse(image=str(base[0]), platform=str(base[1]))
                  for base in built.bases)
    return BuildFacts(name=built.name, builder=builder, fingerprint=built.fingerprint, platform=built.platform,
                      bases=bases, started=built.started, finished=built.finished, run_id=built.run_id,
                      run_url=built.run_url, goflags=built.goflags, cover_exclude=built.cover_exclude)


def builder_sbom(sboms: tuple[Path, ...], platform: str) -> Path | None:
    """ko's SBOM file for ``platform`` (``<app>-linux-arm64.spdx.json``), if the build wrote one."""
    if not platform:
        return None
    suffix = "-" + platform.replace("/", "-").replace(":", "-") + ".spdx.json"
    found = [path for path in sboms if path.name.endswith(suffix)]
    return found[0] if len(found) == 1 and found[0].is_file() else None


def image_jobs(images: Sequence[PushedImage], built: Sequence[BuiltImage], specs: Sequence[ImageSpec],
               recorded: Sequence[BuildFacts] = ()) -> list[SignJob]:
    """A sign job per published image, with its builds: this run's, and for a platform this run did not
    build (the image was already published), the build an earlier run ``recorded`` of it, if any."""
    builders = {spec.name: spec.builder for spec in specs}
    jobs = []
    for image in images:
        own = [b for b in built if b.name == image.name]
        builder = builders.get(image.name, "")
        facts = [build_facts(b, builder) for b in own]
        done = {f.platform for f in facts}
        facts += [f for f in recorded if f.name == image.name and f.platform not in done]
        jobs.append(SignJob(
            name=image.name, ref=image.ref, digest=image.digest, builder=builder,
            builds=tuple(facts), sboms=tuple(path for b in own for path in b.sboms),
        ))
    return jobs


def chart_jobs(charts: Sequence[PublishedChart]) -> list[SignJob]:
    """A sign job per published chart (its OCI manifest at the version)."""
    return [SignJob(name=chart.name, ref=f"{chart.ref.removeprefix('oci://')}:{chart.version}", digest=chart.digest,
                    kind="chart") for chart in charts]


def ensure_signed(tool: Cosign, api: RegistryAPI, path: str, digest: str) -> Status:
    """Sign the manifest ``digest`` of the repository ``path`` (on ``api``'s host) unless a signature there
    verifies with the tool's public key already."""
    return ensure_all_signed(tool, api, path, (digest,))[digest]


def ensure_all_signed(tool: Cosign, api: RegistryAPI, path: str, digests: Sequence[str]) -> dict[str, Status]:
    """Sign those of the manifests ``digests`` of the repository ``path`` whose signature does not verify with
    the tool's public key yet, all in one cosign process; each digest's status. Only a signature tag that
    exists is read back with cosign (one HEAD first): a first signing costs no verify."""
    def signed_already(digest: str) -> bool:
        try:
            return bool(api.digest(path, cosign_tag(digest, "sig")) and tool.verify(f"{api.host}/{path}@{digest}"))
        except VerifyFailed:
            return False

    status = {digest: Status.ALREADY_SIGNED if signed_already(digest) else Status.SIGNED for digest in digests}
    tool.sign(*(f"{api.host}/{path}@{digest}" for digest, state in status.items() if state is Status.SIGNED))
    return status
