"""tasks/oci/copy.py against real Distribution registries: an image index with a platform tag, a cosign-style
signature tag and an OCI referrer (through the referrers tag schema, which Distribution 2.8 uses) copied within
one registry (blobs mounted) and to another registry (blobs sent), byte for byte; a second copy writes nothing."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devkit.faultproxy import FaultProxy, Rule
from devkit.registry import RegistryProcess, free_port
from tasks.core.errors import RegistryError
from tasks.oci.copy import ImageCopier, cosign_tags, referrers_tag
from tasks.oci.registry import RegistryAPI

pytestmark = pytest.mark.integration

IMAGE = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"


def digest_of(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


@dataclass(frozen=True)
class Source:
    repository: str
    index: str
    platforms: dict[str, str]  # platform -> manifest digest
    signature: str  # the signature manifest's digest, under cosign's .sig tag of the index
    referrer: str  # an artifact whose subject is the amd64 manifest


def push_image(api: RegistryAPI, repository: str, content: bytes, *, arch: str = "amd64") -> bytes:
    config = json.dumps({"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    for blob in (content, config):
        api.upload_blob(repository, digest_of(blob), blob)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": IMAGE,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest_of(config),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest_of(content),
                    "size": len(content)}]}).encode()
    api.put_manifest(repository, digest_of(manifest), manifest, IMAGE)
    return manifest


def make_source(api: RegistryAPI, repository: str) -> Source:
    """An index of two platforms under v1 (arm64 with a tag of its own), signed, with a referrer."""
    nonce = uuid.uuid4().bytes
    amd = push_image(api, repository, b"amd64 layer " + nonce * 4000)
    arm = push_image(api, repository, b"arm64 layer " + nonce * 4000, arch="arm64")
    index = json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": [
        {"mediaType": IMAGE, "digest": digest_of(amd), "size": len(amd),
         "platform": {"os": "linux", "architecture": "amd64"}},
        {"mediaType": IMAGE, "digest": digest_of(arm), "size": len(arm),
         "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}}]}).encode()
    api.put_manifest(repository, "v1", index, INDEX)
    api.put_manifest(repository, "v1-linux-arm64", arm, IMAGE)
    signature = push_image(api, repository, b"a signature payload " + nonce)
    api.put_manifest(repository, cosign_tags(digest_of(index))[0], signature, IMAGE)
    empty = b"{}"
    api.upload_blob(repository, digest_of(empty), empty)
    referrer = json.dumps({
        "schemaVersion": 2, "mediaType": IMAGE, "artifactType": "application/vnd.example.sbom",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": digest_of(empty), "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": digest_of(empty), "size": 2}],
        "subject": {"mediaType": IMAGE, "digest": digest_of(amd), "size": len(amd)}}).encode()
    api.put_manifest(repository, digest_of(referrer), referrer, IMAGE)
    listing = json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": [
        {"mediaType": IMAGE, "digest": digest_of(referrer), "size": len(referrer),
         "artifactType": "application/vnd.example.sbom"}]}).encode()
    api.put_manifest(repository, referrers_tag(digest_of(amd)), listing, INDEX)
    return Source(repository=repository, index=digest_of(index), platforms={"linux/amd64": digest_of(amd),
                                                                             "linux/arm64": digest_of(arm)},
                  signature=digest_of(signature), referrer=digest_of(referrer))


@pytest.fixture
def proxy(registry: RegistryProcess) -> Iterator[FaultProxy]:
    found = FaultProxy("127.0.0.1", registry.port).start()
    yield found
    found.stop()


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    reg = RegistryProcess(tmp_path_factory.mktemp("other-registry"), free_port()).start()
    yield reg
    reg.stop()


def assert_whole(api: RegistryAPI, repository: str, source: Source) -> None:
    """The target holds everything of ``source`` under the same digests and tags."""
    assert api.digest(repository, "v1") == source.index
    assert api.digest(repository, "v1-linux-arm64") == source.platforms["linux/arm64"]
    assert api.digest(repository, cosign_tags(source.index)[0]) == source.signature
    assert api.digest(repository, source.referrer) == source.referrer
    found = api.manifest(repository, referrers_tag(source.platforms["linux/amd64"]))
    assert found is not None and [m["digest"] for m in found[1]["manifests"]] == [source.referrer]


def test_within_one_registry_blobs_are_mounted(proxy: FaultProxy, tmp_path: Path) -> None:
    """Every blob goes by a mount (no PATCH, no PUT of bytes); digests and tags as at the source; again: nothing."""
    base = f"t{uuid.uuid4().hex[:10]}"
    with RegistryAPI(proxy.host) as api:
        source = make_source(api, f"{base}/src/x")
        before = proxy.snapshot()
        copied = ImageCopier(api, source.repository, RegistryAPI(proxy.host), f"{base}/dst/x",
                             spool=tmp_path).copy_tag("v1")
        after = proxy.snapshot()
        assert_whole(api, f"{base}/dst/x", source)
    sent = {key: (n, size) for key, (n, size) in after.items()
            if key[0] == f"{base}/dst/x" and key[1] in ("upload_patch", "blob_put") and (n, size) != before.get(key)}
    assert sent == {}
    assert copied.digest == source.index and copied.counts.blobs_mounted == 6 and copied.counts.blobs_uploaded == 0
    assert copied.platform_tags == (("v1-linux-arm64", source.platforms["linux/arm64"]),)
    assert copied.counts.referrers == 1
    with RegistryAPI(proxy.host) as api:
        again = ImageCopier(api, source.repository, api, f"{base}/dst/x").copy_tag("v1")
    assert not again.counts.wrote, again.counts


def test_to_another_registry_blobs_are_sent_and_checked(registry: RegistryProcess, other: RegistryProcess,
                                                        tmp_path: Path) -> None:
    """Between hosts each blob is read, checked against its digest and uploaded; the copy is byte for byte."""
    base = f"t{uuid.uuid4().hex[:10]}"
    with RegistryAPI(registry.host) as api, RegistryAPI(other.host) as target:
        source = make_source(api, f"{base}/src/x")
        copied = ImageCopier(api, source.repository, target, f"{base}/x", spool=tmp_path).copy_tag("v1")
        assert_whole(target, f"{base}/x", source)
        assert copied.counts.blobs_uploaded == 6 and copied.counts.bytes_uploaded > 2 * 16 * 4000
        for digest in source.platforms.values():
            for layer in (target.manifest(f"{base}/x", digest) or ("", {}))[1]["layers"]:
                assert target.blob(f"{base}/x", layer["digest"]) == api.blob(source.repository, layer["digest"])
        again = ImageCopier(api, source.repository, target, f"{base}/x").copy_tag("v1")
    assert not again.counts.wrote


def test_a_mount_the_registry_does_not_do_sends_the_bytes(proxy: FaultProxy) -> None:
    """A registry that answers a mount by starting an upload (202 and its location, as one without
    cross-repository mounts does): the copy sends the bytes to that upload, and the result is whole."""
    base = f"t{uuid.uuid4().hex[:10]}"
    with RegistryAPI(proxy.host) as api:
        source = make_source(api, f"{base}/src/x")
        proxy.add(Rule(repo_suffix=f"{base}/dst/x", op="upload_start", no_mount=True))
        copied = ImageCopier(api, source.repository, RegistryAPI(proxy.host), f"{base}/dst/x").copy_tag("v1")
        assert_whole(api, f"{base}/dst/x", source)
    assert copied.counts.blobs_mounted == 0 and copied.counts.blobs_uploaded == 6
    assert proxy.snapshot()[(f"{base}/dst/x", "blob_put")][0] == 6


def test_a_transient_fault_is_one_transient_error_and_a_second_copy_finishes(proxy: FaultProxy) -> None:
    """A 503 on the target's manifest PUT fails the copy with a transient RegistryError (worth a retry); the next
    copy sends only what is missing and ends whole."""
    base = f"t{uuid.uuid4().hex[:10]}"
    with RegistryAPI(proxy.host) as api:
        source = make_source(api, f"{base}/src/x")
        proxy.add(Rule(repo_suffix=f"{base}/dst/x", op="manifest_put", status=503, ref="v1"))
        with pytest.raises(RegistryError) as failed:
            ImageCopier(api, source.repository, api, f"{base}/dst/x").copy_tag("v1")
        assert failed.value.transient and "503" in str(failed.value)
        proxy.clear()
        copied = ImageCopier(api, source.repository, api, f"{base}/dst/x").copy_tag("v1")
        assert_whole(api, f"{base}/dst/x", source)
    assert copied.counts.manifests == 0 and copied.counts.blobs_mounted == 0 and copied.counts.tags == 1
