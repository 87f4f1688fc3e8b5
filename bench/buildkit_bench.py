"""B1: the requester-shaped arm64 build with BuildKit, against its amd64 build and the legacy builder.

Upstream's requester compiles in a ``FROM --platform=$BUILDPLATFORM`` stage and copies the binary into a
stage of the target platform. BuildKit runs that builder stage natively, so an arm64 build should cost
about what the amd64 one does: only the final stage's short step runs under qemu. The legacy builder
(tasks/builders/docker.py, the docker SDK's ``APIClient.build(platform=...)``) ignores the flag and runs the
builder stage under qemu too.

The builder stage is given the CPU work a compile would do (a busybox shell loop and an md5 over
generated data, from devkit/requester_shape.py). Three builds per repetition, interleaved so that they
share the machine's load: BuildKit linux/amd64, BuildKit linux/arm64, legacy linux/arm64. BuildKit builds
run with ``--no-cache``; every build gets a new context (a nonce in the build script), so the legacy
builder's cache has no step after the base either. Each image records the machine its builder stage ran
on, read back from ``docker save``: the bench fails if BuildKit's arm64 builder stage did not run natively.

    .venv/bin/python bench/buildkit_bench.py [--reps 3] [--quick] [--json bench/results-buildkit.json]

Needs scripts/setup.sh's arm64 support (qemu-user-static registered, .local/arm64/bin/busybox).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devkit.cleanup import remove_registry_images  # noqa: E402
from devkit.multiarch import busybox_index  # noqa: E402
from devkit.registry import RegistryProcess, free_port  # noqa: E402
from devkit.report import report  # noqa: E402
from devkit.requester_shape import Work, make_requester_context, saved_files  # noqa: E402
from tasks.builders.buildkit import BuildkitBuild, BuildkitClient  # noqa: E402
from tasks.builders.docker import build_image  # noqa: E402
from tasks.run.context import ReleaseRequest, RunContext  # noqa: E402
from tasks.run.plan import ImageSpec  # noqa: E402

TARGET = 1.3  # arm64 BuildKit build / amd64 BuildKit build
WORK = Work(loops=1_500_000, megabytes=600)  # about 3.5 s natively on an idle core here
QUICK_WORK = Work(loops=300_000, megabytes=150)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one repetition, less work")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results-buildkit.json")
    args = parser.parse_args()
    reps = 1 if args.quick else args.reps
    work = QUICK_WORK if args.quick else WORK
    log = logging.getLogger("bench.buildkit")  # build output is not printed

    scratch = Path(tempfile.mkdtemp(prefix="fma-bench-bk-"))
    registry = RegistryProcess(scratch / "registry", free_port()).start()
    buildkit = BuildkitClient()
    runs: dict[str, list[float]] = {"buildkit_amd64": [], "buildkit_arm64": [], "legacy_arm64": []}
    builder_ran_on: dict[str, set[str]] = {name: set() for name in runs}
    try:
        base = busybox_index(f"{registry.host}/bases").ref
        run = RunContext(ReleaseRequest(tag="v0.0.0", source=""))
        with run.engines.client() as client:

            def context() -> Path:
                path = scratch / uuid.uuid4().hex[:8]
                return make_requester_context(path, base, uuid.uuid4().hex, work)

            def tag(kind: str) -> str:
                return f"{registry.host}/bench/requester:{kind}-{uuid.uuid4().hex[:8]}"

            def with_buildkit(platform: str, dockerfile: Path) -> str:
                return buildkit.build(BuildkitBuild(
                    name="requester", label=f"requester {platform}", dockerfile=dockerfile, context=dockerfile.parent,
                    platform=platform, tag=tag("bk"), no_cache=True), log)

            def with_legacy(platform: str, dockerfile: Path) -> str:
                spec = ImageSpec(name="requester", ref=tag("legacy"), dockerfile=dockerfile,
                                 context=dockerfile.parent, platform=platform)
                return build_image(client, spec, run, log).image_id

            def timed(name: str, build: Callable[[str, Path], str], platform: str) -> None:
                dockerfile = context()
                began = time.perf_counter()
                image_id = build(platform, dockerfile)
                runs[name].append(time.perf_counter() - began)
                files = saved_files(b"".join(client.get_image(image_id)))
                builder_ran_on[name].add(files["/app/builder-arch"].decode().strip())

            # Warm-up, not measured: the base for both platforms in BuildKit and in the engine's store.
            warm = Work()
            for platform in ("linux/amd64", "linux/arm64"):
                with_buildkit(platform, make_requester_context(scratch / uuid.uuid4().hex[:8], base, "warm", warm))
                with_legacy(platform, make_requester_context(scratch / uuid.uuid4().hex[:8], base, "warm", warm))
            for _ in range(reps):
                timed("buildkit_amd64", with_buildkit, "linux/amd64")
                timed("buildkit_arm64", with_buildkit, "linux/arm64")
                timed("legacy_arm64", with_legacy, "linux/arm64")
    finally:
        registry.stop()
        remove_registry_images(registry.host)
        shutil.rmtree(scratch, ignore_errors=True)

    med = {name: statistics.median(values) for name, values in runs.items()}
    ratios = {
        "arm64_vs_amd64": med["buildkit_arm64"] / med["buildkit_amd64"],
        "legacy_arm64_vs_amd64": med["legacy_arm64"] / med["buildkit_amd64"],
        "legacy_arm64_vs_buildkit_arm64": med["legacy_arm64"] / med["buildkit_arm64"],
    }
    # The same ratio within each repetition: its three builds ran under one load.
    paired = [arm / amd for arm, amd in zip(runs["buildkit_arm64"], runs["buildkit_amd64"], strict=True)]
    ran_on = {name: sorted(machines) for name, machines in builder_ran_on.items()}
    figures = {"reps": reps, "work": work.__dict__, "median_s": med, "runs_s": runs, "ratios": ratios,
               "arm64_vs_amd64_per_rep": paired, "builder_stage_ran_on": ran_on, "targets": {"arm64_vs_amd64": TARGET},
               "met": {"arm64_vs_amd64": ratios["arm64_vs_amd64"] <= TARGET}}
    rows = [
        ("builder work (loops, MB md5)", f"{work.loops}, {work.megabytes}"),
        ("BuildKit linux/amd64 (s)", f"{med['buildkit_amd64']:.2f}"),
        ("BuildKit linux/arm64 (s)", f"{med['buildkit_arm64']:.2f}"),
        ("legacy builder linux/arm64 (s)", f"{med['legacy_arm64']:.2f}"),
        (f"B1 BuildKit arm64 / amd64 (target <= {TARGET})", f"{ratios['arm64_vs_amd64']:.3f}"),
        ("  the same, per repetition", ", ".join(f"{r:.2f}" for r in paired)),
        ("legacy arm64 / BuildKit amd64", f"{ratios['legacy_arm64_vs_amd64']:.3f}"),
        ("legacy arm64 / BuildKit arm64", f"{ratios['legacy_arm64_vs_buildkit_arm64']:.3f}"),
        *((f"builder stage ran on, {name}", ",".join(machines)) for name, machines in ran_on.items()),
    ]
    report(figures, rows, reps, args.json)
    if ran_on["buildkit_arm64"] != ["x86_64"] or ran_on["buildkit_amd64"] != ["x86_64"]:
        print("BuildKit's builder stage did not run natively: the figures do not measure what they say")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
