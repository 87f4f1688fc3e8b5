"""Dockerfile builds with the engine's own BuildKit, driven by a docker CLI (as upstream's ``docker buildx build``).

The docker SDK speaks only to the legacy builder. BuildKit runs inside dockerd (20.10 embeds it); a docker
CLI is what drives it: ``docker buildx build`` where the buildx plugin is installed, else the classic
``docker build`` of a CLI older than 23.0 with ``DOCKER_BUILDKIT=1`` (Debian's 20.10 at /usr/bin/docker).
A newer CLI without buildx refuses that, so it is skipped. :func:`buildkit_cli` finds one;
:class:`BuildkitClient` remembers it for the engine it is made for.

BuildKit decides the platform arguments (``TARGETPLATFORM``, ``BUILDPLATFORM``, ...) itself, runs a
``FROM --platform=$BUILDPLATFORM`` stage natively, skips stages the target does not need, and sets
labels in the image config. Base images: a ``FROM`` image the engine holds for the platform is used as it
is (as without ``--pull``), any other one is pulled by BuildKit from its registry (plain HTTP is fine for
127.0.0.0/8 registries, as for the engine's own pulls).

``# syntax=`` directives: the frontend image they name cannot be pulled on a machine without internet.
When the engine holds that image it is used; otherwise the directive is left out of a staging copy of
the Dockerfile (with a log line saying so) and the Dockerfile frontend built into the engine reads it. A
file that needs a newer frontend then fails to parse, and the error says to load the frontend image.

Pure functions decide (candidate CLIs, the argv, the environment, the failing step); :func:`probe`
and :func:`build_with_buildkit` act, every command through :mod:`tasks.core.cmd`.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.builders.bases import base_uses, registry_name, staged_dockerfile
from tasks.builders.dockerfile import BaseImage, base_images, instruction_line
from tasks.core import cmd
from tasks.core.errors import CommandError, EngineError, ImageBuildError, ToolMissingError, bounded_output
from tasks.core.project import PROJECT_ROOT
from tasks.core.pulse import Step, no_step
from tasks.core.redact import redact, register
from tasks.oci.auth import RegistryCredentials
from tasks.oci.platforms import exec_format_hint, platform_build_args
from tasks.oci.references import Reference
from tasks.run.result import BuiltImage

if TYPE_CHECKING:
    from tasks.run.context import RunContext
    from tasks.run.plan import ImageSpec

DEFAULT_HOST = "unix:///var/run/docker.sock"
SYSTEM_DOCKER = "/usr/bin/docker"  # Debian's docker.io client: 20.10, whose classic build drives BuildKit
# From 23.0 the CLI hands BuildKit builds to the buildx plugin and refuses DOCKER_BUILDKIT=1 without it;
# BuildKit came to the CLI in 18.09.
CLASSIC_BUILDKIT = ((18, 9), (23, 0))
# BuildKit defines these for every build; a value passed in would fake the platform.
PLATFORM_ARGS = frozenset({
    "TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT",
    "BUILDPLATFORM", "BUILDOS", "BUILDARCH", "BUILDVARIANT",
})
_INSTALL_FIX = (
    "install a docker CLI that drives BuildKit: apt-get install docker.io (its 20.10 /usr/bin/docker does; "
    "bash scripts/setup.sh installs it) or the buildx plugin"
)
_ENGINE_FIX = "start dockerd (bash scripts/setup.sh does) or point DOCKER_HOST at a running engine"


@dataclass(frozen=True)
class BuildkitBuild:
    """One image for one platform, built by BuildKit into the engine's image store under ``tag``."""

    name: str  # the image's name (requester)
    label: str  # how logs name this build: "requester linux/arm64"
    dockerfile: Path
    context: Path
    platform: str  # one platform per build: the engine's image store holds one per tag
    tag: str  # <registry>/<name>:<tag>[-linux-arm64]
    build_args: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)  # set in the image config by --label
    secrets: Mapping[str, str] = field(default_factory=dict)  # secret id -> NAME of the env variable holding it
    target: str = ""  # --target stage; "" = the last stage
    docker_host: str = ""  # the engine; "" = DOCKER_HOST of this process, else the local socket
    tls_cert_path: str = ""  # ca.pem, cert.pem, key.pem of a TLS tcp:// engine
    # Registry credentials for the bases' hosts they are bound to, in a DOCKER_CONFIG of this build's own.
    credentials: RegistryCredentials | None = field(default=None, repr=False, compare=False)
    base_hosts: tuple[str, ...] = ()
    no_cache: bool = False  # --no-cache: every step again; on 20.10 cache mounts then start empty too
    dockerfile_name: str = ""  # the Dockerfile as the release config names it, for messages ("": its file name)
    # Each base as the Dockerfile BuildKit reads names it (pinned, mirrored) -> how the source writes it:
    # "FROM quay.io/x:1 (dockerfiles/Dockerfile.requester line 3)", for a pull that fails.
    from_lines: Mapping[str, str] = field(default_factory=dict)

    @property
    def shown_label(self) -> str:
        """The label with the platform in it (``launcher (linux/amd64)``, ``requester linux/arm64``)."""
        return self.label if self.platform in self.label else f"{self.label} ({self.platform})"

    @property
    def shown_dockerfile(self) -> str:
        return self.dockerfile_name or self.dockerfile.name


# -- which CLI (pure) -------------------------------------------------------------


@dataclass(frozen=True)
class CliProbe:
    """What one docker binary can do."""

    path: str
    buildx: bool  # `docker buildx version` works
    version: str  # the client's version (20.10.24+dfsg1), "" when unknown


def candidate_paths(project_root: Path, path_env: str, system: str = SYSTEM_DOCKER,
                    exists: Callable[[str], bool] | None = None) -> list[str]:
    """Docker binaries in the order they are tried: the project's ``.local/bin``, each ``PATH`` entry,
    then ``system`` (/usr/bin/docker); one per real file."""
    places = [str(project_root / ".local" / "bin" / "docker")]
    places += [str(Path(entry) / "docker") for entry in path_env.split(os.pathsep) if entry]
    places.append(system)
    usable = exists or _executable
    found: list[str] = []
    seen: set[str] = set()
    for place in places:
        real = os.path.realpath(place)
        if real not in seen and usable(place):
            seen.add(real)
            found.append(place)
    return found


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def client_version(text: str) -> tuple[int, int] | None:
    """``(major, minor)`` of ``docker --version`` output (``Docker version 20.10.24+dfsg1, build 297e128``)."""
    match = re.search(r"(\d+)\.(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def choose_cli(probes: Sequence[CliProbe]) -> list[str] | None:
    """The argv prefix of a BuildKit build: the first CLI with buildx, else the first whose classic
    ``build`` drives BuildKit; ``None`` when no probe can."""
    for found in probes:
        if found.buildx:
            return [found.path, "buildx", "build"]
    low, high = CLASSIC_BUILDKIT
    for found in probes:
        version = client_version(found.version)
        if version is not None and low <= version < high:
            return [found.path, "build"]
    return None


# -- which CLI (act) --------------------------------------------------------------


def probe(path: str) -> CliProbe:
    """Ask the binary at ``path`` whether it has buildx and which version it is (no engine needed)."""
    try:
        cmd.run([path, "buildx", "version"], what="ask docker for buildx", fix="", timeout=30)
        buildx = True
    except CommandError:
        buildx = False
    try:
        version = cmd.run([path, "--version"], what="ask docker its version", fix="", timeout=30).strip()
    except CommandError:
        version = ""
    return CliProbe(path=path, buildx=buildx, version=version)


def buildkit_cli(
    project_root: Path = PROJECT_ROOT, path_env: str | None = None, system: str = SYSTEM_DOCKER
) -> list[str]:
    """The argv prefix of a BuildKit-capable docker CLI (``[docker, "buildx", "build"]`` or
    ``[docker, "build"]``); :class:`ToolMissingError` when there is none. Asks every time:
    :class:`BuildkitClient` keeps the answer."""
    paths = candidate_paths(project_root, os.environ.get("PATH", "") if path_env is None else path_env, system)
    chosen = choose_cli([probe(path) for path in paths])
    if chosen is None:
        tried = ", ".join(paths) or "no docker binary at all"
        raise ToolMissingError(f"no docker CLI here can drive BuildKit (tried {tried}); {_INSTALL_FIX}")
    return chosen


class BuildkitClient:
    """BuildKit builds for one engine; finds its CLI on first use and keeps it (one per engine, made by
    whoever owns the engine: nothing is kept in the module)."""

    def __init__(self, cli: Sequence[str] | None = None, project_root: Path = PROJECT_ROOT) -> None:
        self._cli = list(cli) if cli else None
        self._project_root = project_root
        self._lock = threading.Lock()

    @property
    def cli(self) -> list[str]:
        with self._lock:
            if self._cli is None:
                self._cli = buildkit_cli(self._project_root)
            return list(self._cli)

    def build(self, build: BuildkitBuild, log: Any, timeout: float = 3600, step: Step = no_step) -> str:
        """:func:`build_with_buildkit` with this client's CLI; the engine's image id."""
        return build_with_buildkit(build, log, self.cli, timeout=timeout, step=step)


# -- the build (pure) ---------------------------------------------------------------

_SECRET_ID = re.compile(r"[A-Za-z0-9_.-]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def build_argv(cli: Sequence[str], build: BuildkitBuild, dockerfile: Path, iidfile: Path) -> list[str]:
    """The command of ``build``: secrets by environment variable name only, never by value; the
    platform args left to BuildKit (see :func:`split_build_args`)."""
    argv = [*cli, "--progress", "plain", "--platform", build.platform, "-t", build.tag,
            "-f", str(dockerfile), "--iidfile", str(iidfile)]
    for key, value in split_build_args(build.build_args)[0].items():
        argv += ["--build-arg", f"{key}={value}"]
    for key, value in build.labels.items():
        argv += ["--label", f"{key}={value}"]
    for secret_id, variable in build.secrets.items():
        if not _SECRET_ID.fullmatch(secret_id) or not _ENV_NAME.fullmatch(variable):
            raise ValueError(f"secret {secret_id!r} from {variable!r}: use an id of letters, digits, . _ - "
                             "and the name of an environment variable")
        argv += ["--secret", f"id={secret_id},env={variable}"]
    if build.target:
        argv += ["--target", build.target]
    if build.no_cache:
        argv.append("--no-cache")
    if cli[1:2] == ["buildx"]:
        argv.append("--load")  # into the engine's image store whichever builder buildx is set to
    argv.append(str(build.context))
    return argv


def split_build_args(args: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """``(passed, dropped)``: the platform args are BuildKit's own and are dropped."""
    kept = {key: value for key, value in args.items() if key not in PLATFORM_ARGS}
    return kept, sorted(key for key in args if key in PLATFORM_ARGS)


def build_env(build: BuildkitBuild, base: Mapping[str, str]) -> dict[str, str]:
    """The CLI's environment: ``base`` (which holds the secrets' variables) with BuildKit on and, when the
    build names its engine, that engine's address and TLS files instead of any inherited ones."""
    env = dict(base)
    env["DOCKER_BUILDKIT"] = "1"
    env["BUILDKIT_PROGRESS"] = "plain"
    env["DOCKER_CLI_HINTS"] = "false"
    if build.docker_host:
        for inherited in ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"):
            env.pop(inherited, None)
        env["DOCKER_HOST"] = build.docker_host
    if build.tls_cert_path:
        env["DOCKER_CERT_PATH"] = build.tls_cert_path
        env["DOCKER_TLS_VERIFY"] = "1"
    return env


_DIRECTIVE = re.compile(r"#\s*([A-Za-z]+)\s*=\s*(\S+)\s*")


def syntax_directive(text: str) -> tuple[int, str] | None:
    """``(line index, frontend image)`` of the Dockerfile's ``# syntax=`` directive, or ``None``.
    Directives are the comment lines at the very top; anything else ends them."""
    for number, line in enumerate(text.splitlines()):
        found = _DIRECTIVE.fullmatch(line.strip())
        if found is None:
            return None
        if found.group(1).lower() == "syntax":
            return number, found.group(2)
    return None


def without_syntax(text: str) -> str:
    """``text`` without its ``# syntax=`` line; the other directives stay on top and a plain comment after
    them keeps the line count, so error line numbers still match the original file."""
    found = syntax_directive(text)
    if found is None:
        return text
    lines = text.splitlines(keepends=True)
    index = found[0]
    directives = 0
    while directives < len(lines) and _DIRECTIVE.fullmatch(lines[directives].strip()):
        directives += 1
    del lines[index]
    lines.insert(directives - 1, "# (syntax directive left out: the engine's own Dockerfile frontend reads this)\n")
    return "".join(lines)


_VERTEX = re.compile(r"#(\d+) (.+)")
_LOGGED = re.compile(r"\d+\.\d+(?: (.*))?")  # a step's own output: "#5 0.259 the line" after the vertex number
_STEP_WIDTH = 140


@dataclass(frozen=True)
class FailedStep:
    """The first step of a build's plain progress that failed."""

    name: str  # as BuildKit names it ([builder 3/5] RUN ...); "" when no step failed (a parse or CLI error)
    error: str  # BuildKit's error for it, or the last error line of the output
    output: tuple[str, ...] = ()  # the step's own output before its error, without BuildKit's prefixes


def failed_step(lines: Iterable[str]) -> FailedStep:
    """The first step that failed in a build's plain progress, its error and its own output; with no
    failed step, the last error line (a Dockerfile that does not parse, a CLI error)."""
    names: dict[str, str] = {}
    output: dict[str, list[str]] = {}
    last = ""
    for line in lines:
        vertex = _VERTEX.fullmatch(line.strip())
        if vertex is None:
            if line.strip() and not line.startswith(("------", " > ")):
                last = line.strip()
            continue
        number, text = vertex.groups()
        if number not in names:
            names[number] = text  # BuildKit prints a step's name first
        elif text.startswith("ERROR:"):
            return FailedStep(names[number], text.removeprefix("ERROR:").strip(), tuple(output.get(number, ())))
        else:
            logged = _LOGGED.fullmatch(text)
            if logged is not None:
                output.setdefault(number, []).append(logged.group(1) or "")
    for prefix in ("ERROR:", "error:", "failed to solve:", "failed to solve with frontend dockerfile.v0:"):
        last = last.removeprefix(prefix).strip()
    return FailedStep("", last)


def _short(step: str) -> str:
    return step if len(step) <= _STEP_WIDTH else step[: _STEP_WIDTH - 3] + "..."


def build_failure(lines: Iterable[str]) -> tuple[str, str]:
    """``(step, message)`` of a failed build's plain progress: the step as BuildKit names it
    (``[builder 3/5] RUN ...``, shortened to fit a line) and its error, from the first step that failed;
    ``("", last error line)`` when no step failed (a Dockerfile that does not parse, a CLI error)."""
    failed = failed_step(lines)
    return _short(failed.name), failed.error


def vertex_started(line: str, seen: set[str]) -> str:
    """The name of the step a plain-progress line starts (``#7 [builder 2/4] COPY go.mod go.mod``), the first
    time its number is seen (``seen`` remembers them); "" for any other line."""
    vertex = _VERTEX.fullmatch(line.strip())
    if vertex is None or vertex.group(1) in seen:
        return ""
    seen.add(vertex.group(1))
    return vertex.group(2)


def engine_unreachable(lines: Iterable[str]) -> bool:
    """Whether the CLI's output says it found no engine at its address."""
    # The CLI says it with a capital C, BuildKit's session dial ("failed to dial gRPC: ...") without.
    return any("cannot connect to the docker daemon" in line.lower() or "error during connect" in line
               for line in lines)


_BASE_STEP = "[internal] load metadata for "


def _same_image(named: str, staged: str) -> bool:
    """Whether BuildKit's name of a base (normalised: docker.io/library/x:1) is the staged Dockerfile's."""
    try:
        one, other = Reference.docker(named), Reference.docker(staged)
    except ValueError:
        return named == staged
    return (one.host, one.repository, one.reference) == (other.host, other.repository, other.reference)


# BuildKit's error for a command that exited non-zero repeats the command, which the step's name already shows.
_COMMAND_FAILED = re.compile(r"(?:executor failed running \[.*\]|process \".*\" did not complete successfully): "
                             r"(exit code: -?\d+)", re.DOTALL)


def _without_command(error: str) -> str:
    found = _COMMAND_FAILED.fullmatch(error)
    return f"the command failed with {found.group(1)}" if found else error


def failure_message(build: BuildkitBuild, lines: Sequence[str], stripped: str = "", dockerfile_text: str = "") -> str:
    """The one-line error of a failed build from its progress lines ("" when they say nothing): which image
    and platform, the step, BuildKit's error, and the fix: an emulator; for a base BuildKit cannot pull, the
    FROM line as the source writes it (``build.from_lines``) and ``mirrors:``; the frontend a left-out
    ``# syntax=`` named in ``stripped``; or the Dockerfile as the release config names it, at the line of
    the step (found in ``dockerfile_text``, the file BuildKit read)."""
    failed = failed_step(lines)
    if not failed.error:
        return ""
    step, message = _short(failed.name), _without_command(failed.error)
    label = build.shown_label
    where = f" at {step}" if step else ""
    hint = exec_format_hint(lines, build.platform)
    if hint:
        return f"image {label} failed to build{where}: {hint}"
    if step.startswith(_BASE_STEP):
        base = failed.name.removeprefix(_BASE_STEP)
        written = next((text for image, text in build.from_lines.items() if _same_image(base, image)), "")
        of = f" for {written}" if written else ""
        return (f"image {label}: BuildKit cannot get the base image {base}{of}: {message}; check that "
                f"{registry_name(base)} answers (re-run when it does), or point the image at a registry that has "
                "it with mirrors: in the release config")
    line = instruction_line(dockerfile_text, failed.name) if dockerfile_text and failed.name else 0
    at = f" (line {line})" if line else ""
    fix = f"fix the Dockerfile {build.shown_dockerfile}{at} and re-run"
    if stripped and not step:
        fix = (f"the file may need the frontend {stripped} of its # syntax= line: load that image into the "
               f"engine (docker load) or {fix}")
    return f"image {label} failed to build{where}: {message}; {fix}"


def failure_output(lines: Sequence[str]) -> tuple[str, ...]:
    """The failed step's own last lines for the console (bounded, masked); without a failed step's
    output, the last lines the CLI printed, BuildKit's summary blocks left out."""
    failed = failed_step(lines)
    if failed.output:
        return bounded_output(failed.output)
    if failed.name:
        return ()  # the step printed nothing of its own: its error is in the message
    return bounded_output(line for line in lines if not line.startswith(("------", " > ", "#")))


# -- the build (act) ----------------------------------------------------------------


def build_with_buildkit(build: BuildkitBuild, log: Any, cli: list[str] | None = None, *, timeout: float = 3600,
                        step: Step = no_step) -> str:
    """Build ``build`` with BuildKit, streaming each progress line into ``log.info("%s | %s", label, line)``
    (masked) and each step it starts into ``step``; the engine's image id.

    :class:`ImageBuildError` names the failing step and its error, with the step's last lines of output;
    :class:`EngineError` when the engine cannot be reached; :class:`ToolMissingError` when no CLI can
    drive BuildKit.
    """
    argv_prefix = cli or buildkit_cli()
    env = build_env(build, os.environ)
    secrets: dict[str, str] = {}  # the build's own secrets: the only ones its CLI gets (tasks/core/cmd.py)
    for secret_id, variable in build.secrets.items():
        if variable in cmd.SECRET_VARIABLES:
            raise ImageBuildError(build.name, f"image {build.label}: secret {secret_id!r} reads {variable}, a "
                                  "secret of the release host itself; give the build a variable of its own")
        if variable not in os.environ:
            raise ImageBuildError(build.name, f"image {build.label}: secret {secret_id!r} reads the environment "
                                  f"variable {variable}, which is not set; set it and re-run")
        secrets[variable] = os.environ[variable]
        register(secrets[variable])
    dropped = split_build_args(build.build_args)[1]
    if dropped:
        log.info("%s | not passed, BuildKit sets them: %s", build.label, ", ".join(dropped))
    lines: list[str] = []
    seen: set[str] = set()

    def on_line(line: str) -> None:
        lines.append(line)
        if line.strip():
            log.info("%s | %s", build.label, line)
            started = vertex_started(line, seen)
            if started:
                step(started)

    with tempfile.TemporaryDirectory(prefix="fma-buildkit-") as private:
        # The CLI answers BuildKit's requests for registry credentials from this config alone: the bases'
        # hosts the run's credentials are bound to, nothing of the user's own ~/.docker.
        docker_config = Path(private) / "docker"
        if build.credentials is not None:
            build.credentials.docker_config(docker_config, *build.base_hosts)
        else:
            docker_config.mkdir(mode=0o700)
            (docker_config / "config.json").write_text("{}")
        env["DOCKER_CONFIG"] = str(docker_config)
        dockerfile, stripped = _dockerfile_to_build(build, argv_prefix[0], env, private=Path(private), log=log)
        iidfile = Path(private) / "iid"
        try:
            argv = build_argv(argv_prefix, build, dockerfile, iidfile)
        except ValueError as err:
            raise ImageBuildError(build.name, f"image {build.label}: {err}") from err
        try:
            cmd.stream(argv, on_line=on_line, what=f"build {build.label}", fix="", timeout=timeout, env=env,
                       secrets=secrets)
        except CommandError as err:
            raise _failure(build, lines, err, timeout=timeout, stripped=stripped) from err
        image_id = iidfile.read_text(encoding="utf-8").strip() if iidfile.is_file() else ""
    if not image_id:
        raise ImageBuildError(build.name, f"image {build.label}: the build wrote no image id; "
                              "check the engine's log and re-run")
    return image_id


def _dockerfile_to_build(build: BuildkitBuild, docker: str, env: dict[str, str], *, private: Path,
                         log: Any) -> tuple[Path, str]:
    """The Dockerfile to hand the CLI and the frontend image whose ``# syntax=`` was left out ("" if none)."""
    try:
        text = build.dockerfile.read_text(encoding="utf-8")
    except OSError as err:
        raise ImageBuildError(build.name, f"image {build.label}: cannot read the Dockerfile {build.dockerfile}: "
                              f"{err.strerror}; fix 'dockerfile' in the release config") from err
    found = syntax_directive(text)
    if found is None or _engine_has(docker, found[1], env):
        return build.dockerfile, ""
    log.info("%s | # syntax=%s cannot be pulled here and the engine does not hold it: the engine's own "
             "Dockerfile frontend reads the file", build.label, found[1])
    staged = private / build.dockerfile.name
    staged.write_text(without_syntax(text), encoding="utf-8")
    ignore = build.dockerfile.with_name(build.dockerfile.name + ".dockerignore")  # a Dockerfile's own ignore file
    if ignore.is_file():
        shutil.copy2(ignore, private / ignore.name)
    return staged, found[1]


def _engine_has(docker: str, image: str, env: dict[str, str]) -> bool:
    try:
        cmd.run([docker, "image", "inspect", "--format", "{{.Id}}", image], what=f"look for {image}", fix="",
                env=env, timeout=60)
    except CommandError:
        return False
    return True


def _failure(build: BuildkitBuild, lines: list[str], err: CommandError, *, timeout: float,
             stripped: str) -> EngineError | ImageBuildError | ToolMissingError:
    if err.returncode == 127:
        return ToolMissingError(f"cannot build {build.label}: {err.argv[0]} is gone; {_INSTALL_FIX}")
    if err.returncode == -1:
        return ImageBuildError(build.name, f"image {build.label} was stopped after {timeout:.0f}s of building: "
                               "find the step that hangs in its log, or allow the build more time",
                               output=failure_output(lines))
    if engine_unreachable(lines):
        host = build.docker_host or os.environ.get("DOCKER_HOST") or DEFAULT_HOST
        return EngineError(f"cannot reach the Docker engine at {redact(host)} to build {build.label}: {_ENGINE_FIX}")
    try:
        text = build.dockerfile.read_text(encoding="utf-8")  # the file BuildKit read: the lines of the original
    except OSError:
        text = ""
    return ImageBuildError(build.name, failure_message(build, lines, stripped, text) or
                           f"image {build.shown_label} failed to build: exit code {err.returncode}; "
                           f"fix the Dockerfile {build.shown_dockerfile} and re-run", output=failure_output(lines))


# -- the builder ---------------------------------------------------------------------


def from_lines(original: str, staged: Sequence[BaseImage], build_args: Mapping[str, str],
               dockerfile: str) -> dict[str, str]:
    """Each base of the staged Dockerfile (pinned, mirrored) -> its FROM as the original writes it, and
    where (``FROM quay.io/x:1 (dockerfiles/Dockerfile.requester line 3)``). Staging changes only the
    images of the FROM lines, so the two lists of bases go in the same order."""
    written = base_images(original, build_args)
    if len(written) != len(staged):
        return {}
    return {base.image: f"FROM {source.image} ({dockerfile} line {source.line + 1})"
            for base, source in zip(staged, written, strict=True)}


class BuildkitBuilder:
    """``builder: dockerfile`` (the default) or ``buildkit``: one platform of a Dockerfile image, with the
    engine's BuildKit. Bases are pinned by digest for the platform in a staging copy (as for the legacy
    builder), but not pulled: BuildKit fetches what the build needs, and only that."""

    def build(self, spec: ImageSpec, run: RunContext, log: Any, step: Step = no_step) -> BuiltImage:
        with run.engines.client(spec.engine) as client, tempfile.TemporaryDirectory(prefix="fma-dockerfile-") as tmp:
            # The platform args expand FROM --platform=$BUILDPLATFORM for pinning; BuildKit sets them itself.
            expand = {**platform_build_args(spec.platform, run.engines.platform(client)), **spec.build_args}
            step("resolving the base images")
            dockerfile = staged_dockerfile(client, spec, expand, Path(tmp), registries=run.registries, log=log,
                                           pull=False)
            staged = base_images(dockerfile.read_text(encoding="utf-8"), expand)
            hosts = tuple(sorted({Reference.docker(base.image).host for base in staged}))
            image_id = run.engines.kept(spec.engine, "buildkit", BuildkitClient).build(BuildkitBuild(
                name=spec.name, label=spec.label, dockerfile=dockerfile, context=spec.context, platform=spec.platform,
                tag=spec.ref, build_args=spec.build_args, labels=spec.labels, secrets=spec.secrets,
                docker_host=run.engines.address(spec.engine), tls_cert_path=spec.engine.tls_cert_path,
                credentials=run.settings.all_credentials(), base_hosts=hosts, dockerfile_name=spec.dockerfile_shown,
                from_lines=from_lines(spec.dockerfile_path.read_text(encoding="utf-8"), staged, expand,
                                      spec.dockerfile_shown),
            ), log, step=step)
            bases = base_uses(spec.dockerfile_path.read_text(encoding="utf-8"), dockerfile.read_text(encoding="utf-8"),
                              build_args=expand, mirrors=spec.mirrors, where=spec.dockerfile_shown)
        return BuiltImage(name=spec.name, ref=spec.ref, image_id=image_id, fingerprint=spec.fingerprint,
                          platform=spec.platform, label=spec.label, engine=spec.engine, bases=bases)
