"""An engine's image as an OCI image layout: what ``docker save`` writes, made into blobs a registry takes.

A Docker engine pushes an image only under a tag. A platform image of a multi-platform release is
pushed by digest instead (as ko and ``docker buildx build --push`` do: the registry's tag list then
holds the release's tag alone), so it is read out of the engine (``docker save``: a tar of the image
config, one uncompressed tar per layer and a ``manifest.json``) and written as an OCI layout with one
image manifest: the config byte for byte (its digest is the engine's image id), each layer gzipped
with no timestamp or name (the same image always gives the same blobs, so a retry or a second export
pushes the same digest), each layer checked against the config's ``rootfs.diff_ids``.

Both forms of ``docker save`` are read: the classic one (``<id>/layer.tar``) and the OCI-layout one of
Docker 25 and later (``blobs/sha256/<hex>``); ``manifest.json`` names the files in either.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from tasks.core.errors import LayoutError
from tasks.oci.layout import OciLayout, read_layout

CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CHUNK = 1 << 20


def _member(tar: tarfile.TarFile, name: str, archive: Path) -> IO[bytes]:
    try:
        found = tar.extractfile(name.removeprefix("./"))
    except KeyError:
        found = None
    if found is None:
        raise LayoutError(f"the image archive {archive} lacks {name}: export the image again")
    return found


def _write_blob(layout: Path, data: bytes) -> dict[str, Any]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = layout / "blobs" / "sha256" / digest.removeprefix("sha256:")
    path.write_bytes(data)
    return {"digest": digest, "size": len(data)}


class _Hashing(io.RawIOBase):
    """A file that hashes what is written into it on the way to ``out``."""

    def __init__(self, out: IO[bytes]) -> None:
        super().__init__()
        self.out = out
        self.hash = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.hash.update(data)
        return self.out.write(data)


def _gzip_layer(archive: Path, name: str, layout: Path, part: int) -> tuple[str, dict[str, Any]]:
    """Gzip one layer of ``archive`` into ``layout``'s blobs: (its diff id, its descriptor)."""
    staged = layout / "blobs" / "sha256" / f".layer-{part}"
    plain = hashlib.sha256()
    with tarfile.open(archive) as tar, staged.open("wb") as out:
        source = _member(tar, name, archive)
        hashing = _Hashing(out)
        with gzip.GzipFile(filename="", mode="wb", fileobj=hashing, mtime=0) as zipped:
            while chunk := source.read(CHUNK):
                plain.update(chunk)
                zipped.write(chunk)
    packed = hashing.hash
    digest = "sha256:" + packed.hexdigest()
    size = staged.stat().st_size
    staged.replace(layout / "blobs" / "sha256" / packed.hexdigest())
    return "sha256:" + plain.hexdigest(), {"mediaType": LAYER_TYPE, "digest": digest, "size": size}


def layout_from_archive(archive: Path, target: Path) -> OciLayout:
    """Write the one image of ``archive`` (``docker save`` of one tag) as the OCI layout ``target``;
    :class:`LayoutError` when the archive is not one image or a layer is not what its config says.

    The layout is made beside ``target`` and renamed into place, so a layout that exists is whole."""
    try:
        with tarfile.open(archive) as tar:
            images = json.load(_member(tar, "manifest.json", archive))
            if not isinstance(images, list) or len(images) != 1 or not isinstance(images[0], dict):
                raise LayoutError(f"the image archive {archive} holds {len(images) if isinstance(images, list) else 0}"
                                  " images, expected one: export one tag")
            config_bytes = _member(tar, str(images[0]["Config"]), archive).read()
    except (tarfile.TarError, OSError, ValueError, KeyError) as err:
        raise LayoutError(f"the image archive {archive} cannot be read ({err}): export the image again") from err
    layers = [str(name) for name in images[0].get("Layers") or []]
    try:
        diff_ids = list(json.loads(config_bytes)["rootfs"]["diff_ids"])
    except (ValueError, KeyError, TypeError) as err:
        raise LayoutError(f"the image config in {archive} has no rootfs.diff_ids: export the image again") from err
    if len(diff_ids) != len(layers):
        raise LayoutError(f"the image archive {archive} has {len(layers)} layers for {len(diff_ids)} diff ids: "
                          "export the image again")
    building = target.with_name(f".{target.name}.partial")
    shutil.rmtree(building, ignore_errors=True)
    (building / "blobs" / "sha256").mkdir(parents=True)
    try:
        config = {"mediaType": CONFIG_TYPE, **_write_blob(building, config_bytes)}
        with ThreadPoolExecutor(max_workers=2) as pool:  # zlib lets go of the GIL: two layers at once
            packed = list(pool.map(lambda item: _gzip_layer(archive, item[1], building, item[0]), enumerate(layers)))
        for (diff_id, _), wanted in zip(packed, diff_ids, strict=True):
            if diff_id != wanted:
                raise LayoutError(f"a layer in {archive} is {diff_id}, its config says {wanted}: "
                                  "export the image again")
        manifest = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_TYPE, "config": config,
                               "layers": [descriptor for _, descriptor in packed]}, separators=(",", ":")).encode()
        top = {"mediaType": MANIFEST_TYPE, **_write_blob(building, manifest)}
        (building / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        (building / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [top]}))
        shutil.rmtree(target, ignore_errors=True)
        building.replace(target)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return read_layout(target)
