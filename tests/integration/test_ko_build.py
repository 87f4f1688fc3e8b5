"""Go mains built by the real ko into OCI layouts, and those layouts pushed to a real registry."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import docker
import pytest

from devkit.faultproxy import FaultProxy, Rule
from devkit.fma_sample import FmaBases, make_fma_source
from devkit.multiarch import busybox_index
from devkit.registry import RegistryProcess, free_port
from tasks.builders.ko import KoBuild, build_with_ko, compile_with_ko, download_modules
from tasks.core.errors import ImageBuildError, RegistryError
from tasks.core.sandbox import build_user
from tasks.oci.layout import IMAGE_TYPES, OciLayout, push_layout
from tasks.oci.registry import RegistryAPI
from tasks.run.settings import Settings

pytestmark = pytest.mark.integration

EPOCH = 1_700_000_000  # the "tagged commit's" time
ELF_MACHINE = {"amd64": 62, "arm64": 183}  # e_machine: EM_X86_64, EM_AARCH64
LABEL = "org.llm-d.fma-release.fingerprint"

GO_MOD = "module example.test/hello\n\ngo 1.22\n"
GREET = (
    'package greet\n\nimport "runtime"\n\n// Arch is the architecture the binary was built for.\n'
    "func Arch() string { return runtime.GOARCH }\n"
)
MAIN = (
    'package main\n\nimport (\n\t"fmt"\n\n\t"example.test/hello/internal/greet"\n)\n\n'
    "func main() { fmt.Println(greet.Arch()) }\n"
)


def write_module(root: Path, base: str) -> Path:
    """A Go module without external dependencies: cmd/hello prints GOARCH through a second package."""
    for path, text in {
        "go.mod": GO_MOD,
        "internal/greet/greet.go": GREET,
        "cmd/hello/main.go": MAIN,
        "cmd/broken/main.go": "package main\n\nfunc main() {\n\tfoo()\n}\n",
        "cmd/library/lib.go": "package library\n\n// X is not a command.\nfunc X() {}\n",
        ".ko.yaml": f"defaultBaseImage: {base}\n",
    }.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


class QuietLog:
    """A log that keeps what it was told (the build's progress lines)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, msg: str, *args: object) -> None:
        self.lines.append(msg % args)

    debug = info


@dataclass(frozen=True)
class Built:
    build: KoBuild
    layout: OciLayout
    ref: str
    digest: str
    base: str
    creates: list[dict[str, Any]]  # container create events the engine saw during the build


@pytest.fixture(scope="module")
def base(registry: RegistryProcess) -> str:
    """A 2-platform busybox base index (linux/amd64, linux/arm64) in the test registry."""
    return busybox_index(f"{registry.host}/kobase-{uuid.uuid4().hex[:6]}").ref


@pytest.fixture(scope="module")
def hello(
    tmp_path_factory: pytest.TempPathFactory, registry: RegistryProcess, base: str, engine: docker.APIClient,
) -> Built:
    """cmd/hello built for every platform of the base, with no Docker engine reachable, and pushed."""
    root = tmp_path_factory.mktemp("ko")
    build = KoBuild(
        name="hello", source=write_module(root / "src", base), main="./cmd/hello", platforms=None,
        labels={LABEL: "abc123"}, created_epoch=EPOCH, out=root / "out" / "hello",
    )
    started = int(time.time()) - 1
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")  # ko must not need an engine
        layout = build_with_ko(build, QuietLog(), user=build_user())  # as the build user, as a release does
    creates = list(engine.events(since=started, until=int(time.time()) + 1, decode=True,
                                 filters={"type": "container", "event": "create"}))
    ref = f"{registry.host}/t{uuid.uuid4().hex[:8]}/hello:v0.1.0"
    with RegistryAPI(registry.host) as api:
        digest = push_layout(layout, ref, api)
    return Built(build=build, layout=layout, ref=ref, digest=digest, base=base, creates=creates)


def _repo(ref: str) -> tuple[str, str]:
    repository, _, tag = ref.split("/", 1)[1].rpartition(":")
    return repository, tag


def _blob_digests(layout: OciLayout) -> set[str]:
    """Every config and layer digest the layout's platform images reference."""
    digests: set[str] = set()
    for _, manifest_digest in layout.platforms:
        manifest = json.loads((layout.path / "blobs" / "sha256" / manifest_digest.split(":")[1]).read_bytes())
        digests |= {manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])}
    return digests


def _files(api: RegistryAPI, repository: str, manifest: dict[str, Any]) -> dict[str, bytes]:
    """Every regular file of an image's layers, by path (later layers win)."""
    files: dict[str, bytes] = {}
    for layer in manifest["layers"]:
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(api.blob(repository, layer["digest"])))) as tar:
            for member in tar.getmembers():
                if member.isfile():
                    extracted = tar.extractfile(member)
                    assert extracted is not None
                    files["/" + member.name.lstrip("/")] = extracted.read()
    return files


def test_all_platforms_is_an_index_of_ko_images_per_architecture(hello: Built, registry: RegistryProcess) -> None:
    """The tag is an OCI index of linux/amd64 and linux/arm64; each holds /ko-app/hello built for its CPU."""
    repository, tag = _repo(hello.ref)
    with RegistryAPI(registry.host) as api:
        found = api.manifest_bytes(repository, tag)
        assert found is not None
        digest, media_type, body = found
        assert (digest, media_type) == (hello.digest, "application/vnd.oci.image.index.v1+json")
        index = json.loads(body)
        platforms = {f"{m['platform']['os']}/{m['platform']['architecture']}": m["digest"] for m in index["manifests"]}
        assert platforms == dict(hello.layout.platforms)
        assert set(platforms) == {"linux/amd64", "linux/arm64"}
        assert index["annotations"]["org.opencontainers.image.base.name"] == hello.base
        for platform, manifest_digest in platforms.items():
            arch = platform.split("/")[1]
            listed = api.manifest(repository, manifest_digest)
            assert listed is not None
            manifest = listed[1]
            config = json.loads(api.blob(repository, manifest["config"]["digest"]))
            assert config["architecture"] == arch
            assert config["config"]["Entrypoint"] == ["/ko-app/hello"]
            assert "KO_DATA_PATH=/var/run/ko" in config["config"]["Env"]
            assert config["config"]["Labels"][LABEL] == "abc123"
            assert config["created"] == "2023-11-14T22:13:20Z"  # SOURCE_DATE_EPOCH
            assert manifest["annotations"]["org.opencontainers.image.base.name"] == hello.base
            files = _files(api, repository, manifest)
            binary = files["/ko-app/hello"]
            assert binary[:4] == b"\x7fELF"
            assert int.from_bytes(binary[18:20], "little") == ELF_MACHINE[arch]
            assert "/bin/busybox" in files  # the base's layer is there, under ko's


def test_the_build_needs_no_engine_and_creates_no_container(hello: Built, registry: RegistryProcess) -> None:
    """ko built with DOCKER_HOST pointing nowhere, and the engine saw no container created from the base (other
    tests of the run share the registry and the engine, so only the base's own repository counts)."""
    base_repository = hello.base.rsplit(":", 1)[0]
    ours = [e for e in hello.creates
            if str(e.get("Actor", {}).get("Attributes", {}).get("image")).startswith(base_repository)]
    assert ours == []
    assert hello.layout.sboms and all(p.read_text().startswith("{") for p in hello.layout.sboms)
    assert {p.name for p in hello.layout.sboms} >= {"hello-linux-amd64.spdx.json", "hello-linux-arm64.spdx.json"}


def test_building_again_gives_the_same_digests(hello: Built, registry: RegistryProcess, tmp_path: Path) -> None:
    """A second build, pushed to another repository, has the same index and platform digests (reproducible)."""
    again = build_with_ko(replace(hello.build, out=tmp_path / "again"), QuietLog())
    ref = f"{registry.host}/t{uuid.uuid4().hex[:8]}/hello:v0.1.0"
    with RegistryAPI(registry.host) as api:
        assert push_layout(again, ref, api) == hello.digest
    assert again.platforms == hello.layout.platforms


def test_arm64_image_runs_under_qemu(hello: Built, engine: docker.APIClient) -> None:
    """The pushed image, run by the engine for linux/arm64 (qemu), prints arm64; for linux/amd64, amd64."""
    repository, tag = hello.ref.rsplit(":", 1)
    for arch in ("arm64", "amd64"):
        engine.pull(repository, tag, platform=f"linux/{arch}")
        container = engine.create_container(hello.ref, platform=f"linux/{arch}")
        try:
            engine.start(container)
            assert engine.wait(container, timeout=60)["StatusCode"] == 0
            assert engine.logs(container).decode().strip() == arch
        finally:
            engine.remove_container(container, force=True)


def test_one_platform_is_a_plain_image(hello: Built, tmp_path: Path) -> None:
    """Asked for linux/arm64 alone, ko writes one image manifest for it, not an index."""
    layout = build_with_ko(replace(hello.build, platforms=("linux/arm64",), out=tmp_path / "one"), QuietLog())
    assert layout.media_type in IMAGE_TYPES  # ko keeps the base's manifest type (this base: Docker's v2)
    assert layout.platforms == (("linux/arm64", layout.digest),)


def test_main_that_does_not_compile_fails_with_the_compiler_line(hello: Built, tmp_path: Path) -> None:
    """A compile error is one ImageBuildError line carrying the compiler's own first error line; the compiler's
    lines come with it for the console."""
    with pytest.raises(ImageBuildError) as caught:
        build_with_ko(replace(hello.build, name="broken", main="./cmd/broken", out=tmp_path / "b"), QuietLog())
    message = str(caught.value)
    assert caught.value.image == "broken"
    assert "cmd/broken/main.go:4:2: undefined: foo" in message and "\n" not in message
    assert caught.value.output == ("# example.test/hello/cmd/broken", "cmd/broken/main.go:4:2: undefined: foo")


def test_package_that_is_not_main_fails_saying_so(hello: Built, tmp_path: Path) -> None:
    """A library package is refused as not a main package."""
    with pytest.raises(ImageBuildError, match="is not a main package"):
        build_with_ko(replace(hello.build, main="./cmd/library", out=tmp_path / "l"), QuietLog())


def test_missing_base_fails_naming_it(hello: Built, registry: RegistryProcess, tmp_path: Path) -> None:
    """A .ko.yaml base that is not in its registry fails naming that base and the fix."""
    source = write_module(tmp_path / "src", missing := f"{registry.host}/nothing/here:1")
    with pytest.raises(ImageBuildError) as caught:
        build_with_ko(replace(hello.build, source=source, out=tmp_path / "m"), QuietLog())
    assert f"the base image {missing} (.ko.yaml line 1) is not in its registry" in str(caught.value)
    assert "defaultBaseImage" in str(caught.value)


def test_unreachable_base_registry_fails_naming_the_host(hello: Built, tmp_path: Path) -> None:
    """A base on a registry nobody listens on fails naming that host, the base at its .ko.yaml line, and
    mirrors: as the way to pull it from elsewhere."""
    host = f"127.0.0.1:{free_port()}"
    source = write_module(tmp_path / "src", f"{host}/base/busybox:1")
    with pytest.raises(ImageBuildError, match=f"cannot reach the registry {host} for the base image {host}/base/"
                                              r"busybox:1 \(\.ko\.yaml line 1\); .*mirrors: in the release config"):
        build_with_ko(replace(hello.build, source=source, out=tmp_path / "u"), QuietLog())


def test_an_unreachable_mirror_names_the_base_as_written_and_the_mirror(hello: Built, tmp_path: Path) -> None:
    """A base that mirrors: sends to a registry nobody listens on is named as .ko.yaml writes it, with the
    mirror and that entry of mirrors: to check."""
    host = f"127.0.0.1:{free_port()}"
    mirror = f"{host}/mirror/cgr.dev"
    source = write_module(tmp_path / "src", "cgr.dev/chainguard/static:latest")
    with pytest.raises(ImageBuildError) as caught:
        build_with_ko(replace(hello.build, source=source, mirrors={"cgr.dev": mirror}, out=tmp_path / "um"),
                      QuietLog())
    assert str(caught.value) == (
        f"image {hello.build.name}: cannot reach the registry {host} for the base image "
        f"cgr.dev/chainguard/static:latest (.ko.yaml line 1), from its mirror {mirror}/chainguard/static:latest "
        f"(mirrors: in the release config); check that entry of mirrors: and that {host} answers")


def test_mirrors_pull_a_cgr_base_from_the_test_registry(
    hello: Built, registry: RegistryProcess, tmp_path: Path,
) -> None:
    """A cgr.dev base pinned by digest is pulled from its mirror path; the source's .ko.yaml is untouched."""
    mirror = f"{registry.host}/m{uuid.uuid4().hex[:6]}/mirror/cgr.dev"
    pushed = busybox_index(mirror, name="chainguard/static", tag="latest")
    upstream = f"cgr.dev/chainguard/static@{pushed.digest}"
    source = write_module(tmp_path / "src", upstream)
    log = QuietLog()
    layout = build_with_ko(
        replace(hello.build, source=source, platforms=("linux/amd64",), mirrors={"cgr.dev": mirror},
                out=tmp_path / "mirrored"),
        log,
    )
    assert layout.platforms[0][0] == "linux/amd64"
    manifest = json.loads((layout.path / "blobs" / "sha256" / layout.digest.split(":")[1]).read_bytes())
    annotations = manifest["annotations"]
    assert annotations["org.opencontainers.image.base.name"] == f"{mirror}/chainguard/static@{pushed.digest}"
    assert (source / ".ko.yaml").read_text() == f"defaultBaseImage: {upstream}\n"
    assert any(f"Using base {mirror}/chainguard/static" in line for line in log.lines)


# -- the pusher ------------------------------------------------------------------------


def test_repush_uploads_no_blob(hello: Built, fault_proxy: FaultProxy, namespace: str) -> None:
    """Pushed twice, the second push asks (HEAD) and uploads nothing; the tag's digest is the layout's."""
    ref = f"{fault_proxy.host}/{namespace}/hello:v1"
    with RegistryAPI(fault_proxy.host) as api:
        assert push_layout(hello.layout, ref, api) == hello.layout.digest
        first = fault_proxy.count("/hello", "upload_start")
        assert first >= 3  # a config and a binary layer per platform at least
        assert push_layout(hello.layout, ref, api) == hello.layout.digest
    assert fault_proxy.count("/hello", "upload_start") == first
    assert fault_proxy.count("/hello", "blob_put") == first


@pytest.mark.parametrize(
    ("rule", "transient"),
    [
        (Rule(repo_suffix="/hello", op="blob_put", drop=True, times=1), True),
        (Rule(repo_suffix="/hello", op="upload_start", status=503, times=1), True),
        (Rule(repo_suffix="/hello", op="manifest_put", status=500, times=1), True),
        (Rule(repo_suffix="/hello", op="upload_start", status=403, times=1), False),
    ],
)
def test_push_faults_say_whether_to_retry_and_a_retry_resumes(
    hello: Built, fault_proxy: FaultProxy, namespace: str, rule: Rule, transient: bool,
) -> None:
    """5xx and dropped connections are transient, 403 is not; a second push finishes, sending only what is missing."""
    fault_proxy.add(rule)
    ref = f"{fault_proxy.host}/{namespace}/hello:v1"
    with RegistryAPI(fault_proxy.host) as api:
        with pytest.raises(RegistryError) as caught:
            push_layout(hello.layout, ref, api)
        assert caught.value.transient is transient
        assert "\n" not in str(caught.value)
        assert push_layout(hello.layout, ref, api) == hello.layout.digest
        assert api.digest(f"{namespace}/hello", "v1") == hello.layout.digest
    # over both attempts every blob went up once, plus at most the one whose upload was cut off
    blobs = _blob_digests(hello.layout)
    assert len(blobs) <= fault_proxy.count("/hello", "blob_put") <= len(blobs) + 1


# -- a base on an authenticated TLS registry ----------------------------------------------

USER, PASSWORD = "fma-bot", "ko-Passw0rd-SECRET-42"


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    """A Distribution registry with htpasswd auth and a self-signed certificate, like ghcr."""
    root = tmp_path_factory.mktemp("ko-auth-registry")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(root / "key.pem"), "-out", str(root / "cert.pem")],
        check=True, capture_output=True,
    )
    htpasswd = subprocess.run(["htpasswd", "-Bbn", USER, PASSWORD], check=True, capture_output=True, text=True)
    (root / "htpasswd").write_text(htpasswd.stdout)
    reg = RegistryProcess(root, free_port(), htpasswd=root / "htpasswd",
                          tls=(root / "cert.pem", root / "key.pem")).start()
    yield reg
    reg.stop()


def test_base_on_the_release_registry_is_pulled_with_its_credentials(
    hello: Built, auth_registry: RegistryProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the run's credentials and the base on the release registry, ko pulls it (TLS via the CA file);
    the password is on no command line, in no log line and in no error; elsewhere it is not sent."""
    monkeypatch.setenv("FMA_REGISTRY_USERNAME", USER)
    monkeypatch.setenv("FMA_REGISTRY_PASSWORD", PASSWORD)
    monkeypatch.setenv("FMA_REGISTRY_HOSTS", auth_registry.host)
    monkeypatch.setenv("FMA_REGISTRY_CA_FILE", str(auth_registry.root / "cert.pem"))
    base_ref = f"{auth_registry.host}/bases/hello:1"  # any 2-platform index serves as a base
    with RegistryAPI(auth_registry.host, Settings.from_env()) as api:
        push_layout(hello.layout, base_ref, api)
    source = write_module(tmp_path / "src", base_ref)
    build = replace(hello.build, source=source, platforms=("linux/amd64",), out=tmp_path / "authed")
    log = QuietLog()
    settings = Settings.from_env()  # the run's: credentials and CA file as the environment gives them
    layout = build_with_ko(build, log, credentials=settings, ca_file=settings.registry_ca_file, user=build_user())
    assert layout.platforms[0][0] == "linux/amd64"
    assert any(f"Using base {base_ref}" in line for line in log.lines)
    assert not any(PASSWORD in line for line in log.lines)

    # the same base when the credentials belong to another registry: ko asks anonymously and is refused
    monkeypatch.setenv("FMA_REGISTRY_HOSTS", "ghcr.io")
    elsewhere = Settings.from_env()
    with pytest.raises(ImageBuildError) as caught:
        build_with_ko(replace(build, out=tmp_path / "anonymous"), QuietLog(),
                      credentials=elsewhere, ca_file=elsewhere.registry_ca_file, user=build_user())
    message = str(caught.value)
    assert f"the registry {auth_registry.host} refused the base image {base_ref}" in message
    assert PASSWORD not in message and PASSWORD not in caught.value.__cause__.stderr  # type: ignore[union-attr]


def _layout_binary(layout: OciLayout, platform_digest: str) -> bytes:
    """/ko-app/hello as the layout holds it for one platform."""
    blobs = layout.path / "blobs" / "sha256"
    manifest = json.loads((blobs / platform_digest.split(":")[1]).read_bytes())
    for layer in manifest["layers"]:
        data = gzip.decompress((blobs / layer["digest"].split(":")[1]).read_bytes())
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for member in tar.getmembers():
                if member.name.lstrip("/") == "ko-app/hello":
                    extracted = tar.extractfile(member)
                    assert extracted is not None
                    return extracted.read()
    raise AssertionError("no /ko-app/hello in the layout")


def test_goflags_reach_the_compiler_as_fmas_coverage_build(hello: Built, tmp_path: Path) -> None:
    """GOFLAGS="-cover -coverpkg=..." (as FMA's Makefile builds its controllers) gives a coverage binary."""
    covered = build_with_ko(
        replace(hello.build, platforms=("linux/amd64",), goflags=("-cover", "-coverpkg=example.test/hello/..."),
                out=tmp_path / "cover"),
        QuietLog(),
    )
    plain = dict(hello.layout.platforms)["linux/amd64"]
    assert b"GOCOVERDIR" in _layout_binary(covered, covered.digest)
    assert b"GOCOVERDIR" not in _layout_binary(hello.layout, plain)


COVERED_MAIN = (
    'package main\n\nimport (\n\t"fmt"\n\n\t"example.test/hello/internal/greet"\n'
    '\t"example.test/hello/pkg/generated/fake"\n)\n\n'
    "func main() { fmt.Println(greet.Arch(), fake.Name()) }\n"
)

GENERATED = 'package fake\n\n// Name names it.\nfunc Name() string { return "f" }\n'


def test_cover_lists_the_modules_packages_as_the_build_user_and_leaves_the_excluded_out(
    hello: Built, tmp_path: Path,
) -> None:
    """cover: the packages of the module at build time (go list, as the build user), but pkg/generated/, go to
    -coverpkg; the binary writes coverage data under GOCOVERDIR for every listed package it links, none for
    pkg/generated/; the GOFLAGS come back for the provenance."""
    source = write_module(tmp_path / "src", hello.base)
    for path, text in {"cmd/hello/main.go": COVERED_MAIN, "pkg/generated/fake/fake.go": GENERATED}.items():
        (source / path).parent.mkdir(parents=True, exist_ok=True)
        (source / path).write_text(text)
    log = QuietLog()
    made = compile_with_ko(replace(hello.build, source=source, platforms=("linux/amd64",), cover=True,
                                   cover_exclude=("pkg/generated",), out=tmp_path / "covered"), log, user=build_user())
    listed = {"example.test/hello/cmd/broken", "example.test/hello/cmd/hello", "example.test/hello/cmd/library",
              "example.test/hello/internal/greet"}  # every package of the module but pkg/generated/fake
    assert made.goflags[0] == "-cover" and set(made.goflags[1].removeprefix("-coverpkg=").split(",")) == listed
    assert any("built for coverage of 4 package(s) of example.test/hello (pkg/generated left out)" in line
               for line in log.lines)
    binary = tmp_path / "hello"
    binary.write_bytes(_layout_binary(made.layout, made.layout.digest))
    binary.chmod(0o755)
    coverdir = tmp_path / "coverdata"
    coverdir.mkdir()
    out = subprocess.run([str(binary)], env={"GOCOVERDIR": str(coverdir)}, capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.split() == ["amd64", "f"]
    assert {p.name.split(".")[0] for p in coverdir.iterdir()} == {"covmeta", "covcounters"}
    packages = subprocess.run(["go", "tool", "covdata", "pkglist", "-i", str(coverdir)], capture_output=True,
                              text=True, timeout=120, check=True).stdout.split()
    assert set(packages) == {"example.test/hello/cmd/hello", "example.test/hello/internal/greet"}


def test_go_modules_download_as_the_build_user_finds_the_module(
    fma_bases: FmaBases, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The Go modules step copies go.mod below the build user's TMPDIR, not into it: go ignores a go.mod in
    the temp root ("no modules specified"), which made every cold release skip the download. The
    FMA-shaped sample needs no module, so the download succeeds with none and no network (GOPROXY=off)."""
    monkeypatch.setenv("GOPROXY", "off")
    src = make_fma_source(tmp_path / "fma", bases=fma_bases)
    log = QuietLog()
    assert download_modules(src.path, log, user=build_user()) == 0
    assert "Go modules: 0 in the cache" in log.lines
