"""A source's ``.ko.yaml``: which base each Go main is built on, and the copy that pulls bases from mirrors.

Pure functions only. ko reads its config through viper, so top-level keys match whatever their
case, and ``baseImageOverrides`` keys are import paths compared in lower case; this module reads
the file the same way. Nothing here talks to a registry.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from tasks.core.errors import ConfigError

# What ko v0.19.1 builds on when .ko.yaml names no base (pkg/commands/options/build.go).
KO_DEFAULT_BASE = "cgr.dev/chainguard/static:latest"

_DOCKER_HUB = "docker.io"
_DOCKER_HUB_ALIASES = ("index.docker.io", "registry-1.docker.io")


@dataclass(frozen=True)
class KoBuildEntry:
    """One entry of ``builds:`` (ko's goreleaser-like per-main settings)."""

    id: str = ""
    dir: str = "."
    main: str = "."
    env: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    ldflags: tuple[str, ...] = ()


@dataclass(frozen=True)
class KoConfig:
    """What ko takes from ``.ko.yaml`` that decides a build's base and flags."""

    default_base: str = ""  # "" when the file names none (ko then uses KO_DEFAULT_BASE)
    base_overrides: Mapping[str, str] = field(default_factory=dict, hash=False)  # import path (lower case) -> base
    builds: tuple[KoBuildEntry, ...] = ()
    default_platforms: tuple[str, ...] = ()
    default_env: tuple[str, ...] = ()  # defaultEnv, defaultFlags, defaultLdflags: every build's
    default_flags: tuple[str, ...] = ()
    default_ldflags: tuple[str, ...] = ()


def _key(document: Mapping[str, Any], name: str) -> str | None:
    """The key of ``document`` that viper would read as ``name`` (case-insensitive)."""
    for key in document:
        if isinstance(key, str) and key.lower() == name.lower():
            return key
    return None


def _strings(value: Any, where: str) -> tuple[str, ...]:
    """A string or a list of strings (ko accepts both for flags and ldflags)."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(item, str | int | float) for item in value):
        return tuple(str(item) for item in value)
    raise ConfigError(f"{where} must be a string or a list of strings; fix .ko.yaml")


def _load(text: str, where: str) -> dict[str, Any]:
    try:
        document = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{where} is not valid YAML{at}: fix its syntax (ko would refuse it too)") from err
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(f"{where} must be a mapping of settings, not a {type(document).__name__}; fix the file")
    return document


def parse_ko_config(text: str, where: str = ".ko.yaml") -> KoConfig:
    """Read a ``.ko.yaml`` text; :class:`ConfigError` (one line, naming ``where``) when it is malformed."""
    document = _load(text, where)
    default_key = _key(document, "defaultBaseImage")
    default_base = document.get(default_key) if default_key else ""
    if not isinstance(default_base, str | type(None)):
        raise ConfigError(f"{where}: defaultBaseImage must be an image reference string; fix the file")
    overrides_key = _key(document, "baseImageOverrides")
    raw_overrides = document.get(overrides_key) if overrides_key else None
    if raw_overrides is None:
        raw_overrides = {}
    if not isinstance(raw_overrides, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw_overrides.items()
    ):
        raise ConfigError(f"{where}: baseImageOverrides must map import paths to image references; fix the file")
    builds_key = _key(document, "builds")
    raw_builds = document.get(builds_key) if builds_key else None
    if raw_builds is None:
        raw_builds = []
    if not isinstance(raw_builds, list):
        raise ConfigError(f"{where}: builds must be a list of build entries; fix the file")
    builds = []
    for number, entry in enumerate(raw_builds):
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: builds entry #{number} must be a mapping; fix the file")
        at = f"{where}: builds entry #{number}"

        def text_of(name: str, default: str, entry: dict[str, Any] = entry, at: str = at) -> str:
            key = _key(entry, name)
            value = entry.get(key, default) if key else default
            if not isinstance(value, str):
                raise ConfigError(f"{at}: {name} must be a string; fix the file")
            return value or default

        def list_of(name: str, entry: dict[str, Any] = entry, at: str = at) -> tuple[str, ...]:
            key = _key(entry, name)
            return _strings(entry.get(key) if key else None, f"{at}: {name}")

        builds.append(
            KoBuildEntry(
                id=text_of("id", ""), dir=text_of("dir", "."), main=text_of("main", "."),
                env=list_of("env"), flags=list_of("flags"), ldflags=list_of("ldflags"),
            )
        )
    platforms_key = _key(document, "defaultPlatforms")
    platforms = _strings(document.get(platforms_key) if platforms_key else None, f"{where}: defaultPlatforms")

    def top(name: str) -> tuple[str, ...]:
        key = _key(document, name)
        return _strings(document.get(key) if key else None, f"{where}: {name}")

    return KoConfig(
        default_base=default_base or "",
        base_overrides={key.lower(): value for key, value in raw_overrides.items()},
        builds=tuple(builds),
        default_platforms=platforms,
        default_env=top("defaultEnv"), default_flags=top("defaultFlags"), default_ldflags=top("defaultLdflags"),
    )


# What a source's .ko.yaml may set in a build's environment (builds[].env, defaultEnv): the Go
# toolchain's per-architecture knobs. Anything else is refused: CC, CXX, CGO_* and their kin name
# programs the compiler runs, GOFLAGS can add -toolexec, GOENV/GOCACHE/GOPROXY... redirect the
# toolchain itself. CGO_ENABLED may only say 0: builds are pure Go (ko's own default).
SOURCE_ENV = frozenset({
    "GOAMD64", "GOARM", "GOARM64", "GO386", "GOMIPS", "GOMIPS64", "GOPPC64", "GORISCV64", "GOWASM",
    "GOEXPERIMENT", "GODEBUG",
})
# Build and link flags that make the toolchain run another program or read files it names.
TOOL_FLAGS = frozenset({
    "toolexec", "exec", "compiler", "gccgoflags", "overlay", "modfile", "pkgdir",
    "extld", "extldflags", "extar", "linkmode", "tmpdir",
})
_FLAG_NAME = re.compile(r"""(?:^|[\s='"])-{1,2}([A-Za-z][\w-]*)""")


def source_settings_refused(config: KoConfig, where: str = ".ko.yaml") -> str:
    """Why ``config`` sets something a source may not (one line naming it and the fix), or ``""``.

    See :data:`SOURCE_ENV` and :data:`TOOL_FLAGS`; docs/security.md lists what a source may set."""
    entries = [(f"{where}: defaultEnv/defaultFlags/defaultLdflags", config.default_env, config.default_flags,
                config.default_ldflags)]
    entries += [(f"{where}: builds entry {entry.id or entry.main!r}", entry.env, entry.flags, entry.ldflags)
                for entry in config.builds]
    for at, env, flags, ldflags in entries:
        for item in env:
            name, _, value = item.partition("=")
            name = name.strip()
            if name == "CGO_ENABLED" and value.strip() == "0":
                continue
            if name not in SOURCE_ENV:
                return (f"{at} sets {name} in the build's environment: a source may set only "
                        f"{', '.join(sorted(SOURCE_ENV))} and CGO_ENABLED=0 (docs/security.md); remove it")
        for item in (*flags, *ldflags):
            for flag in _FLAG_NAME.findall(item):
                if flag in TOOL_FLAGS:
                    return (f"{at} passes -{flag}, which makes the Go toolchain run or read what it names: "
                            "a source may not set it (docs/security.md); remove it")
    return ""


def module_path(go_mod: str) -> str:
    """The ``module`` line of a go.mod text; :class:`ConfigError` when there is none."""
    for line in go_mod.splitlines():
        words = line.split("//", 1)[0].split()
        if len(words) == 2 and words[0] == "module":
            return words[1].strip('"`')
    raise ConfigError("go.mod has no module line: the source is not a Go module; fix go.mod")


def import_path(module: str, main: str) -> str:
    """The import path of ``main`` (``./cmd/x``, as the Makefile passes it) in ``module``."""
    relative = main.strip().removeprefix("./").strip("/")
    if relative in ("", "."):
        return module
    return f"{module}/{relative}"


def base_for(config: KoConfig, importpath_or_main: str) -> str:
    """The base ko builds this main on: its override, else the default, else ko's own default.

    Overrides are keyed by full import path, as ko matches them (a ``./cmd/x`` main matches none:
    resolve it with :func:`import_path` first).
    """
    key = importpath_or_main.removeprefix("ko://").lower()
    override = config.base_overrides.get(key, "")
    return override or config.default_base or KO_DEFAULT_BASE


def split_reference(image_ref: str) -> tuple[str, str]:
    """``(name, suffix)``: the suffix is ``@digest``, ``:tag``, ``:tag@digest`` or ``""``."""
    name, at, digest = image_ref.partition("@")
    suffix = f"{at}{digest}"
    head, slash, last = name.rpartition("/")
    if ":" in last:
        last, tag = last.split(":", 1)
        return f"{head}{slash}{last}", f":{tag}{suffix}"
    return name, suffix


def _canonical(name: str) -> str:
    """``name`` with its registry made explicit as Docker does (``busybox`` -> ``docker.io/library/busybox``)."""
    first, slash, rest = name.partition("/")
    has_host = bool(slash) and ("." in first or ":" in first or first == "localhost")
    if not has_host:
        path = name if "/" in name else f"library/{name}"
        return f"{_DOCKER_HUB}/{path}"
    if first in _DOCKER_HUB_ALIASES:
        return f"{_DOCKER_HUB}/{rest}"
    return name


def apply_mirrors(image_ref: str, mirrors: Mapping[str, str]) -> str:
    """``image_ref`` with its registry (or registry/path prefix) replaced by a mirror, tag and digest kept.

    ``mirrors`` maps a prefix (``cgr.dev``, ``cgr.dev/chainguard``) to where its images are mirrored
    (``127.0.0.1:5000/mirror/cgr.dev``). Prefixes match whole path components, the longest first; a
    reference no prefix matches comes back unchanged.
    """
    name, suffix = split_reference(image_ref)
    for written in (name, _canonical(name)):
        for prefix in sorted(mirrors, key=len, reverse=True):
            key = prefix.strip().rstrip("/")
            if key and (written == key or written.startswith(f"{key}/")):
                return f"{mirrors[prefix].strip().rstrip('/')}{written[len(key):]}{suffix}"
    return image_ref


def staged_ko_config(text: str, mirrors: Mapping[str, str], where: str = ".ko.yaml") -> str:
    """A ``.ko.yaml`` (for ``KO_CONFIG_PATH``) whose base images come from ``mirrors``; all else kept.

    When the source names no default base, ko's own default is written out mirrored (if a mirror
    covers it), so that ko does not reach for it.
    """
    document = _load(text, where)
    parse_ko_config(text, where)  # the same checks as a build would make
    default_key = _key(document, "defaultBaseImage")
    if default_key and document.get(default_key):
        document[default_key] = apply_mirrors(str(document[default_key]), mirrors)
    else:
        mirrored = apply_mirrors(KO_DEFAULT_BASE, mirrors)
        if mirrored != KO_DEFAULT_BASE:
            document[default_key or "defaultBaseImage"] = mirrored
    overrides_key = _key(document, "baseImageOverrides")
    if overrides_key and isinstance(document.get(overrides_key), dict):
        document[overrides_key] = {
            path: apply_mirrors(str(base), mirrors) for path, base in document[overrides_key].items()
        }
    return str(yaml.safe_dump(document, sort_keys=False, default_flow_style=False))


def base_line(text: str, image: str) -> int:
    """The line (1-based) of a ``.ko.yaml`` text that names ``image`` (its defaultBaseImage or an
    override), or 0 when no line does (ko's own default base)."""
    if not image:
        return 0
    for number, line in enumerate(text.splitlines(), start=1):
        value = line.split("#", 1)[0] if not line.lstrip().startswith("#") else ""
        if image in value:
            return number
    return 0
