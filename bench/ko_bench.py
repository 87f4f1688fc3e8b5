"""K1: a Go main built for linux/arm64 by ko (cross-compiled) against the same main for linux/amd64.

Measured in one run, for one small Go main (two packages, no external modules):

- (a) ko, linux/amd64 only, and (b) ko, linux/arm64 only, through tasks.builders.ko.build_with_ko,
  each with a new, empty Go build cache (the standard library compiled too, as on a new worker),
  and again with a warm cache and a changed main (only the main's packages compiled);
- (c) the same main built for linux/arm64 from a Dockerfile by the engine's legacy builder, its
  RUN step emulated by qemu. No golang image can be pulled here: the bench makes one FROM scratch
  with the arm64 busybox and an arm64 Go toolchain of the machine's Go version, fetched from the Go
  module proxy as the module golang.org/toolchain (what GOTOOLCHAIN switching downloads);
- (d) the same Dockerfile for linux/amd64, natively, FROM an image of the machine's own GOROOT.

Ratios: K1 = b/a with a cold cache (target <= 1.3), the same warm, c/b (what emulation costs
against ko) and d/a (a Dockerfile build against ko, both native).

    .venv/bin/python bench/ko_bench.py [--reps 1] [--quick] [--json bench/results-ko.json]

``--quick`` measures (a) and (b) warm only, and no Dockerfile build (about 30 s). The golang
images hold what ``go build`` needs of a GOROOT (no src/cmd, tests or docs: about half of it).
Needs ko (.local/bin/ko), Go, dockerd, and scripts/setup.sh's arm64 support for (c).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devkit.multiarch import BUSYBOXES, busybox_index  # noqa: E402
from devkit.registry import RegistryProcess, free_port  # noqa: E402
from devkit.report import report  # noqa: E402
from tasks.builders.ko import KoBuild, build_with_ko  # noqa: E402
from tasks.core import cmd  # noqa: E402

TARGET = 1.3
WARM_TIMES = 5  # a warm ko build takes well under a second: its median is taken over 5 builds a repetition
GO_MOD = "module example.test/kobench\n\ngo 1.22\n"
# The nonce comment changes the source, so Go compiles the package again (its cache keys on content).
GREET = (
    'package greet\n\nimport "runtime"\n\n// Arch names the CPU (nonce {nonce}).\n'
    "func Arch() string {{ return runtime.GOARCH }}\n"
)
MAIN = 'package main\n\nimport "example.test/kobench/internal/greet"\n\nfunc main() { println(greet.Arch()) }\n'
# COPY first: the legacy builder's platform check trips on an ENV before it (FROM scratch).
GOLANG_DOCKERFILE = """FROM scratch
COPY busybox /bin/busybox
COPY go /usr/local/go
ENV PATH=/usr/local/go/bin:/bin GOROOT=/usr/local/go GOCACHE=/root/.cache/go-build HOME=/root CGO_ENABLED=0
"""
BUILD_DOCKERFILE = """FROM {golang}
COPY src /src
WORKDIR /src
RUN ["/bin/busybox", "sh", "-c", "mkdir -p /tmp && go build -trimpath -o /out/hello ./cmd/hello && /out/hello"]
"""
LABEL = "org.llm-d.fma-release.bench"


class Log:
    def info(self, msg: str, *args: object) -> None:
        logging.getLogger("ko_bench").debug(msg, *args)

    debug = info


def write_source(root: Path) -> Path:
    """The bench's Go module with a new nonce (so that its packages are compiled again)."""
    nonce = uuid.uuid4().hex[:8]
    for path, text in {"go.mod": GO_MOD, "internal/greet/greet.go": GREET.format(nonce=nonce),
                       "cmd/hello/main.go": MAIN}.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


def go_env(name: str) -> str:
    return cmd.run(["go", "env", name], what=f"read go env {name}", fix="install Go").strip()


def arm64_toolchain(version: str) -> tuple[Path | None, str]:
    """The arm64 GOROOT of ``version`` as the module proxy serves it (module cache dir); or why not."""
    module = f"golang.org/toolchain@v0.0.1-{version}.linux-arm64"
    env = {**os.environ, "GOMODCACHE": str(ROOT / ".local" / "go" / "mod"), "GOFLAGS": "-modcacherw"}
    try:
        out = cmd.run(["go", "mod", "download", "-json", module], env=env, timeout=900,
                      what=f"download the {module} module", fix="check GOPROXY")
    except Exception as err:  # the bench reports what it could not measure, and goes on
        return None, f"no arm64 Go toolchain: {err}"
    return Path(json.loads(out)["Dir"]), ""


def docker_build(client: Any, context: Path, tag: str, platform: str) -> None:
    """Build ``context`` with the legacy builder, no cache; raise on an error item in the stream."""
    for item in client.build(path=str(context), tag=tag, platform=platform, rm=True, forcerm=True, nocache=True,
                             decode=True, labels={LABEL: "1"}):
        if "error" in item or "errorDetail" in item:
            raise RuntimeError(f"docker build of {tag} failed: {item.get('error') or item.get('errorDetail')}")


_GO_TOOLS = {"compile", "link", "asm", "cgo"}  # what `go build` runs; vet, cover, fix... are for other commands


def _goroot_ignore(root: Path) -> Callable[[str, list[str]], set[str]]:
    """What a golang image for `go build` can leave out of a GOROOT: the toolchain's own sources
    (src/cmd), tests, docs and the tools go build does not run; about half of the 270 MB."""

    def ignore(directory: str, names: list[str]) -> set[str]:
        here = Path(directory)
        skipped = {n for n in names if n == "testdata" or n.endswith("_test.go")}
        if here == root:
            skipped |= {"test", "api", "doc", "misc", "lib"} & set(names)
        elif here == root / "src":
            skipped |= {"cmd"} & set(names)
        elif here.parent == root / "pkg" / "tool":
            skipped |= set(names) - _GO_TOOLS
        return skipped

    return ignore


def _link_or_copy(source: str, destination: str) -> object:
    """Hard-link a file into the build context (same filesystem), else copy it."""
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)
    return destination


def golang_image(client: Any, goroot: Path, busybox: Path, *, platform: str, work: Path) -> str:
    """A FROM scratch image holding busybox and (what `go build` needs of) ``goroot`` at /usr/local/go."""
    context = work / f"golang-{platform.replace('/', '-')}"
    context.mkdir()
    shutil.copy2(busybox, context / "busybox")
    shutil.copytree(goroot, context / "go", symlinks=True, ignore=_goroot_ignore(goroot),
                    copy_function=_link_or_copy)
    # A module zip keeps no file modes: the toolchain's commands are made executable again.
    for directory in (context / "go" / "bin", *(context / "go" / "pkg" / "tool").glob("linux_*")):
        for tool in directory.iterdir():
            tool.chmod(0o755)
    (context / "Dockerfile").write_text(GOLANG_DOCKERFILE)
    tag = f"fma-bench/golang:{platform.replace('/', '-')}-{uuid.uuid4().hex[:6]}"
    docker_build(client, context, tag, platform)
    shutil.rmtree(context)
    return tag


def dockerfile_build(client: Any, golang: str, platform: str, work: Path) -> float:
    """Seconds to build the bench's main FROM ``golang`` for ``platform`` (a fresh source, a cold cache)."""
    context = work / f"df-{uuid.uuid4().hex[:6]}"
    write_source(context / "src")
    (context / "Dockerfile").write_text(BUILD_DOCKERFILE.format(golang=golang))
    tag = f"fma-bench/hello:{uuid.uuid4().hex[:6]}"
    began = time.perf_counter()
    docker_build(client, context, tag, platform)
    took = time.perf_counter() - began
    client.remove_image(tag, force=True)
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="ko with a warm cache only, no Dockerfile builds")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results-ko.json")
    args = parser.parse_args()
    import docker
    import docker.errors

    work = Path(tempfile.mkdtemp(prefix="fma-bench-ko-"))
    registry = RegistryProcess(work / "registry", free_port()).start()
    client = docker.APIClient(version="auto")
    images: list[str] = []
    runs: dict[str, list[float]] = {}
    notes: list[str] = []
    saved_cache = os.environ.get("GOCACHE")
    setup_s = 0.0
    started = time.perf_counter()
    try:
        base = busybox_index(f"{registry.host}/bases").ref
        source_root = work / "src"
        source_root.mkdir()
        (source_root / ".ko.yaml").write_text(f"defaultBaseImage: {base}\n")

        def ko(platform: str, cache: Path) -> float:
            os.environ["GOCACHE"] = str(cache)
            write_source(source_root)
            build = KoBuild(name="hello", source=source_root, main="./cmd/hello", platforms=(platform,),
                            out=work / "out" / uuid.uuid4().hex[:6], sbom=False)
            began = time.perf_counter()
            build_with_ko(build, Log())
            return time.perf_counter() - began

        warm = work / "gocache-warm"
        ko("linux/amd64", warm)  # warm-up: the base is fetched once, the warm cache filled for both
        ko("linux/arm64", warm)
        measures: dict[str, Callable[[], float]] = {
            "ko_amd64_warm": lambda: ko("linux/amd64", warm),
            "ko_arm64_warm": lambda: ko("linux/arm64", warm),
        }
        times = {"ko_amd64_warm": WARM_TIMES, "ko_arm64_warm": WARM_TIMES}
        if not args.quick:
            measures |= {
                "ko_amd64_cold": lambda: ko("linux/amd64", work / f"gocache-{uuid.uuid4().hex[:6]}"),
                "ko_arm64_cold": lambda: ko("linux/arm64", work / f"gocache-{uuid.uuid4().hex[:6]}"),
            }
            began = time.perf_counter()
            version = go_env("GOVERSION")
            goroot_arm64, why = arm64_toolchain(version)
            amd64_golang = golang_image(client, Path(go_env("GOROOT")), BUSYBOXES["linux/amd64"],
                                       platform="linux/amd64", work=work)
            images.append(amd64_golang)
            measures["dockerfile_amd64_native"] = lambda: dockerfile_build(client, amd64_golang, "linux/amd64", work)
            if goroot_arm64 is None:
                notes.append(f"(c) not measured: {why}")
            else:
                arm64_golang = golang_image(client, goroot_arm64, BUSYBOXES["linux/arm64"], platform="linux/arm64",
                                            work=work)
                images.append(arm64_golang)
                measures["dockerfile_arm64_qemu"] = lambda: dockerfile_build(
                    client, arm64_golang, "linux/arm64", work)
            setup_s = time.perf_counter() - began
        for _ in range(args.reps):  # interleaved, so that a slower spell of the machine hits all alike
            for name, measure in measures.items():
                for _ in range(times.get(name, 1)):
                    runs.setdefault(name, []).append(measure())
    finally:
        if saved_cache is None:
            os.environ.pop("GOCACHE", None)
        else:
            os.environ["GOCACHE"] = saved_cache
        for tag in images:
            with contextlib.suppress(docker.errors.APIError):
                client.remove_image(tag, force=True)
        client.close()
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)

    med = {name: statistics.median(values) for name, values in runs.items()}
    ratios = {"k1_warm": med["ko_arm64_warm"] / med["ko_amd64_warm"]}
    if "ko_amd64_cold" in med:
        ratios["k1_cold"] = med["ko_arm64_cold"] / med["ko_amd64_cold"]
        ratios["dockerfile_amd64_over_ko_amd64"] = med["dockerfile_amd64_native"] / med["ko_amd64_cold"]
    if "dockerfile_arm64_qemu" in med:
        ratios["qemu_arm64_over_ko_arm64"] = med["dockerfile_arm64_qemu"] / med["ko_arm64_cold"]
    k1 = ratios.get("k1_cold", ratios["k1_warm"])
    figures = {"reps": args.reps, "quick": args.quick, "median_s": med, "runs_s": runs, "ratios": ratios,
               "golang_images_setup_s": setup_s, "total_s": time.perf_counter() - started,
               "targets": {"k1": TARGET}, "met": {"k1": k1 <= TARGET}, "notes": notes}
    labels = {
        "ko_amd64_cold": "(a) ko linux/amd64, cold Go cache (s)",
        "ko_arm64_cold": "(b) ko linux/arm64, cold Go cache (s)",
        "ko_amd64_warm": "(a) ko linux/amd64, warm cache, new main (s)",
        "ko_arm64_warm": "(b) ko linux/arm64, warm cache, new main (s)",
        "dockerfile_arm64_qemu": "(c) Dockerfile linux/arm64 under qemu (s)",
        "dockerfile_amd64_native": "(d) Dockerfile linux/amd64 native (s)",
    }
    rows = [(labels[name], f"{value:.2f}") for name, value in med.items()]
    rows += [
        *([(f"K1 arm64/amd64 with ko, cold (target <= {TARGET})", f"{ratios['k1_cold']:.3f}")]
          if "k1_cold" in ratios else []),
        ("K1 arm64/amd64 with ko, warm", f"{ratios['k1_warm']:.3f}"),
        *([("(c) qemu Dockerfile / (b) ko, arm64", f"{ratios['qemu_arm64_over_ko_arm64']:.2f}")]
          if "qemu_arm64_over_ko_arm64" in ratios else []),
        *([("(d) Dockerfile / (a) ko, amd64 native", f"{ratios['dockerfile_amd64_over_ko_amd64']:.2f}")]
          if "dockerfile_amd64_over_ko_amd64" in ratios else []),
    ]
    report(figures, rows, args.reps, args.json)
    print(f"golang images made in {setup_s:.1f} s; whole bench {figures['total_s']:.1f} s")
    for note in notes:
        print(note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
