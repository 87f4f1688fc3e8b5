"""fma-release promote: the run's shared signed release of the FMA sample (tests/integration/shared.py)
copied by the real CLI to a second Distribution registry, and to another path of the same registry, each
behind a fault-injecting proxy that counts what reaches it; checked with the real cosign, `fma-release
verify`, Helm's SDK and the registry API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest

from devkit.faultproxy import FaultProxy, Rule
from devkit.registry import RegistryProcess, free_port
from tasks.core import tools
from tasks.helm.chart import rendered_images
from tasks.oci.registry import RegistryAPI
from tests.integration.shared import PASSWORD, Signed, fma_release, key_pair

pytestmark = pytest.mark.integration

UPLOADS = ("upload_start", "upload_patch", "blob_put")  # what sends a blob (a mount is an upload_start alone)
WRITES = ("manifest_put", *UPLOADS)


def cosign(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tools.tool("cosign"), *args], capture_output=True, text=True, timeout=300, check=False)


def promote(signed: Signed, to: str, *extra: str, source: str = "", env: dict[str, str] | None = None,
            summary: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The real CLI: ``fma-release promote`` of the shared release (from ``source``, default its own registry)."""
    args = ["promote", signed.src.tag, "--from", source or signed.registry, "--to", to, "--retry-delay", "0.1",
            *extra]
    if summary is not None:
        args += ["--summary-json", str(summary)]
    return fma_release(*args, env=signed.env if env is None else env)


def writes(proxy: FaultProxy, path: str, ops: tuple[str, ...] = WRITES) -> int:
    """Requests of ``ops`` that reached the proxy for repositories under ``path``."""
    return sum(n for (repo, op), (n, _) in proxy.snapshot().items() if op in ops and repo.startswith(path))


def verify_args(summary: dict[str, Any], pub: Path) -> list[str]:
    return [a if a != "cosign.pub" else str(pub) for a in summary["verify_command"].split()[2:]]


@dataclass
class Promotion:
    """One promotion of the shared release, as the CLI made it, and where it went."""

    signed: Signed
    to: str  # the destination registry path (through the proxy)
    source: str  # the source as the promotion read it
    proxy: FaultProxy
    run: subprocess.CompletedProcess[str]
    summary: dict[str, Any]
    counts: dict[tuple[str, str], tuple[int, int]]  # (requests, body bytes) that reached the proxy meanwhile

    @property
    def path(self) -> str:
        return self.to.split("/", 1)[1]


@pytest.fixture(scope="module")
def second_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    """A Distribution registry of this module's own: the other registry releases are promoted to."""
    reg = RegistryProcess(tmp_path_factory.mktemp("second-registry"), free_port()).start()
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def across(fma_signed_release: Signed, second_registry: RegistryProcess,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Promotion]:
    """The shared release promoted to the second registry (behind a proxy that counts what it receives)."""
    from tests.integration.shared import release_lock

    proxy = FaultProxy("127.0.0.1", second_registry.port).start()
    to = f"{proxy.host}/promoted/fma"
    out = tmp_path_factory.mktemp("across") / "summary.json"
    with release_lock():
        done = promote(fma_signed_release, to, summary=out)
        assert done.returncode == 0, done.stderr[-3000:]
        yield Promotion(fma_signed_release, to, fma_signed_release.registry, proxy, done,
                        json.loads(out.read_text()), proxy.snapshot())
    proxy.stop()


@pytest.fixture(scope="module")
def within(fma_signed_release: Signed, registry: RegistryProcess,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Promotion]:
    """The shared release promoted to another path of its own registry, both read and written through one proxy
    (one registry host, so blobs may be mounted)."""
    from tests.integration.shared import release_lock

    proxy = FaultProxy("127.0.0.1", registry.port).start()
    source = f"{proxy.host}/{fma_signed_release.registry.split('/', 1)[1]}"
    to = f"{proxy.host}/t{uuid.uuid4().hex[:10]}/fma"
    out = tmp_path_factory.mktemp("within") / "summary.json"
    with release_lock():
        done = promote(fma_signed_release, to, source=source, summary=out)
        assert done.returncode == 0, done.stderr[-3000:]
        yield Promotion(fma_signed_release, to, source, proxy, done, json.loads(out.read_text()),
                        proxy.snapshot())
    proxy.stop()


def test_every_image_digest_is_the_sources(across: Promotion) -> None:
    """Each image's tag at the destination is the source's digest, index and platforms alike (a platform with a tag
    of its own at the source has it at the destination too); the summary says so."""
    source = {i["name"]: i for i in across.signed.summary["images"]}
    promoted = {i["name"]: i for i in across.summary["images"]}
    assert set(promoted) == set(source) == {"dual-pods-controller", "launcher-populator", "launcher", "requester"}
    with RegistryAPI(across.proxy.host) as api:
        for name, image in source.items():
            assert api.digest(f"{across.path}/{name}", across.signed.src.tag) == image["digest"]
            assert promoted[name]["digest"] == image["digest"]
            assert promoted[name]["ref"] == f"{across.to}/{name}:{across.signed.src.tag}"
            for platform in image["platforms"]:
                assert api.digest(f"{across.path}/{name}", platform["digest"]) == platform["digest"]
                if "@" not in platform["ref"]:  # a platform with a tag of its own at the source
                    tag = platform["ref"].rsplit(":", 1)[1]
                    assert api.digest(f"{across.path}/{name}", tag) == platform["digest"]
        assert {p["digest"] for i in across.summary["images"] for p in i["platforms"]} == \
            {p["digest"] for i in source.values() for p in i["platforms"]}
        assert {(i["name"], p["platform"]) for i in across.summary["images"] for p in i["platforms"]} == \
            {(i["name"], p["platform"]) for i in source.values() for p in i["platforms"]}
    assert across.summary["registry"] == across.to
    assert across.summary["source_revision"] == across.signed.summary["source_revision"]


def test_cosign_and_fma_release_verify_pass_at_the_destination_with_the_same_key(across: Promotion) -> None:
    """`cosign verify` (signature) and `cosign verify-attestation` (provenance) pass for every image manifest at
    the destination with the release's public key, and `fma-release verify` with the destination's command."""
    pub = across.signed.pub
    path = f"{across.to}"
    for image in across.signed.summary["images"]:
        digests = [image["digest"], *(p["digest"] for p in image["platforms"] if p["digest"] != image["digest"])]
        for digest in digests:
            ref = f"{path}/{image['name']}@{digest}"
            signature = cosign("verify", "--key", str(pub), "--insecure-ignore-tlog=true", "--offline=true",
                               "--allow-http-registry", ref)
            assert signature.returncode == 0, f"{ref}: {signature.stderr[-1500:]}"
            provenance = cosign("verify-attestation", "--key", str(pub), "--insecure-ignore-tlog=true",
                                "--offline=true", "--allow-http-registry", "--type", "slsaprovenance1", ref)
            assert provenance.returncode == 0, f"{ref}: {provenance.stderr[-1500:]}"
    command = across.summary["verify_command"]
    assert command.startswith(f"fma-release verify {across.signed.src.tag} --key cosign.pub --registry {across.to}")
    verified = fma_release("verify", *verify_args(across.summary, pub), env={})
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "verified v0.6.4: 11 artifact(s)" in verified.stdout
    # The run printed the destination's summary, install line included.
    assert f"helm install fma oci://{across.to}/charts/fma-controllers --version 0.6.4" in across.run.stdout


def test_the_destination_chart_renders_only_destination_images_and_is_signed(across: Promotion,
                                                                              tmp_path: Path) -> None:
    """The chart at the destination: global.imageRegistry is the destination, every release image it renders is
    there (none at the source), the external busybox is kept; its signature verifies with the release's key."""
    (chart,) = across.summary["charts"]
    assert chart["ref"] == f"oci://{across.to}/charts/fma-controllers" and chart["version"] == "0.6.4"
    with RegistryAPI(across.proxy.host) as api:
        found = api.manifest(f"{across.path}/charts/fma-controllers", "0.6.4")
        assert found is not None and found[0] == chart["digest"]
        layer = next(layer for layer in found[1]["layers"] if layer["mediaType"].endswith("tar+gzip"))
        (tmp_path / "chart.tgz").write_bytes(api.blob(f"{across.path}/charts/fma-controllers", layer["digest"]))
    loaded = helm.Chart.load(tmp_path / "chart.tgz")
    try:
        rendered = rendered_images(loaded.render(name="fma", namespace="default", is_install=True))
    finally:
        loaded.close()
    own = {i for i in rendered if "/dual-pods-controller:" in i or "/launcher-populator:" in i}
    assert own == {f"{across.to}/dual-pods-controller:v0.6.4", f"{across.to}/launcher-populator:v0.6.4"}
    assert not [i for i in rendered if across.signed.registry in i]
    assert {e["image"] for e in across.summary["external_images"]} == \
        {e["image"] for e in across.signed.summary["external_images"]}
    ref = f"{across.to}/charts/fma-controllers@{chart['digest']}"
    done = cosign("verify", "--key", str(across.signed.pub), "--insecure-ignore-tlog=true", "--offline=true",
                  "--allow-http-registry", ref)
    assert done.returncode == 0, done.stderr[-1500:]
    (claim,) = [s for s in across.summary["signatures"] if s["artifact"] == "chart fma-controllers"]
    assert claim["signature"] == "signed"


def test_a_rerun_copies_nothing(across: Promotion) -> None:
    """The same promotion again: no manifest, tag or blob is written at the destination, the chart is kept and
    already signed, and the summary says nothing was copied."""
    before = writes(across.proxy, across.path)
    again = promote(across.signed, across.to)
    assert again.returncode == 0, again.stderr[-3000:]
    assert writes(across.proxy, across.path) == before
    assert "every image was already there, nothing was copied" in again.stdout
    assert "| fma-controllers |" in again.stdout and "already published" in again.stderr


def test_within_one_registry_blobs_are_mounted_never_sent(within: Promotion) -> None:
    """Promoted to another path of the same registry: every image blob is mounted from the source repository
    (a POST with mount= that the registry answers 201), no blob byte is uploaded again; every digest is the
    source's and `fma-release verify` passes there."""
    images = [f"{within.path}/{i['name']}" for i in within.signed.summary["images"]]
    starts = sum(n for (repo, op), (n, _) in within.counts.items() if op == "upload_start" and repo in images)
    sent = [(repo, op, n, size) for (repo, op), (n, size) in within.counts.items()
            if op in ("upload_patch", "blob_put") and repo in images]
    received = sum(size for (repo, op), (_, size) in within.counts.items() if op in UPLOADS and repo in images)
    assert starts > 0 and sent == [] and received == 0, within.counts
    assert "blob(s) mounted, 0 uploaded (0 bytes)" in within.run.stdout
    assert [i["digest"] for i in within.summary["images"]] == [i["digest"] for i in within.signed.summary["images"]]
    verified = fma_release("verify", *verify_args(within.summary, within.signed.pub), env={})
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_destination_failing_mid_copy_resumes_whole(fma_signed_release: Signed, second_registry: RegistryProcess,
                                                      tmp_path: Path) -> None:
    """One blob upload answered 503 once is retried in the run; the requester's manifests answered 503 for good
    fail the run in one line naming it, with no chart at the destination. Resumed, the promotion copies only
    what was missing (nothing of the finished images again) and the destination verifies."""
    from tests.integration.shared import release_lock

    signed = fma_signed_release
    proxy = FaultProxy("127.0.0.1", second_registry.port).start()
    to = f"{proxy.host}/t{uuid.uuid4().hex[:10]}/fma"
    path = to.split("/", 1)[1]
    try:
        proxy.add(Rule(repo_suffix="/launcher", op="blob_put", status=503, times=1))
        proxy.add(Rule(repo_suffix="/requester", op="manifest_put", status=503))
        with release_lock():
            failed = promote(signed, to, "--push-attempts", "2")
            assert failed.returncode == 1, failed.stderr[-3000:]
            (line,) = [line for line in failed.stderr.splitlines() if line.startswith("fma-release: error:")]
            assert "1 image(s) failed, no chart was published: requester:" in line and "503" in line
            assert proxy.injected[(f"{path}/launcher", "blob_put")] == 1  # retried, and then it went through
            with RegistryAPI(proxy.host) as api:
                assert api.tags(f"{path}/charts/fma-controllers") == []
                assert api.digest(f"{path}/launcher", signed.src.tag)  # the images that could go, went
            proxy.clear()
            finished = {f"{path}/{name}" for name in ("dual-pods-controller", "launcher-populator", "launcher")}
            before = {key: n for key, (n, _) in proxy.snapshot().items() if key[0] in finished and key[1] in WRITES}
            resumed = promote(signed, to, summary=tmp_path / "summary.json")
            assert resumed.returncode == 0, resumed.stderr[-3000:]
            after = {key: n for key, (n, _) in proxy.snapshot().items() if key[0] in finished and key[1] in WRITES}
            assert after == before  # nothing of the images that were whole was written again
            summary = json.loads((tmp_path / "summary.json").read_text())
            assert {i["name"]: i["status"] for i in summary["images"]}["requester"] == "copied"
            verified = fma_release("verify", *verify_args(summary, signed.pub), env={})
            assert verified.returncode == 0, verified.stdout + verified.stderr
    finally:
        proxy.stop()


def test_a_signed_release_without_a_key_fails_before_any_copy(fma_signed_release: Signed,
                                                              second_registry: RegistryProcess) -> None:
    """No signing key configured: one line naming the fix (the release's key), exit 1, and nothing at all reaches
    the destination; the same with another key than the release's."""
    from tests.integration.shared import release_lock

    signed = fma_signed_release
    proxy = FaultProxy("127.0.0.1", second_registry.port).start()
    to = f"{proxy.host}/t{uuid.uuid4().hex[:10]}/fma"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FMA_SIGNING")}
    env["FMA_STATE_DIR"] = str(signed.state)
    other_key, _ = key_pair(signed.state.parent / f"other-{uuid.uuid4().hex[:6]}", "other-pw")
    try:
        with release_lock():
            unkeyed = subprocess.run(
                [sys.executable, "-m", "flows.cli", "promote", signed.src.tag, "--from", signed.registry,
                 "--to", to], capture_output=True, text=True, timeout=600, check=False, env=env)
            wrong = promote(signed, to, env={**signed.env, "FMA_SIGNING_KEY": str(other_key),
                                             "FMA_SIGNING_PASSWORD": "other-pw"})
    finally:
        proxy.stop()
    assert unkeyed.returncode == 1
    (line,) = unkeyed.stderr.strip().splitlines()[-1:]
    assert line.startswith("fma-release: error: the release v0.6.4 at") and "is signed" in line
    assert "FMA_SIGNING_KEY" in line and "nothing was copied" in line
    assert wrong.returncode == 1
    assert "is not the release's" in wrong.stderr.strip().splitlines()[-1]
    assert writes(proxy, to.split("/", 1)[1]) == 0, proxy.counts
    for secret in (PASSWORD, "other-pw"):
        assert secret not in unkeyed.stderr + wrong.stderr + unkeyed.stdout + wrong.stdout


def test_an_unsigned_release_is_promoted_without_a_key(registry: RegistryProcess, second_registry: RegistryProcess,
                                                       sample: Any, tmp_path: Path) -> None:
    """A release made without a key, promoted with none: every digest is the source's, the chart is packaged for
    the destination and unsigned, the summary says why, and there is no signature tag at the destination."""
    src = sample(tag="v0.3.1", images=("dual-pods-controller", "launcher-populator"), nonce=uuid.uuid4().hex)
    source = f"{registry.host}/t{uuid.uuid4().hex[:10]}/fma"
    to = f"{second_registry.host}/t{uuid.uuid4().hex[:10]}/fma"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FMA_SIGNING")}
    env["FMA_STATE_DIR"] = str(tmp_path / "state")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True,
                              timeout=900, check=False, env=env)

    released = cli("run", src.tag, "--source", str(src.path), "--config", str(src.config), "--registry", source,
                   "--retry-delay", "0.1", "--summary-json", str(tmp_path / "released.json"))
    assert released.returncode == 0, released.stderr[-3000:]
    promoted = cli("promote", src.tag, "--from", source, "--to", to, "--config", str(src.config),
                   "--summary-json", str(tmp_path / "promoted.json"))
    assert promoted.returncode == 0, promoted.stderr[-3000:]
    before = json.loads((tmp_path / "released.json").read_text())
    after = json.loads((tmp_path / "promoted.json").read_text())
    assert [(i["name"], i["digest"]) for i in after["images"]] == [(i["name"], i["digest"]) for i in before["images"]]
    assert after["signed"] is False and after["signatures"] == [] and after["verify_command"] == ""
    assert any("is not signed, so neither is its promotion" in note for note in after["notes"])
    (chart,) = after["charts"]
    assert chart["ref"] == f"oci://{to}/charts/fma-controllers"
    with RegistryAPI(second_registry.host) as api:
        path = to.split("/", 1)[1]
        tags = api.tags(f"{path}/charts/fma-controllers") + api.tags(f"{path}/dual-pods-controller")
    assert "0.3.1" in tags and "v0.3.1" in tags
    assert not [t for t in tags if t.endswith((".sig", ".att"))]


def test_a_chart_version_taken_at_the_destination_stops_it_before_any_copy(
    fma_signed_release: Signed, second_registry: RegistryProcess, tmp_path: Path,
) -> None:
    """fma-controllers 0.6.4 at the destination with other files (another registry's values): the promotion
    fails in one line naming the chart, and no image reaches the destination (the chart is packaged first)."""
    from tasks.core.project import PROJECT_ROOT
    from tasks.helm.chart import prepare_chart, publish_chart
    from tasks.oci.registry import Registries
    from tasks.run.settings import Settings
    from tests.integration.shared import release_lock

    signed = fma_signed_release
    proxy = FaultProxy("127.0.0.1", second_registry.port).start()
    to = f"{proxy.host}/t{uuid.uuid4().hex[:10]}/fma"
    other = prepare_chart(PROJECT_ROOT / "charts" / "fma-controllers", tmp_path, registry="elsewhere.io/fma",
                          tag="v0.6.4", version="0.6.4", images={})
    settings = Settings.from_env({})
    publish_chart(other, f"oci://{to}/charts", Registries(settings), settings=settings, workdir=tmp_path)
    try:
        with release_lock():
            refused = promote(signed, to)
    finally:
        proxy.stop()
    assert refused.returncode == 1
    (line,) = refused.stderr.strip().splitlines()[-1:]
    assert "chart fma-controllers 0.6.4 already exists at" in line and "with other content" in line
    images = {f"{to.split('/', 1)[1]}/{i['name']}" for i in signed.summary["images"]}
    assert not [key for key in proxy.snapshot() if key[0] in images and key[1] in WRITES]
