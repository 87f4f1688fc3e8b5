"""The FMA-shaped sample released with the project's default release.yaml, as FMA releases itself:
controllers by ko (an index of every platform of the base, /ko-app/<name>, no engine, reproducible),
Dockerfile images by BuildKit, the source's own chart at the tag, its busybox inspector listed.
The release checked is the run's shared one (tests/integration/shared.py: the CLI, signed)."""

from __future__ import annotations

import io
import re
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from devkit.fma_files import INSPECTOR_IMAGE, METRICS_PROXY_IMAGE, METRICS_PROXY_SWITCH
from devkit.registry import RegistryProcess
from flows.release import release
from tasks.oci.registry import RegistryAPI
from tasks.run.result import ReleaseResult
from tasks.summary import render_summary
from tests.integration.shared import Signed

pytestmark = pytest.mark.integration

KO_IMAGES = ("dual-pods-controller", "launcher-populator")
ELF_MACHINE = {"amd64": 62, "arm64": 183}  # e_machine: EM_X86_64, EM_AARCH64


def layer_file(api: RegistryAPI, repository: str, manifest: dict[str, Any], name: str) -> bytes | None:
    for layer in manifest["layers"]:
        with tarfile.open(fileobj=io.BytesIO(api.blob(repository, layer["digest"])), mode="r:*") as tar:
            for member in tar.getmembers():
                if member.name.lstrip("./") == name.lstrip("/") and member.isfile():
                    extracted = tar.extractfile(member)
                    return extracted.read() if extracted else None
    return None


def test_controllers_are_ko_indexes_of_every_base_platform_with_ko_app(
    signed: Signed, registry: RegistryProcess,
) -> None:
    """Each controller's tag is an index of linux/amd64 and linux/arm64; each platform runs /ko-app/<name>,
    an ELF for its architecture, with KO_DATA_PATH set."""
    reg, summary = signed.registry, signed.summary
    namespace = reg.split("/", 1)[1]
    images = {i["name"]: i for i in summary["images"]}
    with RegistryAPI(registry.host) as api:
        for name in KO_IMAGES:
            repo = f"{namespace}/{name}"
            digest, index = api.manifest(repo, "v0.6.4") or ("", {})
            assert digest == images[name]["digest"]
            platforms = {f"{m['platform']['os']}/{m['platform']['architecture']}": m["digest"]
                         for m in index["manifests"]}
            assert set(platforms) == {"linux/amd64", "linux/arm64"}
            assert {p["platform"] for p in images[name]["platforms"]} == set(platforms)
            for platform, manifest_digest in platforms.items():
                found = api.manifest_and_config(repo, manifest_digest)
                assert found is not None
                assert found.config["config"]["Entrypoint"] == [f"/ko-app/{name}"]
                assert any(e.startswith("KO_DATA_PATH=") for e in found.config["config"]["Env"])
                binary = layer_file(api, repo, found.manifest, f"ko-app/{name}")
                assert binary is not None and binary[:4] == b"\x7fELF"
                assert int.from_bytes(binary[18:20], "little") == ELF_MACHINE[platform.split("/")[1]]
                assert found.labels["org.opencontainers.image.version"] == "v0.6.4"


def test_the_arm64_controller_runs_under_qemu_and_the_release_created_no_container(
    signed: Signed,
) -> None:
    """No build of the release created a container (ko needs no engine; BuildKit runs steps itself); the
    arm64 binary, pulled and run, says arm64."""
    reg = signed.registry
    assert signed.created == []
    ref = f"{reg}/dual-pods-controller:v0.6.4"
    # The image stays in the engine: it is the run's shared signed release, which other tests pull and start at
    # the same moment (removing it here took the arm64 image from under the Kubernetes proof's container
    # create); the run removes every image of its registry when it ends.
    out = subprocess.run(["docker", "run", "--rm", "--platform", "linux/arm64", ref],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert "arm64" in out.stdout and "v0.6.4" in out.stdout


def test_the_chart_is_the_sources_at_the_tag_with_only_the_two_values_changed(
    signed: Signed, tmp_path: Path,
) -> None:
    """Templates byte-identical to the tag's (not HEAD's); values.yaml differs in imageRegistry and imageTag only;
    the busybox inspector is listed as external and unpinned, and so is the metrics proxy, with the switch that
    brings it in."""
    src, reg, summary = signed.src, signed.registry, signed.summary
    (chart,) = summary["charts"]
    assert (chart["name"], chart["version"]) == ("fma-controllers", "0.6.4")
    client = helm.RegistryClient(plain_http=True)
    try:
        client.pull(chart["ref"], version="0.6.4", destination=tmp_path, untar=True, untar_dir=tmp_path,
                    plain_http=True)
    finally:
        client.close()
    root = tmp_path / "fma-controllers"
    files = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    def at_tag(path: str) -> bytes:
        return subprocess.run(["git", "-C", str(src.path), "show", f"{src.tag}:charts/fma-controllers/{path}"],
                              capture_output=True, check=True).stdout

    templates = sorted(p for p in files if p.startswith("templates/"))
    assert templates and all(files[p] == at_tag(p) for p in templates)
    head = subprocess.run(["git", "-C", str(src.path), "diff", "--name-only", src.tag, "HEAD", "--", "charts"],
                          capture_output=True, text=True, check=True).stdout.split()
    assert head, "the sample's commit after the tag changes the chart"
    released_values = yaml.safe_load(files["values.yaml"])
    tagged_values = yaml.safe_load(at_tag("values.yaml"))
    assert released_values["global"].pop("imageRegistry") == reg
    assert released_values["global"].pop("imageTag") == "v0.6.4"
    tagged_values["global"].pop("imageRegistry")
    tagged_values["global"].pop("imageTag")
    assert released_values == tagged_values
    chart_yaml = yaml.safe_load(files["Chart.yaml"])
    assert (chart_yaml["version"], chart_yaml["appVersion"]) == ("0.6.4", "v0.6.4")
    assert summary["external_images"] == [
        {"chart": "fma-controllers", "image": INSPECTOR_IMAGE, "pinned": False, "switches": []},
        {"chart": "fma-controllers", "image": METRICS_PROXY_IMAGE, "pinned": False, "switches": [METRICS_PROXY_SWITCH]},
    ]


def test_the_same_tag_in_another_repository_gives_the_same_ko_digests_and_a_rerelease_builds_nothing(
    signed: Signed, registry: RegistryProcess,
    events: list[tuple[str, str, str]], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ko builds are reproducible (commit time as SOURCE_DATE_EPOCH): an unsigned release of the tag elsewhere has
    the same controller digests; releasing the published tag again, as it was released, is answered from the
    record."""
    src, reg, summary = signed.src, signed.registry, signed.summary
    other = release(tag=src.tag, source=str(src.path), registry=f"{registry.host}/fma-other",
                    retry_base_delay=0.1).summary()
    digests = {i["name"]: i["digest"] for i in summary["images"]}
    assert {i["name"]: i["digest"] for i in other["images"] if i["name"] in KO_IMAGES} == {
        name: digests[name] for name in KO_IMAGES}
    events.clear()
    for name, value in signed.env.items():  # the key and the record of the run that published it
        monkeypatch.setenv(name, value)
    again = release(tag=src.tag, source=str(src.path), registry=reg, retry_base_delay=0.1).summary()
    assert [state for _, state, _ in events if state == "building"] == []
    assert all(i["status"] == "already published" for i in again["images"])


def test_the_requesters_builder_stage_ran_natively_for_arm64(
    signed: Signed, registry: RegistryProcess,
) -> None:
    """Released through BuildKit, the arm64 requester's builder stage ran on the build machine (x86_64) for
    linux/arm64, and the image is arm64."""
    reg, summary = signed.registry, signed.summary
    namespace = reg.split("/", 1)[1]
    (requester,) = [i for i in summary["images"] if i["name"] == "requester"]
    arm = next(p for p in requester["platforms"] if p["platform"] == "linux/arm64")
    with RegistryAPI(registry.host) as api:
        found = api.manifest_and_config(f"{namespace}/requester", arm["digest"])
        assert found is not None and found.config["architecture"] == "arm64"
        assert layer_file(api, f"{namespace}/requester", found.manifest, "app/built-on") == b"x86_64\n"
        assert layer_file(api, f"{namespace}/requester", found.manifest, "app/target") == b"linux/arm64\n"


def _coverdata(ref: str, platform: str, coverdir: Path) -> subprocess.CompletedProcess[str]:
    """Run the released image for ``platform`` (arm64 under qemu) with GOCOVERDIR on a host directory."""
    coverdir.mkdir(mode=0o777)
    coverdir.chmod(0o777)  # whoever the image runs as may write there
    return subprocess.run(["docker", "run", "--rm", "--platform", platform, "-e", "GOCOVERDIR=/coverdata",
                           "-v", f"{coverdir}:/coverdata", ref], capture_output=True, text=True, timeout=300,
                          check=False)


def test_the_released_dual_pods_controller_writes_coverage_data_as_upstreams_and_the_populator_none(
    signed: Signed, tmp_path: Path,
) -> None:
    """With the default release.yaml, dual-pods-controller (cover, pkg/generated/ excluded) writes coverage data
    under GOCOVERDIR on linux/amd64 and on linux/arm64 under qemu, with no package of pkg/generated/ among the
    covered ones though it links one; launcher-populator (no cover) writes none."""
    reg = signed.registry
    refs = [f"{reg}/{name}:v0.6.4" for name in KO_IMAGES]  # left in the engine: see the test above
    for arch in ("amd64", "arm64"):
        coverdir = tmp_path / f"dual-pods-{arch}"
        out = _coverdata(refs[0], f"linux/{arch}", coverdir)
        assert out.returncode == 0, out.stderr
        assert f"platform=linux/{arch} coverdata=/coverdata" in out.stdout
        assert {p.name.split(".")[0] for p in coverdir.iterdir()} == {"covmeta", "covcounters"}
        listed = subprocess.run(["go", "tool", "covdata", "pkglist", "-i", str(coverdir)], capture_output=True,
                                text=True, timeout=120, check=True).stdout.split()
        module = "example.invalid/fma-sample"
        assert {f"{module}/cmd/dual-pods-controller", f"{module}/pkg/buildinfo"} <= set(listed)
        assert [p for p in listed if "/pkg/generated/" in p] == []
        populator = tmp_path / f"populator-{arch}"
        out = _coverdata(refs[1], f"linux/{arch}", populator)
        assert out.returncode == 0, out.stderr
        assert list(populator.iterdir()) == []


COSIGN_TAG = re.compile(r"^sha256-[0-9a-f]{64}\.(sig|att)$")
RELEASE_TAG = re.compile(r"^v\d+\.\d+\.\d+(-(alpha|beta|rc)\.\d+)?$")


def test_the_registry_lists_only_the_release_tag_and_cosigns_tags(signed: Signed, registry: RegistryProcess) -> None:
    """/v2/<repo>/tags/list of each image after the signed release: the release's tag and cosign's
    sha256-<digest>.sig / .att tags, nothing else (no per-platform tag of the requester, as upstream's buildx and ko
    push none); every platform manifest is there by digest and signed."""
    reg, summary = signed.registry, signed.summary
    namespace = reg.split("/", 1)[1]
    with RegistryAPI(registry.host) as api:
        for image in summary["images"]:
            tags = api.tags(f"{namespace}/{image['name']}")
            assert "v0.6.4" in tags
            others = [t for t in tags if not COSIGN_TAG.match(t) and not RELEASE_TAG.match(t)]
            assert others == [], f"{image['name']}: {others}"
            for platform in image["platforms"]:
                assert api.digest(f"{namespace}/{image['name']}", platform["digest"]) == platform["digest"]
                assert platform["digest"].replace(":", "-") + ".sig" in tags
    (requester,) = [i for i in summary["images"] if i["name"] == "requester"]
    assert [p["platform"] for p in requester["platforms"]] == ["linux/amd64", "linux/arm64"]


def image_rows(summary: dict[str, Any]) -> tuple[list[Any], list[str]]:
    """Each image's rows, status left out: the JSON's and the markdown's Images table."""
    rows = [(i["name"], i["ref"], i["digest"], [(p["platform"], p["ref"], p["digest"]) for p in i["platforms"]])
            for i in summary["images"]]
    text = render_summary(ReleaseResult.model_validate(summary))
    table = text.split("## Images", 1)[1].split("## Charts", 1)[0]
    return rows, [line for line in table.splitlines() if line.startswith("| ")]


def test_an_already_published_image_shows_the_same_rows_as_when_it_was_built(
    signed: Signed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, events: list[tuple[str, str, str]],
) -> None:
    """The shared release built every image; released again with no record (the run reads the registry), every
    image is kept, and the JSON and the markdown list the same rows: ko's and BuildKit's indexes with each real
    platform, never `all`."""
    src, reg = signed.src, signed.registry
    monkeypatch.setenv("FMA_STATE_DIR", str(tmp_path / "state"))  # no record of the release here
    again = release(tag=src.tag, source=str(src.path), registry=reg, retry_base_delay=0.1).summary()
    assert [(item, state) for item, state, _ in events
            if state in ("building", "pushing") and not item.startswith("chart ")] == []
    assert all(i["status"] == "already published" for i in again["images"])
    assert image_rows(again) == image_rows(signed.summary)
    platforms = {p["platform"] for i in again["images"] for p in i["platforms"]}
    assert platforms == {"linux/amd64", "linux/arm64"}
    (dpc,) = [line for line in image_rows(again)[1] if line.startswith("| dual-pods-controller |")]
    assert "| index of linux/amd64, linux/arm64 |" in dpc
