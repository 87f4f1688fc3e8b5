"""What a run learns and hands on as values: the source at the tag, the signing key it opened, and
the facts every provenance statement records (the run's own, and each build's).

The step that learns a fact returns it; the flow builds the run's context with it. Nothing here
acts: these are frozen values.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import SecretStr

if TYPE_CHECKING:
    from tasks.run.settings import Settings

KEY_VARIABLE = "FMA_COSIGN_PRIVATE_KEY"  # the environment variable a Secret block's key travels in


@dataclass(frozen=True)
class Checkout:
    """The source at the tag: where it is and which commit the tag names."""

    path: Path
    source: str  # as given, credentials masked: goes into image labels
    tag: str
    revision: str  # full commit id the tag points at
    created: str  # the commit's date (RFC 3339): reproducible "created" label


@dataclass(frozen=True)
class SigningKey:
    """A cosign private key (a file, or the PEM text of a Secret block) and its password."""

    path: str = ""
    pem: SecretStr = field(default_factory=lambda: SecretStr(""))
    password: SecretStr = field(default_factory=lambda: SecretStr(""))

    @property
    def ref(self) -> str:
        """What ``--key`` takes."""
        return self.path or f"env://{KEY_VARIABLE}"

    def env(self) -> dict[str, str]:
        env = {"COSIGN_PASSWORD": self.password.get_secret_value()}
        if not self.path:
            env[KEY_VARIABLE] = self.pem.get_secret_value()
        return env

    @classmethod
    def from_settings(cls, settings: Settings) -> SigningKey | None:
        """The key the settings name, ``None`` when none is configured."""
        if settings.signing_key:
            return cls(path=settings.signing_key, password=settings.signing_password)
        if settings.signing_key_block:
            return cls(pem=SecretStr(settings.signing_key_pem()), password=settings.signing_password)
        return None


@dataclass(frozen=True)
class Signer:
    """The key a run signs with, and its public half (to read back what is already signed)."""

    key: SigningKey
    public_pem: str

    @property
    def fingerprint(self) -> str:
        """sha256 of the public key's PEM text, as the summary names the key."""
        return "sha256:" + hashlib.sha256(self.public_pem.encode()).hexdigest()


@dataclass(frozen=True)
class ReleaseFacts:
    """The run's part of every image's provenance."""

    tag: str
    source: str
    registry: str
    config_path: str
    config_digest: str  # sha256 hex of the release config's bytes
    revision: str  # the tagged commit
    run_id: str  # the Prefect flow run
    run_url: str  # its page, the builder's id
    versions: tuple[tuple[str, str], ...] = ()  # the tools that made it, (name, version)


@dataclass(frozen=True)
class BaseUse:
    """A base image a build stood on: as the source writes it, and as the build pulled it."""

    image: str  # as pulled: the mirror's reference when a mirror rewrote it; name@sha256:... when pinned
    platform: str = ""  # a FROM's own --platform (a builder stage on the build machine's); "" for the image's own
    written: str = ""  # as the source writes it: the FROM's image (ARGs expanded), or .ko.yaml's base
    where: str = ""  # where the source writes it: dockerfiles/Dockerfile.requester:3, .ko.yaml
    mirror: str = ""  # the mirror reference it was pulled from instead of ``written`` ("" when none)


@dataclass(frozen=True)
class BuildFacts:
    """One build's part: what built it, from what, when, in which run."""

    name: str
    builder: str
    fingerprint: str = ""
    platform: str = ""
    bases: tuple[BaseUse, ...] = ()
    started: str = ""
    finished: str = ""
    run_id: str = ""  # the flow run that built it, and its page ("" when unknown: this run's is named)
    run_url: str = ""
    goflags: tuple[str, ...] = ()  # GOFLAGS of a ko build, the cover flags computed at the tag among them
    cover_exclude: tuple[str, ...] | None = None  # a coverage build's exclusions (None: not built for coverage)
