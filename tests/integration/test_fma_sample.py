"""The FMA-shaped sample (devkit/fma_sample.py): its Go mains build for two platforms offline, its chart
lints and renders, its tag differs from HEAD, and its Dockerfiles build with dockerd's BuildKit from
bases in a plain-HTTP loopback registry (builder stage native, final stage arm64)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

import docker
import docker.errors
import helm_python as helm
import pytest
import yaml

from devkit.fma_files import AFTER_TAG_LABEL, DUAL_PODS_TEMPLATE, INSPECTOR_IMAGE, NOTE_GO
from devkit.fma_sample import (
    BASE_LABEL,
    BaseImage,
    FmaBases,
    FmaSample,
    main,
    make_fma_source,
)
from devkit.go_builder import go_builder_image
from devkit.registry import RegistryProcess
from tasks.helm.chart import rendered_images
from tasks.run.config import DEFAULT_CONFIG

pytestmark = pytest.mark.integration

DOCKER = "/usr/bin/docker"  # Debian's 20.10 CLI drives the engine's BuildKit; the 28.x client does not
ELF_MACHINES = {62: "x86_64", 183: "aarch64"}
DEFAULT_REGISTRY = "ghcr.io/llm-d-incubation/llm-d-fast-model-actuation"
_FAKE = "sha256:" + "ab" * 32


def fake_bases() -> FmaBases:
    """Bases that are never pulled: enough for what does not build images."""
    def base(name: str) -> BaseImage:
        return BaseImage(ref=f"registry.example.invalid/{name}:1", digest=_FAKE)
    return FmaBases(static=base("chainguard/static"), builder=base("builder"), runtime=base("nvidia/cuda"),
                    launcher=base("vllm/vllm-openai"))


@pytest.fixture
def bases(fma_bases: FmaBases) -> FmaBases:
    """The sample's bases (and the Go toolchain image), pushed once per run to the run's registry."""
    return fma_bases


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def at_tag(sample: FmaSample, target: Path) -> Path:
    """A clone of the sample checked out at its tag."""
    subprocess.run(["git", "-c", "advice.detachedHead=false", "clone", "--quiet", "--branch", sample.tag,
                    str(sample.path), str(target)], check=True)
    return target


def go(cwd: Path, *args: str, **env: str) -> str:
    goenv = {**os.environ, "GOPROXY": "off", "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local", "GOWORK": "off",
             "CGO_ENABLED": "0", **env}
    out = subprocess.run(["go", *args], cwd=cwd, env=goenv, capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout + out.stderr


def elf_machine(data: bytes) -> str:
    assert data[:4] == b"\x7fELF", "not an ELF file"
    return ELF_MACHINES.get(int.from_bytes(data[18:20], "little"), "other")


def buildkit(context: Path, dockerfile: str, tag: str, platform: str, *build_args: str) -> str:
    """Build with dockerd's BuildKit through Debian's CLI; return the plain progress output."""
    argv = [DOCKER, "build", "--platform", platform, "--progress", "plain", "-f", dockerfile, "-t", tag]
    for arg in build_args:
        argv += ["--build-arg", arg]
    out = subprocess.run([*argv, "."], cwd=context, env={**os.environ, "DOCKER_BUILDKIT": "1"},
                         capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout + out.stderr


def files_in(engine: docker.APIClient, image: str, path: str) -> dict[str, bytes]:
    """The files under ``path`` in ``image``, read from a created (never started) container."""
    container = engine.create_container(image, command=["none"])
    try:
        stream, _ = engine.get_archive(container["Id"], path)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            return {Path(m.name).name: tar.extractfile(m).read()  # type: ignore[union-attr]
                    for m in tar.getmembers() if m.isfile()}
    finally:
        engine.remove_container(container["Id"], force=True)


def render(chart: Path, values: dict[str, Any] | None = None) -> dict[str, str]:
    loaded = helm.Chart.load(chart)
    try:
        return loaded.render(values, name="fma", namespace="fma-test", is_install=True)
    finally:
        loaded.close()


def docs_of(manifests: dict[str, str]) -> list[dict[str, Any]]:
    return [doc for text in manifests.values() for doc in yaml.safe_load_all(text) if doc]


def deployment(docs: list[dict[str, Any]], component: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == "Deployment"
                and d["metadata"]["labels"]["app.kubernetes.io/component"] == component]
    return found


def registry_resolves(registry: RegistryProcess, repository: str) -> int:
    """How many times a containerd client (dockerd's BuildKit) asked the registry for a manifest of
    ``repository`` (HEAD of the tag to resolve it; GET by digest when the layers are not in the engine)."""
    log = (registry.root / "registry.log").read_text(errors="replace")
    return sum(1 for line in log.splitlines() if "containerd/" in line
               and (f'"HEAD /v2/{repository}/manifests/' in line or f'"GET /v2/{repository}/manifests/' in line))


# -- without an engine ------------------------------------------------------------------------------


def test_mains_build_for_amd64_and_arm64_offline_and_vet_is_clean(tmp_path: Path) -> None:
    """Every main builds with GOPROXY=off for linux/amd64 (runs, prints name, linked version and platform,
    with no GOCOVERDIR) and for linux/arm64 (aarch64 ELF); go vet and gofmt are clean."""
    tree = at_tag(make_fma_source(tmp_path / "s", bases=fake_bases()), tmp_path / "at-tag")
    version = "-X example.invalid/fma-sample/pkg/buildinfo.Version=v0.6.4"
    go(tree, "build", "-ldflags", version, "-o", str(tmp_path / "amd64") + "/", "./cmd/...", GOARCH="amd64")
    go(tree, "build", "-o", str(tmp_path / "arm64") + "/", "./cmd/...", GOARCH="arm64")
    assert go(tree, "vet", "./...") == ""
    assert subprocess.run(["gofmt", "-l", "."], cwd=tree, capture_output=True, text=True, check=True).stdout == ""
    names = ["dual-pods-controller", "launcher-populator", "requester"]
    env = {k: v for k, v in os.environ.items() if k != "GOCOVERDIR"}
    for name in names:
        out = subprocess.run([str(tmp_path / "amd64" / name)], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.splitlines()[0] == f"{name} version=v0.6.4 platform=linux/amd64 coverdata=none"
        assert elf_machine((tmp_path / "arm64" / name).read_bytes()) == "aarch64"
    out = subprocess.run([str(tmp_path / "amd64" / "dual-pods-controller"), "-v=5", "--namespace=ns",
                          "--sleeper-limit=3", "--debug-accelerator-memory=true"],
                         env={**env, "GOCOVERDIR": "/var/coverdata"}, capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == [
        "dual-pods-controller version=v0.6.4 platform=linux/amd64 coverdata=/var/coverdata",
        "namespace=ns sleeper-limit=3 debug-accelerator-memory=true v=5",
    ]


def test_chart_lints_and_renders_ko_commands_coverdata_and_the_third_party_inspector(tmp_path: Path) -> None:
    """helm lint finds no error; the render runs /ko-app/<name> for both controllers from
    <imageRegistry>/<name>:<imageTag>, gives the dual-pods controller GOCOVERDIR on a PVC, and the
    inspector runs the unpinned third-party busybox:1.38.0."""
    chart = make_fma_source(tmp_path / "s", bases=fake_bases()).path / "charts/fma-controllers"
    assert helm.lint(chart)["errors"] == []
    assert rendered_images(render(chart)) == {
        f"{DEFAULT_REGISTRY}/dual-pods-controller:latest", f"{DEFAULT_REGISTRY}/launcher-populator:latest",
        INSPECTOR_IMAGE,
    }
    docs = docs_of(render(chart, {"global": {"imageRegistry": "127.0.0.1:5000/fma", "imageTag": "v0.6.4"}}))
    (dpc,) = deployment(docs, "dual-pods-controller")["spec"]["template"]["spec"]["containers"]
    assert dpc["image"] == "127.0.0.1:5000/fma/dual-pods-controller:v0.6.4"
    assert dpc["command"][0] == "/ko-app/dual-pods-controller"
    assert "--namespace=fma-test" in dpc["command"]
    assert {"name": "GOCOVERDIR", "value": "/var/coverdata"} in dpc["env"]
    volumes = deployment(docs, "dual-pods-controller")["spec"]["template"]["spec"]["volumes"]
    claims = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    assert [v["persistentVolumeClaim"]["claimName"] for v in volumes] == sorted(claims)
    (lp,) = deployment(docs, "launcher-populator")["spec"]["template"]["spec"]["containers"]
    assert (lp["image"], lp["command"][0]) == ("127.0.0.1:5000/fma/launcher-populator:v0.6.4",
                                              "/ko-app/launcher-populator")
    (inspector,) = deployment(docs, "coverdata-inspector")["spec"]["template"]["spec"]["containers"]
    assert inspector["image"] == INSPECTOR_IMAGE
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["Deployment", "Deployment", "Deployment", "PersistentVolumeClaim", "Role", "RoleBinding",
                     "ServiceAccount"]


def test_tag_differs_from_head_in_the_chart_templates_and_a_go_file(tmp_path: Path) -> None:
    """HEAD is one commit past the annotated tag; it changes the dual-pods template (a label the tag's render
    lacks) and a Go file; .ko.yaml pins the static base by digest; release.yaml is the default config."""
    bases = fake_bases()
    sample = make_fma_source(tmp_path / "s", bases=bases)
    assert git(sample.path, "rev-parse", "HEAD") == sample.head_commit != sample.tag_commit
    assert git(sample.path, "rev-parse", "HEAD~1") == sample.tag_commit
    assert git(sample.path, "cat-file", "-t", sample.tag) == "tag"  # annotated
    assert git(sample.path, "diff", "--name-only", sample.tag, "HEAD").splitlines() == sorted(
        [DUAL_PODS_TEMPLATE, NOTE_GO])
    label = AFTER_TAG_LABEL.strip()
    assert label not in git(sample.path, "show", f"{sample.tag}:{DUAL_PODS_TEMPLATE}")
    assert label in (sample.path / DUAL_PODS_TEMPLATE).read_text()
    tree = at_tag(sample, tmp_path / "at-tag")
    labels = deployment(docs_of(render(tree / "charts/fma-controllers")), "dual-pods-controller")["metadata"]["labels"]
    assert "fma-sample.example.invalid/unreleased" not in labels
    ko = yaml.safe_load((tree / ".ko.yaml").read_text())
    assert ko["defaultBaseImage"] == f"registry.example.invalid/chainguard/static@{_FAKE}"
    assert ko["builds"][0]["main"] == "./cmd/dual-pods-controller"
    config = yaml.safe_load(sample.config.read_text())
    assert sample.config == DEFAULT_CONFIG
    assert [i["name"] for i in config["images"]] == ["dual-pods-controller", "launcher-populator", "launcher",
                                                      "requester"]
    assert config["charts"] == [{"path": "charts/*", "from": "source"}]


def test_mutate_changes_the_tagged_tree_and_a_bad_builder_is_refused(tmp_path: Path) -> None:
    """``mutate`` edits the tree before the tag; an unknown requester builder, or "go" without a Go base,
    is refused before anything is written."""
    def add_a_file(repo: Path) -> None:
        (repo / "EXTRA").write_text("x\n")

    sample = make_fma_source(tmp_path / "s", bases=fake_bases(), mutate=add_a_file)
    assert git(sample.path, "show", f"{sample.tag}:EXTRA") == "x"
    with pytest.raises(ValueError, match="one of busybox, go"):
        make_fma_source(tmp_path / "t", bases=fake_bases(), requester_builder="rust")
    with pytest.raises(ValueError, match="go_builder=True"):
        make_fma_source(tmp_path / "u", bases=fake_bases(), requester_builder="go")
    assert not (tmp_path / "t").exists() and not (tmp_path / "u").exists()


# -- with the engine and the registry ---------------------------------------------------------------


def test_bases_are_two_platform_indexes_told_apart_by_label(
    bases: FmaBases, registry: RegistryProcess, engine: docker.APIClient,
) -> None:
    """Each busybox base is a linux/amd64 + linux/arm64 index with a digest of its own; the Go toolchain
    image is one linux/amd64 image."""
    from tasks.oci.platforms import Platform, index_entries
    from tasks.oci.references import Reference
    from tasks.oci.registry import RegistryAPI

    digests = {bases.static.digest, bases.builder.digest, bases.runtime.digest, bases.launcher.digest}
    assert len(digests) == 4
    with RegistryAPI(registry.host) as api:
        for base in (bases.static, bases.builder, bases.runtime, bases.launcher):
            ref = Reference.parse(base.ref)
            found = api.manifest(ref.repository, ref.tag)
            assert found is not None and found[0] == base.digest
            assert [p for _, p in index_entries(found[1])] == [Platform("linux", "amd64"), Platform("linux", "arm64")]
    assert bases.go_builder is not None
    assert engine.inspect_image(bases.go_builder.ref)["Architecture"] == "amd64"


def test_requester_builds_with_buildkit_builder_stage_native_final_stage_arm64(
    bases: FmaBases, registry: RegistryProcess, engine: docker.APIClient, namespace: str, tmp_path: Path,
) -> None:
    """BuildKit pulls the bases from the plain-HTTP loopback registry (resolved there by digest: the engine
    holds no image under those tags), runs the builder stage as x86_64 and makes an arm64 image FROM the
    runtime base."""
    tree = at_tag(make_fma_source(tmp_path / "s", bases=bases), tmp_path / "at-tag")
    for base in (bases.builder, bases.runtime):  # else BuildKit would take the engine's image and never ask
        with pytest.raises(docker.errors.ImageNotFound):
            engine.inspect_image(base.ref)
    runtime_repo = bases.runtime.ref.split("/", 1)[1].rsplit(":", 1)[0]
    asked = registry_resolves(registry, runtime_repo)
    image = f"{registry.host}/{namespace}/requester:arm64"
    out = buildkit(tree, "dockerfiles/Dockerfile.requester", image, "linux/arm64")
    assert f"FROM {bases.builder.ref}@{bases.builder.digest}" in out
    assert f"FROM {bases.runtime.ref}@{bases.runtime.digest}" in out
    assert registry_resolves(registry, runtime_repo) > asked
    inspected = engine.inspect_image(image)
    assert (inspected["Os"], inspected["Architecture"]) == ("linux", "arm64")
    assert inspected["Config"]["Labels"][BASE_LABEL] == "runtime"
    app = files_in(engine, image, "/app")
    assert app["built-on"].decode().strip() == "x86_64"
    assert app["target"].decode().strip() == "linux/arm64"


def test_requester_with_a_go_builder_cross_compiles_an_aarch64_binary(
    bases: FmaBases, engine: docker.APIClient, registry: RegistryProcess, namespace: str, tmp_path: Path,
) -> None:
    """requester_builder="go": the builder stage (the Go toolchain image, x86_64) cross-compiles
    ./cmd/requester with GOOS/GOARCH; the arm64 image holds an aarch64 ELF with the version linked in."""
    tree = at_tag(make_fma_source(tmp_path / "s", bases=bases, requester_builder="go"), tmp_path / "at-tag")
    assert bases.go_builder is not None
    image = f"{registry.host}/{namespace}/requester:go-arm64"
    started = time.monotonic()
    buildkit(tree, "dockerfiles/Dockerfile.requester", image, "linux/arm64", "VERSION=v0.6.4")
    print(f"go requester build for linux/arm64: {time.monotonic() - started:.1f} s (BuildKit's cache may hold it)")
    assert engine.inspect_image(image)["Architecture"] == "arm64"
    app = files_in(engine, image, "/app")
    assert app["built-on"].decode().strip() == "x86_64"
    assert elf_machine(app["requester"]) == "aarch64"
    assert b"v0.6.4" in app["requester"]


def test_launcher_builds_with_buildkit_from_its_base_argument(
    bases: FmaBases, engine: docker.APIClient, registry: RegistryProcess, namespace: str, tmp_path: Path,
) -> None:
    """The launcher's Dockerfile (ARG BASE_IMAGE before FROM) builds for linux/amd64 FROM the launcher base,
    with the launcher's files, the RUN's record and an empty ENTRYPOINT."""
    tree = at_tag(make_fma_source(tmp_path / "s", bases=bases), tmp_path / "at-tag")
    image = f"{registry.host}/{namespace}/launcher:amd64"
    buildkit(tree, "dockerfiles/Dockerfile.launcher.benchmark", image, "linux/amd64")
    config = engine.inspect_image(image)["Config"]
    assert config["Labels"][BASE_LABEL] == "launcher"
    assert not config["Entrypoint"]
    app = files_in(engine, image, "/app")
    assert {"launcher.py", "gputranslator.py", "launcher_pod_notifier.py", "installed"} <= set(app)
    assert app["built-on"].decode().strip() == "x86_64"


def test_go_builder_image_cross_compiles_a_main_for_arm64(engine: docker.APIClient, tmp_path: Path) -> None:
    """The Go toolchain image, run on the engine, builds a tiny main for linux/arm64 (no network, no cgo)."""
    started = time.monotonic()
    image = go_builder_image(engine)
    made = time.monotonic() - started
    work = tmp_path / "tiny"
    work.mkdir()
    (work / "go.mod").write_text("module tiny\n\ngo 1.22\n")
    (work / "main.go").write_text('package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("tiny") }\n')
    started = time.monotonic()
    argv = [DOCKER, "run", "--rm", "--network", "none", "-v", f"{work}:/workspace", "-e", "GOARCH=arm64", image,
            "go", "build", "-o", "/workspace/tiny", "."]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    print(f"go builder image: {made:.1f} s to have it; arm64 cross-compile in it: {time.monotonic() - started:.1f} s")
    assert out.returncode == 0, out.stderr
    assert elf_machine((work / "tiny").read_bytes()) == "aarch64"
    shutil.rmtree(work, ignore_errors=True)


def test_main_pushes_bases_and_prints_shell_lines(
    registry: RegistryProcess, namespace: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """``python -m devkit.fma_sample DIR REGISTRY TAG`` prints key=value lines a shell can eval, for a source
    tagged TAG beside the default release config."""
    assert main([str(tmp_path / "demo"), f"{registry.host}/{namespace}", "v0.6.5"]) == 0
    facts = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines())
    assert set(facts) == {"source", "tag", "tag_commit", "head_commit", "config"}
    assert facts["tag"] == "v0.6.5"
    assert git(Path(facts["source"]), "rev-parse", "v0.6.5^{commit}") == facts["tag_commit"]
    assert Path(facts["config"]) == DEFAULT_CONFIG
    ko = yaml.safe_load((Path(facts["source"]) / ".ko.yaml").read_text())
    assert ko["defaultBaseImage"].startswith(f"{registry.host}/{namespace}/chainguard/static@sha256:")


def test_sample_chart_under_the_image_check_has_two_own_images_and_one_unpinned_external(tmp_path: Path) -> None:
    """Rendered with a release's values, the sample chart's controllers are the release's own, busybox is
    external and unpinned (one warning; refused under require-digest); left at :latest the chart is refused."""
    from tasks.core.errors import ChartError
    from tasks.helm.images import ExternalImage, check_chart_images

    chart = make_fma_source(tmp_path / "s", bases=fake_bases()).path / "charts/fma-controllers"
    registry = "127.0.0.1:5000/t1/fma"
    images = {name: f"{registry}/{name}:v0.6.4" for name in ("dual-pods-controller", "launcher-populator",
                                                             "launcher", "requester")}
    released = rendered_images(render(chart, {"global": {"imageRegistry": registry, "imageTag": "v0.6.4"}}))
    result = check_chart_images("fma-controllers", released, registry=registry, images=images)
    assert result.own == (images["dual-pods-controller"], images["launcher-populator"])
    assert result.external == (ExternalImage("fma-controllers", INSPECTOR_IMAGE, pinned=False),)
    assert len(result.warnings) == 1
    with pytest.raises(ChartError, match=r"not pinned by digest: busybox:1\.38\.0"):
        check_chart_images("fma-controllers", released, registry=registry, images=images, policy="require-digest")
    stale = rendered_images(render(chart, {"global": {"imageRegistry": registry}}))
    with pytest.raises(ChartError, match=r"dual-pods-controller:latest.*does not publish"):
        check_chart_images("fma-controllers", stale, registry=registry, images=images)
