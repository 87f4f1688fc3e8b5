"""P1 with a multi-platform image: "p1_mp", a full release in which the slowest image is also built
for linux/arm64 (under qemu on an amd64 machine), against that slowest image released alone for
linux/amd64. The arm64 build runs beside the others, so the release should still cost about its
slowest build: the target is P1's.

Every Dockerfile starts FROM a multi-platform busybox base (devkit/multiarch.py) in the bench's own
registry, so the arm64 build pulls the arm64 base and runs its RUN step (a sleep) under qemu.
Also reported: how long each platform's build of the slowest image took (building -> built), and
P1 of the same run (the full release without the arm64 build), so that the two compare on one load.

    .venv/bin/python bench/multiplatform_bench.py [--reps 3] [--quick] [--json bench/results-mp.json]

Needs scripts/setup.sh's arm64 support (qemu-user-static registered, .local/arm64/bin/busybox).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devkit.cleanup import remove_registry_images  # noqa: E402
from devkit.multiarch import busybox_index  # noqa: E402
from devkit.prefect_server import start_prefect_server, stop_prefect_server  # noqa: E402
from devkit.registry import RegistryProcess, free_port  # noqa: E402
from devkit.report import report  # noqa: E402
from devkit.sample_source import FMA_IMAGES, SampleSource, make_sample_source  # noqa: E402

TARGET = 1.10  # P1's (bench/release_bench.py)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one repetition, short sleeps")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results-mp.json")
    args = parser.parse_args()
    reps = 1 if args.quick else args.reps
    sleeps = dict(zip(FMA_IMAGES, (0.5, 1, 1.5, 2) if args.quick else (2, 3, 4, 6), strict=True))
    slowest = max(sleeps, key=lambda name: sleeps[name])

    work = Path(tempfile.mkdtemp(prefix="fma-bench-mp-"))
    server = None
    if not os.environ.get("PREFECT_API_URL"):
        server, url = start_prefect_server(work / "prefect")
        os.environ["PREFECT_API_URL"] = url
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    registry = RegistryProcess(work / "registry", free_port()).start()
    from flows.release import release  # after PREFECT_API_URL is set
    from tasks.core import progress

    started: dict[str, float] = {}
    build_s: dict[str, list[float]] = {"linux/amd64": [], "linux/arm64": []}

    def watch(item: str, state: str, _: str) -> None:
        if state == "building":
            started[item] = time.perf_counter()
        elif state == "built" and item.startswith(f"{slowest} ") and item in started:
            build_s[item.split(" ", 1)[1]].append(time.perf_counter() - started[item])

    progress.subscribe(watch)
    try:
        base = busybox_index(f"{registry.host}/bases").ref

        def source(images: tuple[str, ...], multi: bool) -> SampleSource:
            return make_sample_source(
                work / uuid.uuid4().hex[:8], images=images, sleeps=sleeps, nonce=uuid.uuid4().hex, base=base,
                platforms={slowest: ["linux/amd64", "linux/arm64"]} if multi else None,
            )

        def timed(src: SampleSource) -> float:
            began = time.perf_counter()
            release(tag=src.tag, source=str(src.path), config=str(src.config),
                    registry=f"{registry.host}/b{uuid.uuid4().hex[:8]}/fma")
            return time.perf_counter() - began

        timed(source((slowest,), multi=True))  # warm-up: base pulls for both platforms, first-run costs
        build_s = {key: [] for key in build_s}
        runs: dict[str, list[float]] = {"full_mp": [], "full": [], "single": []}
        for _ in range(reps):
            runs["full_mp"].append(timed(source(FMA_IMAGES, multi=True)))
            runs["full"].append(timed(source(FMA_IMAGES, multi=False)))
            runs["single"].append(timed(source((slowest,), multi=False)))
    finally:
        registry.stop()
        remove_registry_images(registry.host)
        from prefect.logging.handlers import APILogHandler

        APILogHandler().flush()
        if server is not None:
            stop_prefect_server(server)

    med = {name: statistics.median(values) for name, values in runs.items()}
    p1_mp = med["full_mp"] / med["single"]
    p1 = med["full"] / med["single"]  # the same release without the arm64 build, for comparison
    builds = {platform: statistics.median(values) for platform, values in build_s.items() if values}
    figures = {"reps": reps, "sleeps_s": sleeps, "slowest": slowest, "median_s": med, "runs_s": runs,
               "slowest_build_s": builds, "ratios": {"p1_mp": p1_mp, "p1_same_run": p1}, "targets": {"p1_mp": TARGET},
               "met": {"p1_mp": p1_mp <= TARGET}}
    rows = [
        ("builds sleep (s)", ", ".join(str(v) for v in sleeps.values())),
        (f"full release, {slowest} also linux/arm64 (s)", f"{med['full_mp']:.2f}"),
        ("full release, one platform each (s)", f"{med['full']:.2f}"),
        (f"{slowest} alone, linux/amd64 (s)", f"{med['single']:.2f}"),
        *((f"{slowest} {platform} build, in the full release (s)", f"{s:.2f}") for platform, s in builds.items()),
        (f"P1_mp full / slowest alone (target <= {TARGET})", f"{p1_mp:.3f}"),
        ("P1 of the same run, without the arm64 build", f"{p1:.3f}"),
    ]
    report(figures, rows, reps, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
