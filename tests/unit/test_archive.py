"""An engine's image (a `docker save` archive) as an OCI layout a registry takes by digest."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from tasks.core.errors import LayoutError
from tasks.oci.archive import CONFIG_TYPE, LAYER_TYPE, MANIFEST_TYPE, layout_from_archive
from tasks.oci.layout import checked_blob, read_blob


def layer(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def save_archive(path: Path, layers: list[bytes], *, oci_form: bool = False, diff_ids: list[str] | None = None,
                 images: int = 1) -> bytes:
    """A `docker save` archive of one image: classic (<id>/layer.tar) or Docker 25's (blobs/sha256/<hex>)."""
    config = json.dumps({"architecture": "arm64", "os": "linux", "config": {"Labels": {"a": "b"}},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids or [sha(x) for x in layers]}}).encode()
    members: dict[str, bytes] = {}
    names = []
    for number, data in enumerate(layers):
        name = f"blobs/sha256/{sha(data)[7:]}" if oci_form else f"{number:064x}/layer.tar"
        members[name] = data
        names.append(name)
    config_name = f"blobs/sha256/{sha(config)[7:]}" if oci_form else f"{sha(config)[7:]}.json"
    members[config_name] = config
    manifest = [{"Config": config_name, "RepoTags": None, "Layers": names}] * images
    members["manifest.json"] = json.dumps(manifest).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return config


@pytest.mark.parametrize("oci_form", [False, True])
def test_an_engine_image_becomes_one_image_manifest_with_gzipped_layers(tmp_path: Path, oci_form: bool) -> None:
    """The config byte for byte (its digest is the engine's image id), each layer gzipped and unzipping to its
    diff id, the platform read from the config; both archive forms."""
    layers = [layer({"bin/busybox": b"x" * 5000}), layer({"app/arch": b"aarch64\n"})]
    config = save_archive(tmp_path / "image.tar", layers, oci_form=oci_form)
    made = layout_from_archive(tmp_path / "image.tar", tmp_path / "layout")
    assert made.media_type == MANIFEST_TYPE and made.platforms == (("linux/arm64", made.digest),)
    manifest = json.loads(read_blob(made.path, made.digest))
    assert manifest["config"] == {"mediaType": CONFIG_TYPE, "digest": sha(config), "size": len(config)}
    assert [entry["mediaType"] for entry in manifest["layers"]] == [LAYER_TYPE, LAYER_TYPE]
    for entry, data in zip(manifest["layers"], layers, strict=True):
        assert gzip.decompress(checked_blob(made.path, entry["digest"]).read_bytes()) == data
    assert not list(tmp_path.glob(".layout*"))  # nothing half-made is left beside it


def test_the_same_image_gives_the_same_digest_every_time(tmp_path: Path) -> None:
    """No timestamp or file name in the gzip stream: a second export (a retry) pushes the same digest."""
    layers = [layer({"a": b"1" * 100_000})]
    save_archive(tmp_path / "image.tar", layers)
    first = layout_from_archive(tmp_path / "image.tar", tmp_path / "one").digest
    assert layout_from_archive(tmp_path / "image.tar", tmp_path / "two").digest == first
    assert layout_from_archive(tmp_path / "image.tar", tmp_path / "one").digest == first  # made again in place


def test_a_layer_that_is_not_what_the_config_says_is_refused(tmp_path: Path) -> None:
    """A layer whose content differs from its diff id: one line, nothing left behind."""
    save_archive(tmp_path / "image.tar", [layer({"a": b"1"})], diff_ids=["sha256:" + "0" * 64])
    with pytest.raises(LayoutError, match="its config says sha256:0000"):
        layout_from_archive(tmp_path / "image.tar", tmp_path / "layout")
    assert not (tmp_path / "layout").exists() and not list(tmp_path.glob(".layout*"))


@pytest.mark.parametrize(("images", "message"), [(2, "holds 2 images, expected one"), (0, "holds 0 images")])
def test_an_archive_of_other_than_one_image_is_refused(tmp_path: Path, images: int, message: str) -> None:
    """`docker save` of several tags (or none) is not one platform image."""
    save_archive(tmp_path / "image.tar", [layer({"a": b"1"})], images=images)
    with pytest.raises(LayoutError, match=message):
        layout_from_archive(tmp_path / "image.tar", tmp_path / "layout")


def test_a_broken_archive_is_one_line(tmp_path: Path) -> None:
    """Not a tar at all: a LayoutError naming the archive."""
    (tmp_path / "image.tar").write_bytes(b"not a tar")
    with pytest.raises(LayoutError, match="cannot be read"):
        layout_from_archive(tmp_path / "image.tar", tmp_path / "layout")
