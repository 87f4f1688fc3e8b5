"""fma-sbomd (tools/sbomd), the release's SBOM scanner: syft's library kept running, against a real registry.

What it makes is what ``syft scan`` makes of the same image; a failed scan is one line and the scanner
goes on; a scanner that dies fails the scans waiting on it as transient and the next scan starts a new
one; credentials reach only the registry a request names, and a docker config of the host is never read.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from devkit.fma_sample import FmaBases
from devkit.registry import RegistryProcess, free_port
from tasks.core import tools
from tasks.core.project import PROJECT_ROOT
from tasks.oci.copy import ImageCopier
from tasks.oci.references import Reference
from tasks.oci.registry import RegistryAPI
from tasks.run.settings import Settings
from tasks.supplychain.sbom import SbomService, ScanFailed, ScanRequest

pytestmark = pytest.mark.integration


@pytest.fixture
def service() -> Iterator[SbomService]:
    scanner = SbomService()
    yield scanner
    scanner.stop()


def _packages(path: Path) -> set[tuple[str, str]]:
    document = json.loads(path.read_text())
    return {(p["name"], p.get("versionInfo", "")) for p in document["packages"]}


def test_the_sbom_is_the_one_syft_scan_makes_of_the_same_image(
        service: SbomService, fma_bases: FmaBases, tmp_path: Path) -> None:
    image = fma_bases.runtime.pinned
    service.scan(ScanRequest(image=image, out=tmp_path / "served.json", http=True))
    subprocess.run([tools.tool("syft"), "scan", f"registry:{image}", "-o", f"spdx-json={tmp_path / 'cli.json'}",
                    "-q"], check=True, capture_output=True, timeout=300,
                   env={**os.environ, **tools.tool_env(), "SYFT_REGISTRY_INSECURE_USE_HTTP": "true"})
    served = json.loads((tmp_path / "served.json").read_text())
    assert served["spdxVersion"].startswith("SPDX-")
    assert f"Tool: syft-{tools.pinned('syft').removeprefix('v')}" in served["creationInfo"]["creators"]
    assert _packages(tmp_path / "served.json") == _packages(tmp_path / "cli.json")
    assert any(name == "busybox" for name, _ in _packages(tmp_path / "served.json"))


def test_scans_at_once_are_each_answered_and_a_bad_one_is_one_line(
        service: SbomService, fma_bases: FmaBases, registry: RegistryProcess, tmp_path: Path) -> None:
    images = [fma_bases.runtime.pinned, fma_bases.static.pinned, fma_bases.launcher.pinned]
    with ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(lambda i: service.scan(ScanRequest(image=images[i], out=tmp_path / f"{i}.json", http=True)),
                      range(3)))
    assert all(json.loads((tmp_path / f"{i}.json").read_text())["packages"] for i in range(3))

    missing = f"{registry.host}/fma-bases/no-such-image@sha256:{'0' * 64}"
    with pytest.raises(ScanFailed) as caught:
        service.scan(ScanRequest(image=missing, out=tmp_path / "missing.json", http=True))
    assert "\n" not in caught.value.reason and not caught.value.transient
    assert "no-such-image" in caught.value.reason or "unknown" in caught.value.reason.lower()
    assert not (tmp_path / "missing.json").exists()
    service.scan(ScanRequest(image=images[0], out=tmp_path / "after.json", http=True))  # it goes on
    assert (tmp_path / "after.json").is_file()


def test_a_scanner_that_dies_fails_what_waits_as_transient_and_the_next_scan_starts_another(
        fma_bases: FmaBases, tmp_path: Path) -> None:
    # A stand-in that reads one request and dies, to have a scan waiting when it goes.
    dying = SbomService(argv=("python3", "-c", "import sys; sys.stdin.readline(); sys.stderr.write('boom\\n'); "
                                               "sys.exit(3)"))
    with pytest.raises(ScanFailed) as caught:
        dying.scan(ScanRequest(image=fma_bases.runtime.pinned, out=tmp_path / "x.json", http=True), timeout=60)
    assert caught.value.transient
    assert caught.value.reason == "fma-sbomd exited with code 3: boom"
    crashing = SbomService(argv=("python3", "-c", "import sys; sys.stdin.readline(); sys.stderr.write("
                                 "'panic: runtime error\\n\\ngoroutine 1 [running]:\\nmain.main()\\n'); "
                                 "sys.exit(2)"))
    with pytest.raises(ScanFailed) as caught:
        crashing.scan(ScanRequest(image=fma_bases.runtime.pinned, out=tmp_path / "y.json", http=True), timeout=60)
    assert caught.value.reason == "fma-sbomd exited with code 2: panic: runtime error"  # Go's reason, not its trace
    assert "secret" not in repr(ScanRequest(image="h/r@sha256:0", out=tmp_path / "z", password="secret"))
    real = SbomService()
    try:
        real.start()
        first = real._proc
        assert first is not None
        first.kill()
        first.wait()
        real.scan(ScanRequest(image=fma_bases.runtime.pinned, out=tmp_path / "again.json", http=True))
        assert real._proc is not None and real._proc is not first
        assert (tmp_path / "again.json").is_file()
    finally:
        real.stop()


def test_credentials_reach_only_the_request_that_names_them_never_a_docker_config(
        service: SbomService, fma_bases: FmaBases, registry: RegistryProcess, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "secure"
    root.mkdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(root / "key.pem"), "-out", str(root / "cert.pem")],
        check=True, capture_output=True)
    (root / "htpasswd").write_text(subprocess.run(["htpasswd", "-Bbn", "sbom-bot", "s3cret-Sbom"], check=True,
                                                  capture_output=True, text=True).stdout)
    secure = RegistryProcess(root, free_port(), htpasswd=root / "htpasswd",
                             tls=(root / "cert.pem", root / "key.pem")).start()
    try:
        settings = Settings.from_env({"FMA_REGISTRY_USERNAME": "sbom-bot", "FMA_REGISTRY_PASSWORD": "s3cret-Sbom",
                                      "FMA_REGISTRY_HOSTS": secure.host,
                                      "FMA_REGISTRY_CA_FILE": str(root / "cert.pem")})
        source = Reference.parse(fma_bases.runtime.ref)
        with RegistryAPI(registry.host) as src, RegistryAPI(secure.host, settings) as dst:
            copied = ImageCopier(src, source.repository, dst, "private/runtime").copy_tag(source.tag)
        image = f"{secure.host}/private/runtime@{copied.digest}"
        # The host's own docker config holds the credentials: the scanner must not use them.
        config = tmp_path / "docker"
        config.mkdir()
        auth = base64.b64encode(b"sbom-bot:s3cret-Sbom").decode()
        (config / "config.json").write_text(json.dumps({"auths": {secure.host: {"auth": auth}}}))
        monkeypatch.setenv("DOCKER_CONFIG", str(config))
        ca = str(root / "cert.pem")
        with pytest.raises(ScanFailed) as caught:
            service.scan(ScanRequest(image=image, out=tmp_path / "anon.json", ca=ca))
        assert "unauthorized" in caught.value.reason.lower()
        service.scan(ScanRequest(image=image, out=tmp_path / "auth.json", ca=ca, username="sbom-bot",
                                 password="s3cret-Sbom"))
        assert json.loads((tmp_path / "auth.json").read_text())["packages"]
    finally:
        secure.stop()


def test_the_built_scanner_is_the_one_of_these_sources() -> None:
    """scripts/tools.sh stamps fma-sbomd with a hash of tools/sbomd: a changed source is built again."""
    import hashlib

    source = PROJECT_ROOT / "tools" / "sbomd"
    parts = [source / "go.mod", source / "go.sum", *sorted(source.glob("*.go"))]
    stamp = hashlib.sha256(b"".join(p.read_bytes() for p in parts)).hexdigest()[:16]
    said = subprocess.run([tools.tool("fma-sbomd"), "version"], capture_output=True, text=True, check=True,
                          timeout=30).stdout.split()
    assert said[:2] == ["fma-sbomd", stamp]
    assert said[2:] == ["syft", tools.pinned("syft")]
