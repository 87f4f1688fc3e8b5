"""A multi-platform base image in a local registry: busybox for linux/amd64 and linux/arm64.

Each platform is ``FROM scratch`` + that platform's static busybox (the arm64 one fetched by
scripts/setup.sh to .local/arm64/bin/busybox), built by the engine for its platform, pushed
under a tag of its own, and the tag is an OCI image index of both: the shape of a public
multi-platform base such as golang or distroless, which cannot be pulled here.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from tasks.builders.docker import build_image
from tasks.core.project import PROJECT_ROOT
from tasks.index import publish_index
from tasks.oci.platforms import platform_tag
from tasks.push import push_engine_image
from tasks.run.context import ReleaseRequest, RunContext
from tasks.run.plan import ImageSpec, image_ref
from tasks.run.result import PushedImage

BUSYBOXES = {
    "linux/amd64": Path("/bin/busybox"),
    "linux/arm64": Path(os.environ.get("FMA_ARM64_BUSYBOX") or PROJECT_ROOT / ".local/arm64/bin/busybox"),
}
# COPY first: the legacy builder's platform check trips on an ARG or LABEL before it (FROM scratch).
_DOCKERFILE = 'FROM scratch\nCOPY busybox /bin/busybox\nCMD ["/bin/busybox", "sh"]\n'


def busybox_index(registry: str, name: str = "busybox", tag: str = "1",
                  labels: Mapping[str, str] | None = None) -> PushedImage:
    """Build, push and index ``<registry>/<name>:<tag>`` for every platform of :data:`BUSYBOXES`;
    ``labels`` (in every platform's image config) tell bases of the same busybox apart."""
    missing = [str(path) for path in BUSYBOXES.values() if not path.is_file()]
    if missing:
        raise RuntimeError(f"no static busybox at {', '.join(missing)}: run bash scripts/setup.sh")
    log = logging.getLogger("devkit.multiarch")
    ref = image_ref(registry, name, tag)
    pushed = []
    run = RunContext(ReleaseRequest(tag=f"v0.0.0-{tag}" if not tag.startswith("v") else tag, source=""))
    with run.engines.client() as client:
        for platform, busybox in BUSYBOXES.items():
            with tempfile.TemporaryDirectory(prefix="fma-base-") as tmp:
                context = Path(tmp)
                shutil.copy2(busybox, context / "busybox")
                (context / "Dockerfile").write_text(_DOCKERFILE)
                spec = ImageSpec(name=name, ref=image_ref(registry, name, platform_tag(tag, platform)),
                                 dockerfile=context / "Dockerfile", context=context, platform=platform, index_ref=ref,
                                 labels=dict(labels or {}))
                pushed.append(push_engine_image(client, build_image(client, spec, run, log), run, log))
    return publish_index(run.registries, name, ref, tuple(pushed))
