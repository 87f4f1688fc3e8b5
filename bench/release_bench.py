"""Release benchmark: a 4-image release against its slowest image released alone.

Every image's build sleeps (2, 3, 4 and 6 s by default), so the old sequential
workflow costs about the sum (15 s) and a parallel release the slowest image
plus overhead. Runs are interleaved (full, single, full, single, ...) on fresh
sources, so no build is cached; the figures are medians and the target is a
ratio, so a slow machine does not matter.

    .venv/bin/python bench/release_bench.py [--reps 3] [--quick] [--json bench/results.json]

Uses PREFECT_API_URL when set, else starts a Prefect server of its own; starts
its own Distribution registry. Exits non-zero when a release fails (nothing
measured), never because the machine is slow.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devkit.prefect_server import start_prefect_server, stop_prefect_server  # noqa: E402
from devkit.registry import RegistryProcess, free_port  # noqa: E402
from devkit.sample_source import FMA_IMAGES, make_sample_source  # noqa: E402

TARGET_P1 = 1.3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one repetition, short sleeps (for CI)")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results.json")
    args = parser.parse_args()
    reps = 1 if args.quick else args.reps
    sleeps = dict(zip(FMA_IMAGES, (0.5, 1, 1.5, 2) if args.quick else (2, 3, 4, 6), strict=True))
    slowest = max(sleeps, key=lambda name: sleeps[name])

    work = Path(tempfile.mkdtemp(prefix="fma-bench-"))
    server = None
    if not os.environ.get("PREFECT_API_URL"):
        server, url = start_prefect_server(work / "prefect")
        os.environ["PREFECT_API_URL"] = url
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    registry = RegistryProcess(work / "registry", free_port()).start()
    from flows.release import release_flow  # after PREFECT_API_URL is set

    def release(images: tuple[str, ...]) -> float:
        src = make_sample_source(
            work / uuid.uuid4().hex[:8], images=images, sleeps=sleeps, nonce=uuid.uuid4().hex,
        )
        started = time.perf_counter()
        release_flow(tag=src.tag, source=str(src.path), config=str(src.config),
                     registry=f"{registry.host}/b{uuid.uuid4().hex[:8]}/fma")
        return time.perf_counter() - started

    full: list[float] = []
    single: list[float] = []
    try:
        release((slowest,))  # warm-up: first-run costs (imports, server caches) are not the release's
        for _ in range(reps):
            full.append(release(FMA_IMAGES))
            single.append(release((slowest,)))
    finally:
        registry.stop()
        from prefect.logging.handlers import APILogHandler

        APILogHandler().flush()  # send the last run logs before the server goes away
        if server is not None:
            stop_prefect_server(server)

    figures = {
        "reps": reps,
        "sleeps_s": sleeps,
        "sum_of_sleeps_s": sum(sleeps.values()),
        "full_release_s": statistics.median(full),
        "slowest_alone_s": statistics.median(single),
        "full_runs_s": full,
        "single_runs_s": single,
    }
    figures["p1_ratio"] = figures["full_release_s"] / figures["slowest_alone_s"]
    figures["p1_target"] = TARGET_P1
    figures["p1_met"] = figures["p1_ratio"] <= TARGET_P1
    args.json.write_text(json.dumps(figures, indent=2) + "\n")

    print(f"{'measure':<44}{'value':>10}")
    print(f"{'builds sleep (s)':<44}{', '.join(str(v) for v in sleeps.values()):>10}")
    print(f"{'sequential estimate: sum of sleeps (s)':<44}{figures['sum_of_sleeps_s']:>10.2f}")
    print(f"{'full release, 4 images, median (s)':<44}{figures['full_release_s']:>10.2f}")
    print(f"{'slowest image released alone, median (s)':<44}{figures['slowest_alone_s']:>10.2f}")
    print(f"{'P1 ratio full / slowest (target <= 1.3)':<44}{figures['p1_ratio']:>10.2f}")
    print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
