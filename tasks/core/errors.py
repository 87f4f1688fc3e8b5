"""One base error and flat subclasses.

Every message is one line that says what failed and what to do about it. The
CLI prints ``str(err)`` of a :class:`ReleaseError` and exits non-zero; anything
else is a bug and shows a traceback only with ``--debug``.
"""

from __future__ import annotations

from collections.abc import Iterable

from tasks.core.redact import redact

# A failed step's own output on the console: its last lines, each cut to a width (errors stay one line;
# these go beside them, through the progress reports).
OUTPUT_LINES = 6
OUTPUT_WIDTH = 200


class ReleaseError(Exception):
    """Base of every error this project raises on purpose."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        # Keep the contract: one line, whatever the caller passed in.
        super().__init__(" ".join(message.split()))


class InvalidTagError(ReleaseError):
    """The tag is not vMAJOR.MINOR.PATCH[-PRERELEASE]."""

    exit_code = 2


class ConfigError(ReleaseError):
    """The release config is malformed or points at missing files."""

    exit_code = 2


class SourceError(ReleaseError):
    """The source cannot be read, or the tag is not in it."""


class CommandError(ReleaseError):
    """A subprocess failed; carries the (masked) command, exit code and stderr."""

    def __init__(self, message: str, *, argv: list[str], returncode: int, stderr: str) -> None:
        super().__init__(message)
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr


class EngineError(ReleaseError):
    """The Docker engine cannot be reached. ``transient`` when it was lost during a build, which is retried."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class ImageBuildError(ReleaseError):
    """A build failed; the message names the image, the failing step and the fix. ``output``: the last
    lines of that step's own output (the compiler's, the RUN's), bounded and masked, for the console."""

    def __init__(self, image: str, message: str, *, output: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.image = image
        self.output = bounded_output(output)


def bounded_output(lines: Iterable[str], limit: int = OUTPUT_LINES, width: int = OUTPUT_WIDTH) -> tuple[str, ...]:
    """The last ``limit`` non-blank lines of ``lines``, each masked (:func:`tasks.core.redact.redact`),
    stripped of trailing space and cut to ``width`` characters."""
    kept = [line.rstrip() for line in lines if line.strip()][-limit:] if limit > 0 else []
    return tuple(_cut(redact(line), width) for line in kept)


def _cut(line: str, width: int) -> str:
    return line if len(line) <= width else line[: width - 3] + "..."


class ImagePushError(ReleaseError):
    """A push failed. ``transient`` says whether trying again may help."""

    def __init__(self, image: str, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.image = image
        self.transient = transient


class ImageMissingError(ImagePushError):
    """A cached build's image is gone from the engine: build it again, then push."""

    def __init__(self, image: str, message: str) -> None:
        super().__init__(image, message, transient=False)


class ImagesFailedError(ReleaseError):
    """One or more images failed; lists each with its reason."""

    def __init__(self, failures: dict[str, str]) -> None:
        listed = "; ".join(f"{name}: {reason}" for name, reason in sorted(failures.items()))
        super().__init__(
            f"{len(failures)} image(s) failed, no chart was published: {listed}"
        )
        self.failures = dict(failures)


class RegistryError(ReleaseError):
    """The registry cannot be reached or refused a request."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class LayoutError(ReleaseError):
    """An OCI image layout on disk is missing, incomplete or malformed: build the image again."""


class ChartError(ReleaseError):
    """The chart is invalid, cannot be packaged, or cannot be published."""


class ToolMissingError(ReleaseError):
    """A program the release needs (ko, cosign, syft, go, a BuildKit docker CLI) is not installed or not usable."""


class ToolsFileError(ReleaseError):
    """scripts/tools.versions, the list of pinned tools, cannot be read or has a malformed line."""


class SigningError(ReleaseError):
    """A signature, attestation or SBOM cannot be made or pushed, or the signing key cannot be used."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class ProofError(ReleaseError):
    """A staged release failed its proof: nothing was promoted."""


class VerificationError(ReleaseError):
    """``fma-release verify`` found artifacts whose signature or attestations do not check out."""


class KubernetesError(ReleaseError):
    """The proof's Kubernetes API server cannot be started, reached or used (not a refusal of the chart,
    which is a failed check of the proof)."""
