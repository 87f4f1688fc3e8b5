"""Release benchmarks, each figure a ratio measured in one run.

- P1: a 4-image release against its slowest image released alone. Every build
  sleeps (2, 3, 4 and 6 s by default), so a sequential workflow costs about
  the sum and a parallel release the slowest image plus overhead. The slowest
  image alone is its release in P5's series (each image released alone).
- P2: re-releasing a fully published tag against the full release.
- P3: resuming after one image's push failed for good (registry 503 on its
  manifest PUT, injected by a proxy) against the full release; the resume
  must rebuild nothing.

- P4: the cost of one more image: releases of 4, 16 and 32 images whose
  builds all sleep alike; (wall(32) - wall(4)) / 28 seconds per image.
- P5: the 4-image release against the same four released one after another
  (each image alone, the times added up): what the parallel chains save.
- P6: the 4-image release signed (a cosign key made for the run: signatures,
  provenance and SBOMs) against the same release unsigned. One image is the
  slow one, so signing the others overlaps it; only the slow image's own
  signing should add to the release. The warm-up includes a signed release,
  as a signing host has made one before (it notes the key's public half, so
  later runs open the key while the source is checked out). Both releases go
  straight to the registry: the fault proxy serves in this process, so each of cosign's many
  small requests through it took a share of the release's own interpreter.
  The same ratio through the proxy is printed for reference.

The warm-up is a release of the 4 images, as a host that released the project
before has made one: it knows how long each build took, and starts the longest
first (flows/chains.py).

Runs are interleaved on fresh sources (a nonce in each, so dockerd's layer
cache never serves a build); figures are medians. Ratios, so a slow machine
does not matter.

Builds start FROM a small base image and sleep by fetching a slow URL from a
local server (``ADD http://.../2/name``): the build lasts as long as asked
and costs the engine no container, so the figures measure the release, not
dockerd's per-container cost. Builds go to an engine of the benchmark's own
(a second dockerd whose fresh store is kept in memory: dockerd 20.10 slows
down as images pile up in its store, and disk writeback is noise), unless
--docker-host names one.

    .venv/bin/python bench/release_bench.py [--reps 3] [--quick] [--json bench/results.json]

Uses PREFECT_API_URL when set, else starts a Prefect server of its own; starts
its own Distribution registry behind a fault-injecting proxy. Exits non-zero
when it cannot measure (a release that should succeed fails, a resume
rebuilds), never because the machine is slow.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402

from devkit.engine import EngineProcess  # noqa: E402
from devkit.faultproxy import FaultProxy, Rule  # noqa: E402
from devkit.prefect_server import start_prefect_server, stop_prefect_server  # noqa: E402
from devkit.registry import RegistryProcess, free_port  # noqa: E402
from devkit.report import report  # noqa: E402
from devkit.sample_source import FMA_IMAGES, SampleSource, base_image, make_sample_source  # noqa: E402
from devkit.sleep_server import SleepServer  # noqa: E402
from tasks.core import tools  # noqa: E402

TARGETS = {"p1": 1.10, "p2": 0.05, "p3": 0.15, "p4": 0.05, "p5": 0.45, "p6": 1.15}
KEY_PASSWORD = "release-bench"  # noqa: S105 - a throwaway key made for this run
P4_COUNTS = (4, 16, 32)  # P4 = (wall(32) - wall(4)) / 28: seconds per extra image
P4_COUNTS_QUICK = (2, 8)


class CannotMeasure(Exception):
    pass


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each named process and all its descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    own: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = _stat(int(entry.name))
            except OSError:
                continue
            parent[int(entry.name)] = int(fields[1])
            own[int(entry.name)] = sum(int(v) for v in fields[11:15]) / tick  # utime stime cutime cstime

    def root_of(pid: int) -> int | None:
        while pid > 1:
            if pid in pids.values():
                return pid
            pid = parent.get(pid, 0)
        return None

    used = dict.fromkeys(pids, 0.0)
    names = {pid: name for name, pid in pids.items()}
    for pid, seconds in own.items():
        root = root_of(pid)
        if root is not None:
            used[names[root]] += seconds
    return used


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true",
                        help="one repetition, short sleeps, no warm-up, P4 from 2 and 8 images (for CI: every "
                             "figure is measured, none is worth judging)")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results.json")
    parser.add_argument("--docker-host", help="build on this engine instead of one of the benchmark's own")
    parser.add_argument("--no-p4", action="store_true", help="leave out P4")
    args = parser.parse_args()
    reps = 1 if args.quick else args.reps
    sleeps = dict(zip(FMA_IMAGES, (0.5, 1, 1.5, 2) if args.quick else (2, 3, 4, 6), strict=True))
    slowest = max(sleeps, key=lambda name: sleeps[name])
    p4_counts = () if args.no_p4 else P4_COUNTS_QUICK if args.quick else P4_COUNTS
    p4_sleep = 1.0 if args.quick else 2.0

    work = Path(tempfile.mkdtemp(prefix="fma-bench-"))
    server = own_engine = None
    pids = {"release (this process)": os.getpid()}
    started = time.perf_counter()
    if not os.environ.get("PREFECT_API_URL"):
        server, url = start_prefect_server(work / "prefect")
        os.environ["PREFECT_API_URL"] = url
        pids["Prefect server"] = server.pid
        print(f"started a Prefect server in {time.perf_counter() - started:.1f} s (not measured; "
              "set PREFECT_API_URL to use a running one)", file=sys.stderr)
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    if args.docker_host:
        os.environ["DOCKER_HOST"] = args.docker_host
    else:
        own_engine = EngineProcess(in_memory=True).start()
        os.environ["DOCKER_HOST"] = own_engine.docker_host
        assert own_engine.process is not None
        pids["Docker engine"] = own_engine.process.pid
    registry = RegistryProcess(work / "registry", free_port()).start()
    assert registry.process is not None
    pids["registry"] = registry.process.pid
    proxy = FaultProxy("127.0.0.1", registry.port).start()
    sleeper = SleepServer().start()
    client = docker.APIClient(base_url=os.environ["DOCKER_HOST"], version="auto")
    base = base_image(client)
    client.close()
    from flows.release import release  # after PREFECT_API_URL is set
    from tasks.core import progress

    builds: list[str] = []
    progress.subscribe(lambda item, state, _: builds.append(item) if state == "building" else None)

    def source(images: tuple[str, ...], sleep: Callable[[str], float] = sleeps.__getitem__) -> SampleSource:
        return make_sample_source(work / uuid.uuid4().hex[:8], images=images, nonce=uuid.uuid4().hex,
                                  sleeps={name: sleep(name) for name in images}, base=base, sleep_url=sleeper.url)

    def timed(src: SampleSource, registry_path: str, **kwargs: Any) -> float:
        began = time.perf_counter()
        release(tag=src.tag, source=str(src.path), config=str(src.config), registry=registry_path,
                retry_base_delay=0.2, **kwargs)
        return time.perf_counter() - began

    def fresh_path(host: str = proxy.host) -> str:
        return f"{host}/b{uuid.uuid4().hex[:8]}/fma"

    runs: dict[str, list[float]] = {"full": [], "single": [], "rerelease": [], "resume": [], "sequential": [],
                                    "signed": [], "unsigned_direct": [], "signed_proxy": []}
    keys = work / "keys"
    keys.mkdir()
    subprocess.run([tools.tool("cosign"), "generate-key-pair"], cwd=keys, capture_output=True, check=True,
                   env={**os.environ, "COSIGN_PASSWORD": KEY_PASSWORD}, timeout=120)

    def signed(src: SampleSource, registry_path: str) -> float:
        os.environ.update({"FMA_SIGNING_KEY": str(keys / "cosign.key"), "FMA_SIGNING_PASSWORD": KEY_PASSWORD})
        try:
            return timed(src, registry_path)
        finally:
            for name in ("FMA_SIGNING_KEY", "FMA_SIGNING_PASSWORD"):
                os.environ.pop(name, None)

    resume_builds: list[int] = []
    cpu: dict[str, float] = {}
    try:
        if not args.quick:
            # warm-up: first-run costs are not a release's; a host that released before knows how long each
            # build took (the order the next release starts its builds in: flows/chains.py)
            timed(source(FMA_IMAGES), fresh_path())
            # ...nor a signing host's: its first signed release notes the key's public half (state directory)
            signed(source((slowest,)), fresh_path(registry.host))
        for _ in range(reps):
            src, path = source(FMA_IMAGES), fresh_path()
            runs["full"].append(timed(src, path))
            runs["rerelease"].append(timed(src, path))
            # Each image alone, one after another (P5); the slowest one's release alone is P1's measure too.
            alone = {name: timed(source((name,)), fresh_path()) for name in FMA_IMAGES}
            runs["single"].append(alone[slowest])
            runs["sequential"].append(sum(alone.values()))
            runs["unsigned_direct"].append(timed(source(FMA_IMAGES), fresh_path(registry.host)))
            runs["signed"].append(signed(source(FMA_IMAGES), fresh_path(registry.host)))
            runs["signed_proxy"].append(signed(source(FMA_IMAGES), fresh_path()))

            src, path = source(FMA_IMAGES), fresh_path()
            proxy.add(Rule(repo_suffix=f"/{slowest}", op="manifest_put", status=503))
            try:
                timed(src, path, push_attempts=1)
            except Exception as err:  # expected: the injected fault fails the first run
                if slowest not in str(err):
                    raise CannotMeasure(f"the faulty run failed for another reason: {err}") from err
            else:
                raise CannotMeasure("the run with a failing push succeeded")
            finally:
                proxy.clear()
            builds.clear()
            runs["resume"].append(timed(src, path))
            resume_builds.append(len(builds))
        for count in p4_counts:
            names = tuple(f"image-{i:02d}" for i in range(count))
            src = source(names, lambda _: p4_sleep)
            before = cpu_seconds(pids)
            runs[f"p4_{count}"] = [timed(src, fresh_path())]
            after = cpu_seconds(pids)
            cpu = {name: after[name] - before.get(name, 0.0) for name in after}  # the largest release's
    except CannotMeasure as err:
        print(f"cannot measure: {err}", file=sys.stderr)
        return 1
    finally:
        sleeper.stop()
        proxy.stop()
        registry.stop()
        from prefect.logging.handlers import APILogHandler

        APILogHandler().flush()  # send the last run logs before the server goes away
        if server is not None:
            stop_prefect_server(server)
        if own_engine is not None:
            own_engine.stop()
    if any(resume_builds):
        print(f"cannot measure P3: the resume rebuilt {resume_builds} image(s)", file=sys.stderr)
        return 1

    med = {name: statistics.median(values) for name, values in runs.items()}
    ratios = {
        "p1": med["full"] / med["single"],
        "p2": med["rerelease"] / med["full"],
        "p3": med["resume"] / med["full"],
        "p5": med["full"] / med["sequential"],
        "p6": med["signed"] / med["unsigned_direct"],
    }
    through_proxy = med["signed_proxy"] / med["full"]
    if p4_counts:
        first, last = p4_counts[0], p4_counts[-1]
        ratios["p4"] = (med[f"p4_{last}"] - med[f"p4_{first}"]) / (last - first)
    figures = {
        "reps": reps, "sleeps_s": sleeps, "sum_of_sleeps_s": sum(sleeps.values()),
        "median_s": med, "runs_s": runs, "resume_rebuilds": resume_builds,
        "p4_counts": p4_counts, "p4_sleep_s": p4_sleep,
        "cpu_s_largest_p4_release": cpu,
        "p6_through_the_proxy": through_proxy,
        "ratios": ratios, "targets": {k: TARGETS[k] for k in ratios},
        "met": {k: ratios[k] <= TARGETS[k] for k in ratios},
    }

    rows = [
        ("builds sleep (s)", ", ".join(str(v) for v in sleeps.values())),
        ("sequential estimate: sum of sleeps (s)", f"{sum(sleeps.values()):.2f}"),
        ("full release, 4 images (s)", f"{med['full']:.2f}"),
        ("slowest image released alone (s)", f"{med['single']:.2f}"),
        ("re-release of the published tag (s)", f"{med['rerelease']:.2f}"),
        ("resume after one failed push (s)", f"{med['resume']:.2f}"),
        ("rebuilds during the resume", str(sum(resume_builds))),
        (f"P1 full / slowest alone (target <= {TARGETS['p1']})", f"{ratios['p1']:.3f}"),
        (f"P2 re-release / full (target <= {TARGETS['p2']})", f"{ratios['p2']:.3f}"),
        (f"P3 resume / full (target <= {TARGETS['p3']})", f"{ratios['p3']:.3f}"),
        ("the four released one after another (s)", f"{med['sequential']:.2f}"),
        (f"P5 full / one after another (target <= {TARGETS['p5']})", f"{ratios['p5']:.3f}"),
        ("full release unsigned, straight to the registry (s)", f"{med['unsigned_direct']:.2f}"),
        ("full release signed, straight to the registry (s)", f"{med['signed']:.2f}"),
        (f"P6 signed / unsigned (target <= {TARGETS['p6']})", f"{ratios['p6']:.3f}"),
        ("signed / unsigned, both through the proxy (reference)", f"{through_proxy:.3f}"),
    ]
    if p4_counts:
        rows += [(f"release of {n} images, builds sleep {p4_sleep:g} s (s)", f"{med[f'p4_{n}']:.2f}")
                 for n in p4_counts]
        rows += [(f"P4 seconds per extra image (target <= {TARGETS['p4']})", f"{ratios['p4']:.3f}")]
        rows += [(f"CPU s in the {p4_counts[-1]}-image release: {name}", f"{value:.2f}")
                 for name, value in cpu.items()]
    report(figures, rows, reps, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
