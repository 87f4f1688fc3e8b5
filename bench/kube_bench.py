"""Kubernetes benchmark: what the proof's API server costs to have and to start.

- KB1: the last compile of kube-apiserver, etcd and kube-controller-manager from source (scripts/kube.sh
  records its wall seconds beside the binaries; cold, or warm when Go's build cache had the packages;
  a cold build is not repeated here).
- KB2: a warm setup's share, `bash scripts/kube.sh` when the binaries are already in .local/kube/bin.
- KB3: another checkout's setup, the binaries copied from the machine's cache (FMA_KUBE_BIN, a new directory).
- KS1: etcd + kube-apiserver started until readyz answers (median of ``--count``).
- KS2: the same with kube-controller-manager, until it has made the default namespace's service account.

    .venv/bin/python bench/kube_bench.py [--count 3] [--json bench/results-kube.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tasks.proof.cluster import KUBE_BIN, PARTS, LocalCluster, missing_parts  # noqa: E402


def timed_script(env: dict[str, str] | None = None) -> float:
    began = time.monotonic()
    done = subprocess.run(["bash", str(ROOT / "scripts/kube.sh")], capture_output=True, text=True, check=False,
                          env={**os.environ, **(env or {})}, timeout=3600)
    took = time.monotonic() - began
    if done.returncode != 0:
        raise SystemExit(f"scripts/kube.sh failed: {done.stdout[-500:]}{done.stderr[-500:]}")
    print(f"  {done.stdout.strip().splitlines()[-1]}")
    return took


def startups(count: int, *, controller_manager: bool) -> list[float]:
    found = []
    for _ in range(count):
        with LocalCluster(controller_manager=controller_manager) as cluster:
            found.append(cluster.started_in)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=3)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results-kube.json")
    args = parser.parse_args()
    why = missing_parts(controller_manager=True)
    if why:
        raise SystemExit(why)
    recorded = KUBE_BIN / "compile-seconds"
    cold = float(recorded.read_text()) if recorded.is_file() else None
    print("KB2: scripts/kube.sh with the binaries in place")
    warm = timed_script()
    with tempfile.TemporaryDirectory(prefix="kube-bench-") as tmp:
        print("KB3: scripts/kube.sh into a new directory, from the machine's cache")
        copied = timed_script({"FMA_KUBE_BIN": str(Path(tmp) / "bin")})
    print(f"KS1/KS2: {args.count} start(s) each")
    plain = startups(args.count, controller_manager=False)
    with_kcm = startups(args.count, controller_manager=True)
    sizes = {name: (KUBE_BIN / name).stat().st_size for name in PARTS}
    figures = {
        "KB1_last_compile_s": cold, "KB2_warm_setup_s": round(warm, 3), "KB3_copy_from_cache_s": round(copied, 3),
        "KS1_start_s": [round(t, 2) for t in plain], "KS1_median_s": round(statistics.median(plain), 2),
        "KS2_start_s": [round(t, 2) for t in with_kcm], "KS2_median_s": round(statistics.median(with_kcm), 2),
        "binary_mb": {name: round(size / 1e6, 1) for name, size in sizes.items()},
        "load_average": os.getloadavg()[0],
    }
    print("| figure | value |\n| --- | --- |")
    print(f"| KB1 last compile (recorded by scripts/kube.sh) | {cold if cold is not None else 'not recorded'} s |")
    print(f"| KB2 warm setup, binaries in place | {warm:.2f} s |")
    print(f"| KB3 copy from the machine's cache | {copied:.2f} s |")
    print(f"| KS1 etcd + kube-apiserver ready, median | {figures['KS1_median_s']} s |")
    print(f"| KS2 with kube-controller-manager working, median | {figures['KS2_median_s']} s |")
    print(f"| binaries | {', '.join(f'{n} {mb} MB' for n, mb in figures['binary_mb'].items())} |")
    args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
