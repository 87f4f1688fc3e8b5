"""A source's .ko.yaml read as ko reads it, bases chosen per main, and mirrored (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tasks.builders.ko import (
    BaseSource,
    KoBuild,
    KoSteps,
    cover_goflags,
    cover_packages,
    explain_ko_failure,
    ko_argv,
    ko_env,
    ko_output,
    source_base,
)
from tasks.builders.koconfig import (
    KO_DEFAULT_BASE,
    KoBuildEntry,
    KoConfig,
    apply_mirrors,
    base_for,
    base_line,
    import_path,
    module_path,
    parse_ko_config,
    split_reference,
    staged_ko_config,
)
from tasks.core.errors import OUTPUT_LINES, ConfigError

DIGEST = "sha256:" + "d" * 64

FULL = f"""\
defaultBaseImage: cgr.dev/chainguard/static@{DIGEST}
baseImageOverrides:
  github.com/Example/fma/cmd/Launcher-Populator: registry.k8s.io/base:1
builds:
- id: controller
  dir: .
  main: ./cmd/dual-pods-controller
  env: [CGO_ENABLED=0]
  flags: -tags=netgo
  ldflags:
  - -s -w
  - -X main.version={{{{.Env.VERSION}}}}
defaultPlatforms: [linux/amd64, linux/arm64]
"""


def test_parse_reads_every_setting_that_decides_a_build() -> None:
    """Base, overrides (keys lower-cased as ko matches them), builds and default platforms are read."""
    config = parse_ko_config(FULL)
    assert config.default_base == f"cgr.dev/chainguard/static@{DIGEST}"
    assert config.base_overrides == {"github.com/example/fma/cmd/launcher-populator": "registry.k8s.io/base:1"}
    assert config.builds == (
        KoBuildEntry(
            id="controller", dir=".", main="./cmd/dual-pods-controller", env=("CGO_ENABLED=0",),
            flags=("-tags=netgo",), ldflags=("-s -w", "-X main.version={{.Env.VERSION}}"),
        ),
    )
    assert config.default_platforms == ("linux/amd64", "linux/arm64")


def test_parse_matches_top_level_keys_whatever_their_case() -> None:
    """viper reads DefaultBaseImage as defaultBaseImage: so does the parser."""
    assert parse_ko_config("DefaultBaseImage: example.org/base:2\n").default_base == "example.org/base:2"


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_parse_empty_config_is_all_defaults(text: str) -> None:
    """An empty or absent .ko.yaml is ko's defaults: no base named, no overrides, no builds."""
    assert parse_ko_config(text) == KoConfig()


def test_build_entry_defaults_follow_ko() -> None:
    """A build entry without dir or main means the module root, as ko (and goreleaser) default them."""
    (entry,) = parse_ko_config("builds:\n- id: x\n").builds
    assert (entry.dir, entry.main, entry.flags) == (".", ".", ())


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("defaultBaseImage: [unclosed\n", "not valid YAML at line"),
        ("- a\n- b\n", "must be a mapping"),
        ("defaultBaseImage: {a: 1}\n", "defaultBaseImage must be"),
        ("baseImageOverrides: [a]\n", "baseImageOverrides must map"),
        ("builds: {id: x}\n", "builds must be a list"),
        ("builds: [3]\n", "builds entry #0 must be a mapping"),
        ("builds:\n- ldflags: {a: b}\n", "ldflags must be a string or a list"),
    ],
)
def test_malformed_config_is_one_line_config_error(text: str, says: str) -> None:
    """Malformed YAML or a wrongly shaped setting is a ConfigError: one line naming the file and the fix."""
    with pytest.raises(ConfigError) as caught:
        parse_ko_config(text, "src/.ko.yaml")
    message = str(caught.value)
    assert says in message and "src/.ko.yaml" in message and "\n" not in message


@pytest.mark.parametrize(
    ("main", "expected"),
    [
        ("github.com/example/fma/cmd/launcher-populator", "registry.k8s.io/base:1"),
        ("ko://github.com/example/fma/cmd/launcher-populator", "registry.k8s.io/base:1"),
        ("github.com/Example/fma/cmd/Launcher-Populator", "registry.k8s.io/base:1"),
        ("github.com/example/fma/cmd/dual-pods-controller", f"cgr.dev/chainguard/static@{DIGEST}"),
    ],
)
def test_base_for_prefers_the_override_of_the_import_path(main: str, expected: str) -> None:
    """An override for the import path wins (case-insensitively, ko:// or not); others get the default."""
    assert base_for(parse_ko_config(FULL), main) == expected


def test_base_for_without_a_default_is_kos_own() -> None:
    """With no base in .ko.yaml the base is ko v0.19.1's default, chainguard's static image."""
    assert base_for(KoConfig(), "example.test/x/cmd/y") == KO_DEFAULT_BASE == "cgr.dev/chainguard/static:latest"


@pytest.mark.parametrize(
    ("main", "expected"),
    [("./cmd/hello", "example.test/m/cmd/hello"), (".", "example.test/m"), ("cmd/x/", "example.test/m/cmd/x")],
)
def test_import_path_of_a_relative_main(main: str, expected: str) -> None:
    """A Makefile-style ./cmd/x main becomes the import path overrides are keyed by."""
    assert import_path(module_path('// c\nmodule "example.test/m" // why\n\ngo 1.22\n'), main) == expected


def test_module_path_missing_is_config_error() -> None:
    """A go.mod without a module line is a ConfigError."""
    with pytest.raises(ConfigError, match="no module line"):
        module_path("go 1.22\n")


MIRRORS = {"cgr.dev": "127.0.0.1:5000/mirror/cgr.dev"}


@pytest.mark.parametrize(
    ("ref", "mirrors", "expected"),
    [
        ("cgr.dev/chainguard/static:latest", MIRRORS, "127.0.0.1:5000/mirror/cgr.dev/chainguard/static:latest"),
        (f"cgr.dev/chainguard/static@{DIGEST}", MIRRORS, f"127.0.0.1:5000/mirror/cgr.dev/chainguard/static@{DIGEST}"),
        (f"cgr.dev/chainguard/static:1@{DIGEST}", MIRRORS,
         f"127.0.0.1:5000/mirror/cgr.dev/chainguard/static:1@{DIGEST}"),
        ("cgr.dev/chainguard/static", MIRRORS, "127.0.0.1:5000/mirror/cgr.dev/chainguard/static"),
        # a registry with a port, mirrored; its port is not mistaken for a tag
        ("10.0.0.5:5000/base/go:1.22", {"10.0.0.5:5000": "mirror.test/m"}, "mirror.test/m/base/go:1.22"),
        ("10.0.0.5:5000/base/go", {"10.0.0.5:5000": "mirror.test/m"}, "mirror.test/m/base/go"),
        # no prefix matches: unchanged, and a prefix matches whole components only
        ("ghcr.io/x/y:1", MIRRORS, "ghcr.io/x/y:1"),
        ("cgr.devious/x:1", MIRRORS, "cgr.devious/x:1"),
        ("cgr.dev/chainguard/static:1", {}, "cgr.dev/chainguard/static:1"),
        # the longest prefix wins; a trailing slash on either side is tolerated
        ("cgr.dev/chainguard/static:1", {"cgr.dev/": "a.test/m/", "cgr.dev/chainguard": "b.test/cg"},
         "b.test/cg/static:1"),
        # Docker Hub's short names match docker.io
        ("busybox:1.36", {"docker.io": "127.0.0.1:5000/hub"}, "127.0.0.1:5000/hub/library/busybox:1.36"),
        ("index.docker.io/library/busybox", {"docker.io": "m.test/hub"}, "m.test/hub/library/busybox"),
    ],
)
def test_apply_mirrors(ref: str, mirrors: dict[str, str], expected: str) -> None:
    """The registry part is rewritten to the mirror; repository path, tag and digest are kept."""
    assert apply_mirrors(ref, mirrors) == expected


@pytest.mark.parametrize(
    ("ref", "parts"),
    [
        ("a.test:5000/x/y:1", ("a.test:5000/x/y", ":1")),
        (f"a.test/y@{DIGEST}", ("a.test/y", f"@{DIGEST}")),
        ("a.test:5000/y", ("a.test:5000/y", "")),
    ],
)
def test_split_reference(ref: str, parts: tuple[str, str]) -> None:
    """A reference splits into name and tag/digest suffix, a port staying with the name."""
    assert split_reference(ref) == parts


def test_staged_config_mirrors_bases_and_keeps_builds() -> None:
    """The staged copy names mirrored bases and keeps every other setting as the source has it."""
    staged = yaml.safe_load(staged_ko_config(FULL, {**MIRRORS, "registry.k8s.io": "127.0.0.1:5000/mirror/k8s"}))
    original = yaml.safe_load(FULL)
    assert staged["defaultBaseImage"] == f"127.0.0.1:5000/mirror/cgr.dev/chainguard/static@{DIGEST}"
    assert staged["baseImageOverrides"] == {
        "github.com/Example/fma/cmd/Launcher-Populator": "127.0.0.1:5000/mirror/k8s/base:1"
    }
    assert staged["builds"] == original["builds"]
    assert staged["defaultPlatforms"] == original["defaultPlatforms"]
    assert parse_ko_config(staged_ko_config(FULL, MIRRORS)).builds == parse_ko_config(FULL).builds


def test_staged_config_writes_kos_default_base_mirrored() -> None:
    """With no base in the source, ko's default is written out mirrored so ko never reaches cgr.dev."""
    staged = yaml.safe_load(staged_ko_config("builds:\n- main: ./cmd/x\n", MIRRORS))
    assert staged["defaultBaseImage"] == "127.0.0.1:5000/mirror/cgr.dev/chainguard/static:latest"
    assert yaml.safe_load(staged_ko_config("", {"ghcr.io": "m.test"})) == {}


def test_staged_config_of_malformed_yaml_is_config_error() -> None:
    """A malformed .ko.yaml cannot be staged either."""
    with pytest.raises(ConfigError):
        staged_ko_config("builds: [", MIRRORS)


# -- the ko command and its environment (pure) ----------------------------------------


def _build(**kwargs: object) -> KoBuild:
    fields: dict[str, object] = {"name": "hello", "source": Path("/src"), "main": "./cmd/hello",
                                 "out": Path("/out/hello")}
    fields.update(kwargs)
    return KoBuild(**fields)  # type: ignore[arg-type]  # test helper: fields as keywords


def test_ko_argv_builds_without_pushing_for_all_platforms() -> None:
    """No push, a layout, every platform of the base when none are named, SBOMs beside the layout."""
    argv = ko_argv(_build(), "/bin/ko")
    assert argv[:3] == ["/bin/ko", "build", "./cmd/hello"]
    assert {"--push=false", "--oci-layout-path=/out/hello", "--platform=all", "--base-import-paths",
            "--sbom=spdx", "--sbom-dir=/out/hello.sbom"} <= set(argv)


def test_ko_argv_names_platforms_and_quotes_labels() -> None:
    """Named platforms are comma-joined; a label holding a comma is CSV-quoted (pflag splits on commas)."""
    argv = ko_argv(_build(platforms=("linux/amd64", "linux/arm64"), labels={"b": "x,y", "a": "1"}, sbom=False),
                   "/bin/ko")
    assert "--platform=linux/amd64,linux/arm64" in argv and "--sbom=none" in argv
    labels = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--image-label"]
    assert labels == ["a=1", '"b=x,y"']


def test_ko_env_drops_ko_settings_goflags_and_secrets() -> None:
    """KO_* (viper would read them as settings), GOFLAGS and secret-named variables do not reach ko."""
    inherited = {"PATH": "/usr/bin", "HOME": "/root", "KO_DEFAULTBASEIMAGE": "evil.test/x", "GOFLAGS": "-race",
                 "FMA_REGISTRY_PASSWORD": "s3cret", "GITHUB_TOKEN": "t", "KOCACHE": "/cache", "GOPROXY": "p"}
    env = ko_env(_build(goflags=("-cover", "-coverpkg=a,b"), created_epoch=1700000000), inherited, "/opt/go/bin/go")
    assert env["PATH"] == "/opt/go/bin:/usr/bin" and env["KO_GO_PATH"] == "/opt/go/bin/go"
    assert env["GOFLAGS"] == "-cover -coverpkg=a,b"
    assert env["SOURCE_DATE_EPOCH"] == env["KO_DATA_DATE_EPOCH"] == "1700000000"
    assert env["KOCACHE"] == "/cache" and env["GOPROXY"] == "p" and env["HOME"] == "/root"
    assert not {"KO_DEFAULTBASEIMAGE", "FMA_REGISTRY_PASSWORD", "GITHUB_TOKEN"} & set(env)
    assert "GOFLAGS" not in ko_env(_build(), inherited, "/opt/go/bin/go")


def test_ko_env_as_the_build_user_has_no_ko_cache() -> None:
    """As the build user, Go's caches are the user's (shared, safe); no KOCACHE, not even the operator's shared
    one: ko then writes each binary under the build's own TMPDIR."""
    env = ko_env(_build(), {"PATH": "/usr/bin", "KOCACHE": "/shared"}, "/go/bin/go", home=Path("/home/b"),
                 scratch=Path("/home/b/jobs/ko-1"))
    assert env["GOCACHE"] == "/home/b/.cache/go-build" and env["TMPDIR"] == "/home/b/jobs/ko-1"
    assert "KOCACHE" not in env


def test_ko_env_trusts_a_registry_ca_beside_the_system_roots() -> None:
    """A CA directory goes first on SSL_CERT_DIR, the inherited (or default) directories after it."""
    env = ko_env(_build(), {"SSL_CERT_DIR": "/etc/ssl/certs"}, "/go/bin/go", ca_dir=Path("/tmp/ca"))
    assert env["SSL_CERT_DIR"] == "/tmp/ca:/etc/ssl/certs"
    assert ko_env(_build(), {}, "/go/bin/go", ca_dir=Path("/tmp/ca"))["SSL_CERT_DIR"] == "/tmp/ca:/etc/ssl/certs"
    assert "SSL_CERT_DIR" not in ko_env(_build(), {}, "/go/bin/go")


@pytest.mark.parametrize(
    ("stderr", "says"),
    [
        (
            'Error: failed to publish images: error building "ko://m/cmd/hello": build: go build: exit status 1: '
            "# m/cmd/hello\ncmd/hello/main.go:5:2: undefined: foo\ncmd/hello/main.go:6:2: undefined: bar\n",
            "./cmd/hello does not compile: cmd/hello/main.go:5:2: undefined: foo; fix the source",
        ),
        ('Error: failed to publish images: importpath "ko://m/cmd/x" is not supported: importpath is not '
         "`package main`\n", "is not a main package"),
        ('Error: failed to publish images: error building "ko://m/cmd/hello": fetching base image: pulling '
         "r.test/base:1: GET http://r.test/v2/base/manifests/1: MANIFEST_UNKNOWN: manifest unknown\n",
         "the base image r.test/base:1 (.ko.yaml) is not in its registry"),
        ('Error: failed to publish images: error building "ko://m": fetching base image: pulling r.test/base:1: '
         'Get "https://r.test/v2/": dial tcp 10.1.1.1:443: connect: connection refused\n',
         "cannot reach the registry r.test for the base image r.test/base:1"),
        ('Error: failed to publish images: error building "ko://m": fetching base image: pulling r.test/base:1: '
         'Get "https://r.test/v2/": tls: failed to verify certificate: x509: certificate signed by unknown '
         "authority\n", "TLS verification of the registry r.test failed"),
        ('Error: failed to publish images: error building "ko://m": fetching base image: pulling r.test/base:1: '
         "GET https://r.test/token: UNAUTHORIZED: authentication required\n", "the registry r.test refused"),
        ('Error: failed to publish images: qualifying local import : err: go command required, not found: exec: '
         '"go": executable file not found in $PATH: stderr:\n', "Go is not installed"),
        ("Error: failed to publish images: error building: no matching platforms in base image index\n",
         "has none of the platforms"),
        ("2026/12/02 06:53:19 Using base x\nError: something new: went wrong\n", "ko failed: something new"),
    ],
)
def test_explain_ko_failure(stderr: str, says: str) -> None:
    """Each way ko fails becomes one line that names the image, the cause and the fix."""
    message = explain_ko_failure(stderr, _build(), "r.test/base:1")
    assert says in message and message.startswith("image hello: ") and "\n" not in message


def test_ko_build_survives_pickling() -> None:
    """A KoBuild can travel to another worker (Dask, a process pool) and arrive equal."""
    import pickle

    build = _build(platforms=("linux/arm64",), labels={"a": "b"}, mirrors={"cgr.dev": "m.test/cgr"})
    assert pickle.loads(pickle.dumps(build)) == build  # noqa: S301 - our own bytes, just made


# -- coverage builds: the packages -coverpkg names (pure) ---------------------------------------

MODULE = "github.com/example/fma"
LISTED = [
    "go: downloading k8s.io/api v0.34.10",  # go's own messages are merged into the output
    MODULE,
    f"{MODULE}/cmd/dual-pods-controller",
    f"{MODULE}/pkg/api",
    f"{MODULE}/pkg/generated/clientset/versioned",
    f"{MODULE}/pkg/generated/listers/fma/v1alpha1",
    f"{MODULE}/pkg/generatedextra",  # a sibling whose name only starts like an excluded directory
    f"{MODULE}/test/e2e",
    "example.invalid/other/pkg",
]


@pytest.mark.parametrize(
    ("exclude", "left_out"),
    [
        ((), set()),
        (("pkg/generated",), {f"{MODULE}/pkg/generated/clientset/versioned",
                              f"{MODULE}/pkg/generated/listers/fma/v1alpha1"}),
        (("pkg/generated", "test"), {f"{MODULE}/pkg/generated/clientset/versioned",
                                     f"{MODULE}/pkg/generated/listers/fma/v1alpha1", f"{MODULE}/test/e2e"}),
        (("pkg/api",), {f"{MODULE}/pkg/api"}),
    ],
)
def test_cover_packages_are_the_modules_but_the_excluded_directories(
    exclude: tuple[str, ...], left_out: set[str],
) -> None:
    """Every package of the module go list printed, in its order, but those in an excluded directory or
    below it (not a sibling that merely starts with its name); go's messages and other modules are no package."""
    module_packages = [line for line in LISTED if line == MODULE or line.startswith(f"{MODULE}/")]
    assert cover_packages(MODULE, LISTED, exclude) == tuple(p for p in module_packages if p not in left_out)


def test_cover_goflags_are_upstreams() -> None:
    """-cover -coverpkg=<the packages, comma-joined>, as FMA's Makefile passes them in GOFLAGS."""
    flags = cover_goflags((f"{MODULE}/cmd/x", f"{MODULE}/pkg/api"))
    assert flags == ("-cover", f"-coverpkg={MODULE}/cmd/x,{MODULE}/pkg/api")
    env = ko_env(_build(goflags=(*flags, "-tags=x")), {"PATH": "/usr/bin"}, "/go/bin/go")
    assert env["GOFLAGS"] == f"-cover -coverpkg={MODULE}/cmd/x,{MODULE}/pkg/api -tags=x"


@pytest.mark.parametrize(
    ("ko_yaml", "mirrors", "written", "where", "mirror"),
    [
        ("defaultBaseImage: cgr.dev/chainguard/static@sha256:" + "a" * 64 + "\n", {"cgr.dev": "m.test/cgr"},
         "cgr.dev/chainguard/static@sha256:" + "a" * 64, ".ko.yaml", "m.test/cgr/chainguard/static@sha256:" + "a" * 64),
        ("defaultBaseImage: r.test/static:1\n", {}, "r.test/static:1", ".ko.yaml", ""),
        ("", {}, "cgr.dev/chainguard/static:latest", "ko's default base", ""),
    ],
)
def test_a_ko_base_is_known_as_ko_yaml_writes_it_and_as_pulled(
    tmp_path: Path, ko_yaml: str, mirrors: dict[str, str], written: str, where: str, mirror: str,
) -> None:
    """The base of a main: as .ko.yaml names it (or ko's default), and the mirror reference ko pulls instead."""
    (tmp_path / "go.mod").write_text("module example.test/m\n\ngo 1.22\n")
    if ko_yaml:
        (tmp_path / ".ko.yaml").write_text(ko_yaml)
    base = source_base(tmp_path, "./cmd/x", mirrors)
    assert (base.written, base.where, base.mirror) == (written, where, mirror)
    assert base.image == (mirror or written)


UNREACHABLE = ('Error: failed to publish images: error building "ko://m": fetching base image: pulling {base}: '
               'Get "https://{host}/v2/": dial tcp {host}: connect: connection refused\n')


def test_an_unreachable_base_is_named_as_ko_yaml_writes_it_and_mirrors_is_the_fix() -> None:
    """The base as .ko.yaml writes it and its line come first; without a mirror the fix is mirrors:, with one
    the message names the mirror and that entry of mirrors:."""
    written = f"cgr.dev/chainguard/static@{DIGEST}"
    source = BaseSource(written=written, where=".ko.yaml line 1", pulled=written)
    plain = explain_ko_failure(UNREACHABLE.format(base=written, host="cgr.dev"), _build(), written, source)
    assert plain.startswith(f"image hello: cannot reach the registry cgr.dev for the base image {written} "
                            "(.ko.yaml line 1); ")
    assert "mirrors: in the release config (mirrors: {cgr.dev: <registry>/<path>})" in plain
    mirror = f"127.0.0.1:9/mirror/chainguard/static@{DIGEST}"
    mirrored = explain_ko_failure(UNREACHABLE.format(base=mirror, host="127.0.0.1:9"), _build(), mirror,
                                  BaseSource(written=written, where=".ko.yaml line 1", pulled=mirror))
    assert mirrored == (f"image hello: cannot reach the registry 127.0.0.1:9 for the base image {written} (.ko.yaml "
                        f"line 1), from its mirror {mirror} (mirrors: in the release config); check that entry of "
                        "mirrors: and that 127.0.0.1:9 answers")


def test_base_line_is_where_ko_yaml_names_the_base() -> None:
    """The line of defaultBaseImage or of an override; none for ko's default or a base only in a comment."""
    assert base_line(FULL, f"cgr.dev/chainguard/static@{DIGEST}") == 1
    assert base_line(FULL, "registry.k8s.io/base:1") == 3
    assert base_line(FULL, KO_DEFAULT_BASE) == 0
    assert base_line("# was registry.k8s.io/base:1\n", "registry.k8s.io/base:1") == 0
    assert base_line(FULL, "") == 0


COMPILE_ERROR = """\
2026/12/06 04:48:48 Using base r.test/static:1@sha256:4bdb for example.invalid/k/cmd/x
2026/12/06 04:48:48 Building example.invalid/k/cmd/x for linux/arm64
Error: failed to publish images: error building "ko://example.invalid/k/cmd/x": build: go build: exit status 1: \
# example.invalid/k/cmd/x
cmd/x/main.go:6:14: cannot use "distinct" (untyped string constant) as int value in variable declaration
cmd/x/main.go:7:17: undefined: undefinedThing
"""


def test_a_compile_error_shows_the_compilers_lines() -> None:
    """The console gets the package line and the compiler's lines, first ones first, bounded."""
    assert ko_output(COMPILE_ERROR) == (
        "# example.invalid/k/cmd/x",
        'cmd/x/main.go:6:14: cannot use "distinct" (untyped string constant) as int value in variable declaration',
        "cmd/x/main.go:7:17: undefined: undefinedThing",
    )
    many = "# m/cmd/x\n" + "".join(f"cmd/x/main.go:{n}:2: undefined: v{n}\n" for n in range(1, 12))
    shown = ko_output(many)
    assert len(shown) == OUTPUT_LINES and shown[1] == "cmd/x/main.go:1:2: undefined: v1"


def test_other_ko_failures_show_ko_s_error_on() -> None:
    """Not a compile error: ko's lines from its Error: line on, without the time stamps."""
    stderr = "2026/12/06 04:48:31 cache.get failed\nError: failed to publish images: boom\nmore detail\n"
    assert ko_output(stderr) == ("Error: failed to publish images: boom", "more detail")
    assert ko_output("") == ()


def test_ko_steps_follow_the_base_and_each_platform() -> None:
    """ko's lines become steps: the base, the platforms compiling, each platform done by its SBOM, the layout."""
    steps = KoSteps()
    said = [steps.read(line) for line in (
        "Using base r.test/static:1@sha256:4bdb for example.invalid/k/cmd/x",
        "current folder is not a git repository. Git info will not be available",
        "Building example.invalid/k/cmd/x for linux/arm64",
        "Building example.invalid/k/cmd/x for linux/amd64",
        "Writing SBOM to /j/out/x-1.sbom/x-linux-arm64.spdx.json",
        "Writing SBOM to /j/out/x-1.sbom/x-linux-amd64.spdx.json",
    )]
    assert said == [
        "fetching the base r.test/static:1@sha256:4bdb", "", "compiling for linux/arm64",
        "compiling for linux/arm64, linux/amd64", "compiling for linux/amd64 (linux/arm64 done)",
        "writing the image layout",
    ]
