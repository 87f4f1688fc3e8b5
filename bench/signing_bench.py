"""Signing benchmark: what the read-back of existing signatures costs, each figure a ratio of one run.

Signing resumes: before it signs a manifest it reads back what is already there, and leaves a
valid signature alone. Reading back with cosign is a process per manifest (``cosign verify``);
a registry HEAD on cosign's ``sha256-<hex>.sig`` tag says first whether there is anything to read.

- S1: the read-back of a manifest that has no signature yet (a first release): one HEAD against
  ``cosign verify`` answering "no signatures found".
- S2: a first release's signing of one manifest, HEAD + ``cosign sign``, against what it cost
  before the HEAD, ``cosign verify`` + ``cosign sign``.
- S3: a re-release's read-back of a signed manifest (HEAD + ``cosign verify``) against signing it
  (``cosign sign``): resuming costs about as much as signing, since it must check the signature.

Uses the real cosign (from ``scripts/setup.sh``) and a Distribution registry of its own, on small
single-layer images made through the registry API; figures are medians over ``--count`` manifests.

    .venv/bin/python bench/signing_bench.py [--count 6] [--json bench/signing.json]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pydantic import SecretStr  # noqa: E402

from devkit.registry import RegistryProcess, free_port  # noqa: E402
from devkit.report import report  # noqa: E402
from tasks.core import tools  # noqa: E402
from tasks.oci.registry import RegistryAPI  # noqa: E402
from tasks.run.facts import SigningKey  # noqa: E402
from tasks.run.settings import Settings  # noqa: E402
from tasks.supplychain.cosign import Cosign, VerifyFailed  # noqa: E402
from tasks.supplychain.provenance import cosign_tag  # noqa: E402

PASSWORD = "bench-password"  # noqa: S105 - a throwaway key made for this run
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def _image(api: RegistryAPI, repository: str, n: int) -> str:
    """A one-layer image of its own content; its manifest digest."""
    layer = f"layer {n} {uuid.uuid4().hex}".encode()
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    blobs = [(b, "sha256:" + hashlib.sha256(b).hexdigest()) for b in (config, layer)]
    for body, digest in blobs:
        api.upload_blob(repository, digest, body)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blobs[0][1],
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": blobs[1][1],
                    "size": len(layer)}],
    }).encode()
    return api.put_manifest(repository, f"b{n}", manifest, OCI_MANIFEST)


def _absent_verify(tool: Cosign, ref: str) -> None:
    try:
        tool.verify(ref)
    except VerifyFailed as err:
        if not err.absent:
            raise
        return
    raise SystemExit(f"signing_bench: {ref} was signed before the bench signed it")


def measure(count: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="fma-signing-bench-") as tmp:
        made = subprocess.run([tools.tool("cosign"), "generate-key-pair"], cwd=tmp, capture_output=True, text=True,
                              env={"COSIGN_PASSWORD": PASSWORD, "PATH": "/usr/bin:/bin"}, timeout=120, check=False)
        if made.returncode != 0:
            raise SystemExit(f"signing_bench: cosign generate-key-pair failed: {made.stderr.strip()[:200]}")
        key = SigningKey(path=str(Path(tmp) / "cosign.key"), password=SecretStr(PASSWORD))
        public = (Path(tmp) / "cosign.pub").read_text()
        registry = RegistryProcess(Path(tmp) / "registry", free_port()).start()
        try:
            repository = "bench/signing"
            with RegistryAPI(registry.host) as api, \
                    Cosign(Settings.from_env(), registry.host, key=key, public_pem=public) as tool:
                digests = [_image(api, repository, n) for n in range(count)]
                refs = [f"{registry.host}/{repository}@{d}" for d in digests]
                head = [_timed(functools.partial(api.digest, repository, cosign_tag(d, "sig"))) for d in digests]
                verify_absent = [_timed(functools.partial(_absent_verify, tool, r)) for r in refs]
                sign = [_timed(functools.partial(tool.sign, r)) for r in refs]
                verify_present = [_timed(functools.partial(tool.verify, r)) for r in refs]
                if not all(api.digest(repository, cosign_tag(d, "sig")) for d in digests):
                    raise SystemExit("signing_bench: a signature cosign pushed is not in the registry")
        finally:
            registry.stop()
    med = {name: statistics.median(values) for name, values in
           (("head", head), ("verify_absent", verify_absent), ("sign", sign), ("verify_present", verify_present))}
    return {
        **{f"{name}_s": round(value, 4) for name, value in med.items()},
        "s1": round(med["head"] / med["verify_absent"], 4),
        "s2": round((med["head"] + med["sign"]) / (med["verify_absent"] + med["sign"]), 4),
        "s3": round((med["head"] + med["verify_present"]) / med["sign"], 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=6, help="manifests to sign (default 6)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    figures = measure(args.count)
    print(f"median per manifest: HEAD {figures['head_s'] * 1000:.1f} ms, cosign verify (nothing there) "
          f"{figures['verify_absent_s']:.2f} s, cosign sign {figures['sign_s']:.2f} s, cosign verify (signed) "
          f"{figures['verify_present_s']:.2f} s")
    rows = [
        ("S1 read-back of an unsigned manifest: HEAD / cosign verify", f"{figures['s1']:.3f}"),
        ("S2 first signing: (HEAD + sign) / (verify + sign)", f"{figures['s2']:.3f}"),
        ("S3 re-release read-back: (HEAD + verify) / sign", f"{figures['s3']:.3f}"),
    ]
    report(figures, rows, args.count, args.json or ROOT / "bench" / "signing.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
