"""Promotion benchmarks: a signed release of the FMA-shaped sample promoted within its registry and to
another one, each against the release's own push time, in one run.

- R: the release's own push time: the wall-clock time during which the release was pushing an image
  or a chart (the union of every push's interval, from its "pushing" report to its "pushed"), out of a
  signed release of the FMA-shaped sample (devkit/fma_sample.py: two ko indexes of two platforms, a
  two-platform BuildKit image, a single-platform one, the source's chart).
- PR1: promotion to another path of the same registry / R. The whole promotion: the preflight, every
  image copied with its signatures and attestations (blobs mounted), the chart packaged for the
  destination, pushed and signed, and the destination verified as `fma-release verify` would.
- PR2: the same to a second registry (blobs read and uploaded) / R.
- PR1c, PR2c: the copy alone (the union of the images' "copying" to "copied" intervals) / R; PR1c's
  target is 1: a copy that sends no blob should cost less than the push it stands for.
- Also shown: where a promotion's time goes (preflight, chart packaging, chart push, chart signing, verify),
  medians.
- B1: blob bytes uploaded again by a promotion within one registry, into the images' repositories
  (counted by a proxy in front of the registry, in a promotion of its own, not timed): must be 0.

Runs on local parts: a Distribution registry and a second one, a Prefect server of its own unless
PREFECT_API_URL is set, the machine's Docker engine for the sample's bases and BuildKit images.

    .venv/bin/python bench/promote_bench.py [--reps 3] [--quick] [--json bench/results-promote.json]

Exits non-zero when it cannot measure (a release or promotion that should succeed fails), never
because the machine is slow.
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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devkit.faultproxy import FaultProxy  # noqa: E402
from devkit.fma_sample import make_fma_source, push_fma_bases  # noqa: E402
from devkit.prefect_server import start_prefect_server, stop_prefect_server  # noqa: E402
from devkit.registry import RegistryProcess, free_port  # noqa: E402
from devkit.report import report  # noqa: E402
from tasks.core import tools  # noqa: E402

KEY_PASSWORD = "promote-bench"  # noqa: S105 - a throwaway key made for this run
# The copy within one registry sends no blob, so it should cost less than the push it replaces; the whole
# promotion adds fixed costs (the key opened and checked, the destination verified: tens of cosign processes)
# and the copy to another registry sends every byte again: both shown, with no target.
TARGETS = {"pr1c": 1.0, "b1": 0}
PUSH_START = {"pushing"}
PUSH_END = {"pushed", "already published", "index pushed", "failed"}
COPY_START = {"copying", "retrying"}
COPY_END = {"copied", "already published", "failed"}


PHASES = {  # where a promotion's time goes: (item, start states, end states); "*": any item but the run
    "preflight": ("run", {"started"}, {"copying"}),
    "chart packaging": ("chart", {"packaging"}, {"packaged"}),
    "chart push": ("chart", {"pushing"}, {"pushed", "already published"}),
    "chart signing": ("chart", {"signing"}, {"signed", "already signed"}),
    "verify": ("verify", {"verifying"}, {"verified"}),
}


class CannotMeasure(Exception):
    pass


def phases(reports: Sequence[tuple[float, str, str]]) -> dict[str, float]:
    """Seconds in each phase of one promotion, from its progress reports (the first start to the last end)."""
    found = {}
    for name, (kind, starts, ends) in PHASES.items():
        if name == "preflight":  # from the flow's start to the first image copy
            began = [at for at, item, state in reports if item == "run" and state in starts]
            ended = [min((at for at, _, state in reports if state in ends), default=0.0)]
        else:
            mine = [(at, state) for at, item, state in reports
                    if (item == kind if kind != "chart" else item.startswith("chart "))]
            began = [at for at, state in mine if state in starts]
            ended = [at for at, state in mine if state in ends]
        found[name] = max(ended) - min(began) if began and ended else 0.0
    return found


def busy_time(reports: Sequence[tuple[float, str, str]], starts: set[str], ends: set[str],
              items: set[str] | None = None) -> float:
    """The union of each item's intervals from a start state to its next end state: seconds something was busy."""
    opened: dict[str, float] = {}
    spans: list[tuple[float, float]] = []
    for at, item, state in reports:
        if items is not None and item not in items:
            continue
        if state in starts and item not in opened:
            opened[item] = at
        elif state in ends and item in opened:
            spans.append((opened.pop(item), at))
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one repetition")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results-promote.json")
    args = parser.parse_args()
    reps = 1 if args.quick else args.reps

    work = Path(tempfile.mkdtemp(prefix="fma-promote-bench-"))
    server = None
    if not os.environ.get("PREFECT_API_URL"):
        began = time.perf_counter()
        server, url = start_prefect_server(work / "prefect")
        os.environ["PREFECT_API_URL"] = url
        print(f"started a Prefect server in {time.perf_counter() - began:.1f} s (not measured)", file=sys.stderr)
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    os.environ["FMA_STATE_DIR"] = str(work / "state")
    first = RegistryProcess(work / "registry-a", free_port()).start()
    second = RegistryProcess(work / "registry-b", free_port()).start()
    proxy = FaultProxy("127.0.0.1", first.port).start()
    keys = work / "keys"
    keys.mkdir()
    subprocess.run([tools.tool("cosign"), "generate-key-pair"], cwd=keys, capture_output=True, check=True,
                   env={**os.environ, "COSIGN_PASSWORD": KEY_PASSWORD}, timeout=120)
    os.environ.update({"FMA_SIGNING_KEY": str(keys / "cosign.key"), "FMA_SIGNING_PASSWORD": KEY_PASSWORD})

    from flows.promote import promote  # after PREFECT_API_URL is set
    from flows.release import release
    from tasks.core import progress

    reports: list[tuple[float, str, str]] = []
    progress.subscribe(lambda item, state, _: reports.append((time.perf_counter(), item, str(state))))
    runs: dict[str, list[float]] = {name: [] for name in ("release", "push", "within", "across", "within_copy",
                                                           "across_copy")}
    uploaded_again: list[int] = []
    spent: dict[str, list[float]] = {f"{route} {name}": [] for route in ("within", "across") for name in PHASES}
    try:
        bases = push_fma_bases(f"{first.host}/fma-bases")
        for rep in range(reps):
            src = make_fma_source(work / f"fma-{rep}", bases=bases)
            registry = f"{first.host}/r{uuid.uuid4().hex[:8]}/fma"
            reports.clear()
            began = time.perf_counter()
            released = release(tag=src.tag, source=str(src.path), registry=registry, retry_base_delay=0.2)
            runs["release"].append(time.perf_counter() - began)
            if not released.signed:
                raise CannotMeasure("the release was not signed")
            runs["push"].append(busy_time(reports, PUSH_START, PUSH_END))
            names = {image.name for image in released.images}
            for route, to in (("within", f"{first.host}/p{uuid.uuid4().hex[:8]}/fma"),
                              ("across", f"{second.host}/p{uuid.uuid4().hex[:8]}/fma")):
                reports.clear()
                began = time.perf_counter()
                promoted = promote(tag=src.tag, from_registry=registry, to_registry=to, retry_base_delay=0.2)
                runs[route].append(time.perf_counter() - began)
                runs[f"{route}_copy"].append(busy_time(reports, COPY_START, COPY_END, names))
                for name, seconds in phases(reports).items():
                    spent[f"{route} {name}"].append(seconds)
                if [i.digest for i in promoted.images] != [i.digest for i in released.images]:
                    raise CannotMeasure(f"the promotion {route} changed a digest")
            # Within one registry again, through a proxy that counts every byte sent to it (not timed: the proxy
            # is slower than the registry).
            source = f"{proxy.host}/{registry.split('/', 1)[1]}"
            to = f"{proxy.host}/c{uuid.uuid4().hex[:8]}/fma"
            promote(tag=src.tag, from_registry=source, to_registry=to, retry_base_delay=0.2)
            repositories = {f"{to.split('/', 1)[1]}/{name}" for name in names}
            uploaded_again.append(sum(size for (repo, op), (_, size) in proxy.snapshot().items()
                                      if repo in repositories and op in ("upload_patch", "blob_put")))
    except CannotMeasure as err:
        print(f"cannot measure: {err}", file=sys.stderr)
        return 1
    except Exception as err:
        print(f"cannot measure: a release or promotion failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    finally:
        proxy.stop()
        first.stop()
        second.stop()
        from prefect.logging.handlers import APILogHandler

        APILogHandler().flush()
        if server is not None:
            stop_prefect_server(server)

    med = {name: statistics.median(values) for name, values in runs.items()}
    ratios = {"pr1": med["within"] / med["push"], "pr2": med["across"] / med["push"],
              "pr1c": med["within_copy"] / med["push"], "pr2c": med["across_copy"] / med["push"]}
    med_phases = {name: statistics.median(values) for name, values in spent.items()}
    figures: dict[str, Any] = {
        "reps": reps, "median_s": med, "runs_s": runs, "ratios": ratios, "blob_bytes_uploaded_again": uploaded_again,
        "phases_median_s": med_phases,
        "targets": TARGETS,
        "met": {"pr1c": ratios["pr1c"] <= TARGETS["pr1c"], "b1": max(uploaded_again) == 0},
    }
    rows = [
        ("signed release of the FMA sample (s)", f"{med['release']:.2f}"),
        ("R: its push time, images and chart (s)", f"{med['push']:.2f}"),
        ("promotion within the registry (s)", f"{med['within']:.2f}"),
        ("  of which copying the images (s)", f"{med['within_copy']:.2f}"),
        *((f"  of which {name} (s)", f"{med_phases[f'within {name}']:.2f}") for name in PHASES),
        ("promotion to a second registry (s)", f"{med['across']:.2f}"),
        ("  of which copying the images (s)", f"{med['across_copy']:.2f}"),
        *((f"  of which {name} (s)", f"{med_phases[f'across {name}']:.2f}") for name in PHASES),
        ("PR1 within / R", f"{ratios['pr1']:.3f}"),
        ("PR2 across / R", f"{ratios['pr2']:.3f}"),
        (f"PR1c copy within / R (target <= {TARGETS['pr1c']})", f"{ratios['pr1c']:.3f}"),
        ("PR2c copy across / R", f"{ratios['pr2c']:.3f}"),
        ("B1 blob bytes uploaded again within (target 0)", str(max(uploaded_again))),
    ]
    report(figures, rows, reps, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
