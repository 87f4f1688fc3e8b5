"""fma-release against upstream's own commands, on the FMA-shaped sample, warm and cold; ratios of one run.

The same work three ways, each into a registry namespace of its own:

- **release**: ``fma-release run TAG`` signed (a cosign key made for the run), as a user runs it;
- **by hand**: the fastest way upstream's tools allow, every image's chain in a thread of its own:
  ``ko build -B ./cmd/<name> --platform all`` for both controllers (pushing), BuildKit through the
  docker CLI for requester (one build per platform, pushed, joined by ``docker manifest``) and launcher,
  then ``cosign sign`` and ``cosign attest`` (a provenance predicate and syft's SBOM) of each image's
  manifests as soon as that image is pushed; once every image is signed, Helm's package and push of
  the chart (Helm's own SDK) and ``cosign sign`` of it;
- **sequential**: the same commands one after the other, as the seed's workflow ran its steps.

Printed ratios: release / by hand (target at most 1.10), release / the slowest single chain by hand,
sequential / by hand. **Cold** runs start with BuildKit's cache pruned and empty Go build caches for
both sides (the release's is its build user's); **warm** runs follow a release and a by-hand run of the same
source that filled each side's.

    .venv/bin/python bench/vs_upstream.py [--reps 1] [--json bench/results-vs-upstream.json]

Uses PREFECT_API_URL when set, else starts a Prefect server of its own; starts its own Distribution
registry. Exits non-zero when it cannot measure (a step fails), never because the machine is slow.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import helm_python as helm  # noqa: E402

from devkit.fma_sample import FmaSample, make_fma_source, push_fma_bases  # noqa: E402
from devkit.prefect_server import start_prefect_server, stop_prefect_server  # noqa: E402
from devkit.registry import RegistryProcess, free_port  # noqa: E402
from devkit.report import report  # noqa: E402
from tasks.core import tools  # noqa: E402
from tasks.core.sandbox import build_user  # noqa: E402
from tasks.helm.chart import set_image_values  # noqa: E402
from tasks.oci.registry import RegistryAPI  # noqa: E402

TARGET = 1.10
PASSWORD = "bench-vs-upstream"  # noqa: S105 - a throwaway key made for this run
DOCKER = "/usr/bin/docker"  # Debian's CLI drives dockerd's BuildKit (docs/buildkit.md)
KO_IMAGES = ("dual-pods-controller", "launcher-populator")


class CannotMeasure(Exception):
    pass


def sh(argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """Run a command; its stdout and stderr, or :class:`CannotMeasure` naming it."""
    done = subprocess.run(argv, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=1800, check=False)
    if done.returncode != 0:
        raise CannotMeasure(f"{' '.join(argv[:4])} failed ({done.returncode}): {(done.stderr or done.stdout)[-800:]}")
    return done.stdout + done.stderr


class ByHand:
    """Upstream's commands for one namespace: each image's chain, then the chart."""

    def __init__(self, src: FmaSample, registry: str, key: Path, env: dict[str, str]) -> None:
        self.src, self.registry, self.key, self.env = src, registry, key, env
        self.tmp = Path(tempfile.mkdtemp(prefix="fma-vs-upstream-"))
        self.chains: dict[str, float] = {}
        self._lock = threading.Lock()

    def _cosign(self, *args: str) -> None:
        sh([tools.tool("cosign"), *args], env={**self.env, "COSIGN_PASSWORD": PASSWORD})

    def _digest(self, name: str, tag: str) -> str:
        host, _, path = self.registry.partition("/")
        with RegistryAPI(host) as api:
            found = api.digest(f"{path}/{name}", tag)
        if not found:
            raise CannotMeasure(f"{name}:{tag} is not in the registry")
        return found

    def sign(self, name: str, tag: str) -> None:
        """cosign sign and attest (provenance, and syft's SBOM per platform) of the image's manifests."""
        repo = f"{self.registry}/{name}"
        top = self._digest(name, tag)
        host, _, path = self.registry.partition("/")
        with RegistryAPI(host) as api:
            found = api.manifest(f"{path}/{name}", top)
        assert found is not None
        platforms = [m["digest"] for m in found[1].get("manifests") or []]
        predicate = self.tmp / f"{name}-provenance.json"
        predicate.write_text(json.dumps({"buildDefinition": {"buildType": "by-hand", "externalParameters": {
            "tag": tag, "image": repo}}, "runDetails": {"builder": {"id": "by-hand"}}}))

        def one(digest: str, sbom: bool) -> None:
            ref = f"{repo}@{digest}"
            self._cosign("sign", "--key", str(self.key), "--tlog-upload=false", "--yes",
                         "--allow-insecure-registry", ref)
            self._cosign("attest", "--key", str(self.key), "--tlog-upload=false", "--yes", "--allow-insecure-registry",
                         "--type", "slsaprovenance1", "--predicate", str(predicate), ref)
            if sbom:
                out = self.tmp / f"{digest.removeprefix('sha256:')}.spdx.json"
                sh([tools.tool("syft"), "scan", f"registry:{ref}", "-o", f"spdx-json={out}", "-q"],
                   env={**self.env, "SYFT_REGISTRY_INSECURE_USE_HTTP": "true", "SYFT_CHECK_FOR_APP_UPDATE": "false"})
                self._cosign("attest", "--key", str(self.key), "--tlog-upload=false", "--yes",
                             "--allow-insecure-registry", "--type", "spdxjson", "--predicate", str(out), ref)

        jobs = [(top, not platforms), *((d, True) for d in platforms)]
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            list(pool.map(lambda job: one(*job), jobs))

    def ko(self, name: str) -> None:
        env = {**self.env, "KO_DOCKER_REPO": self.registry, "KO_GO_PATH": tools.go_binary()}
        if name == "dual-pods-controller":  # upstream's coverage build: GOFLAGS="-cover -coverpkg=$(go list ...)"
            listed = subprocess.run([tools.go_binary(), "list", "./..."], cwd=self.src.path, capture_output=True,
                                    text=True, timeout=300, check=True).stdout.split()
            env["GOFLAGS"] = "-cover -coverpkg=" + ",".join(p for p in listed if "pkg/generated/" not in p)
        sh([tools.tool("ko"), "build", f"./cmd/{name}", "-B", "--platform=all", f"--tags={self.src.tag}",
            "--insecure-registry", "--sbom=none"], cwd=self.src.path, env=env)

    def buildkit(self, name: str, dockerfile: str, platforms: list[str]) -> None:
        ref = f"{self.registry}/{name}:{self.src.tag}"

        def one(platform: str) -> str:
            tag = f"{ref}-{platform.replace('/', '-')}" if len(platforms) > 1 else ref
            sh([DOCKER, "build", "--platform", platform, "-f", dockerfile, "-t", tag, "."], cwd=self.src.path,
               env={**self.env, "DOCKER_BUILDKIT": "1"})
            sh([DOCKER, "push", "-q", tag], env=self.env)
            return tag

        with ThreadPoolExecutor(max_workers=len(platforms)) as pool:
            tags = list(pool.map(one, platforms))
        if len(platforms) > 1:
            sh([DOCKER, "manifest", "create", "--insecure", "--amend", ref, *tags], env=self.env)
            sh([DOCKER, "manifest", "push", "--insecure", "--purge", ref], env=self.env)

    def chain(self, name: str, build: Callable[[], None]) -> None:
        started = time.monotonic()
        build()
        self.sign(name, self.src.tag)
        with self._lock:
            self.chains[name] = time.monotonic() - started

    def steps(self) -> list[tuple[str, Callable[[], None]]]:
        return [
            *((name, lambda name=name: self.ko(name)) for name in KO_IMAGES),
            ("requester", lambda: self.buildkit("requester", "dockerfiles/Dockerfile.requester",
                                                ["linux/amd64", "linux/arm64"])),
            ("launcher", lambda: self.buildkit("launcher", "dockerfiles/Dockerfile.launcher.benchmark",
                                               ["linux/amd64"])),
        ]

    def chart(self) -> None:
        started = time.monotonic()
        staged = self.tmp / "chart" / "fma-controllers"
        shutil.copytree(self.src.path / "charts" / "fma-controllers", staged)
        values = staged / "values.yaml"
        values.write_text(set_image_values(values.read_text(), self.registry, self.src.tag))
        archive = helm.package(staged, destination=self.tmp, version=self.src.tag.removeprefix("v"),
                               app_version=self.src.tag)
        client = helm.RegistryClient(plain_http=True, credentials_file=self.tmp / "helm.json")
        try:
            client.push(Path(archive), f"oci://{self.registry}/charts", plain_http=True)
        finally:
            client.close()
        digest = self._digest("charts/fma-controllers", self.src.tag.removeprefix("v"))
        self._cosign("sign", "--key", str(self.key), "--tlog-upload=false", "--yes", "--allow-insecure-registry",
                     f"{self.registry}/charts/fma-controllers@{digest}")
        self.chains["chart"] = time.monotonic() - started

    def parallel(self) -> float:
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = [pool.submit(self.chain, name, build) for name, build in self.steps()]
            for future in futures:
                future.result()
        self.chart()
        return time.monotonic() - started

    def sequential(self) -> float:
        started = time.monotonic()
        for name, build in self.steps():
            self.chain(name, build)
        self.chart()
        return time.monotonic() - started


def release(src: FmaSample, registry: str, key: Path, env: dict[str, str]) -> float:
    started = time.monotonic()
    said = sh([str(ROOT / ".venv" / "bin" / "fma-release"), "run", src.tag, "--source", str(src.path),
               "--registry", registry, "--retry-delay", "0.2"],
              env={**env, "FMA_SIGNING_KEY": str(key), "FMA_SIGNING_PASSWORD": PASSWORD})
    took = time.monotonic() - started
    print(f"    {said.strip().splitlines()[-1]}", flush=True)  # the CLI's own line: where the time went
    return took


def cold(env: dict[str, str], scratch: Path) -> dict[str, str]:
    """Empty Go build caches and BuildKit's cache pruned: nothing compiled or built before helps either side.
    By hand: a new GOCACHE (ko's own KOCACHE is left unset, as upstream's Makefile leaves it). The release: its
    build user's Go build cache emptied (a root release compiles as that user, with the cache in its home)."""
    sh([DOCKER, "builder", "prune", "-af"], env={**env, "DOCKER_BUILDKIT": "1"})
    user = build_user()
    if user is not None:
        shutil.rmtree(user.home / ".cache" / "go-build", ignore_errors=True)
    return {**env, "GOCACHE": str(scratch / uuid.uuid4().hex[:8] / "gocache")}


def measure(reps: int, registry: RegistryProcess, key: Path, scratch: Path) -> dict[str, list[float]]:
    figures: dict[str, list[float]] = {}
    bases = push_fma_bases(f"{registry.host}/bases")
    base_env = {"DOCKER_CONFIG": str(scratch / "docker"), "FMA_STATE_DIR": str(scratch / "state")}
    (scratch / "docker").mkdir(exist_ok=True)
    for rep in range(reps):
        for mode in ("cold", "warm"):
            src = make_fma_source(scratch / f"src-{rep}-{mode}", bases=bases)
            env = cold(base_env, scratch) if mode == "cold" else dict(base_env)
            if mode == "warm":  # fill both sides' caches with this very source first
                release(src, f"{registry.host}/warmup-{rep}", key, env)
                ByHand(src, f"{registry.host}/warmup-hand-{rep}", key, env).parallel()
            order = ("release", "by hand") if rep % 2 == 0 else ("by hand", "release")
            for side in order:
                run_env = cold(base_env, scratch) if mode == "cold" else env
                namespace = f"{registry.host}/{side.replace(' ', '-')}-{mode}-{rep}"
                if side == "release":
                    took = release(src, namespace, key, run_env)
                else:
                    hand = ByHand(src, namespace, key, run_env)
                    took = hand.parallel()
                    figures.setdefault(f"{mode} slowest chain", []).append(max(hand.chains.values()))
                figures.setdefault(f"{mode} {side}", []).append(took)
                print(f"  {mode} rep {rep}: {side} {took:.1f}s", flush=True)
            if mode == "warm":
                hand = ByHand(src, f"{registry.host}/sequential-{rep}", key, env)
                figures.setdefault("warm sequential", []).append(hand.sequential())
                print(f"  warm rep {rep}: sequential {figures['warm sequential'][-1]:.1f}s", flush=True)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="fma-vs-upstream-"))
    server = None
    if not os.environ.get("PREFECT_API_URL"):
        server, url = start_prefect_server(scratch / "prefect")
        os.environ["PREFECT_API_URL"] = url
    registry = RegistryProcess(scratch / "registry", free_port()).start()
    try:
        keys = scratch / "keys"
        keys.mkdir()
        subprocess.run([tools.tool("cosign"), "generate-key-pair"], cwd=keys, capture_output=True, check=True,
                       env={**os.environ, "COSIGN_PASSWORD": PASSWORD}, timeout=120)
        raw = measure(args.reps, registry, keys / "cosign.key", scratch)
    except CannotMeasure as err:
        print(f"vs_upstream: cannot measure: {err}", file=sys.stderr)
        return 1
    finally:
        registry.stop()
        if server is not None:
            stop_prefect_server(server)
        shutil.rmtree(scratch, ignore_errors=True)
    med = {name: statistics.median(values) for name, values in raw.items()}
    figures = {
        "warm release / by hand": med["warm release"] / med["warm by hand"],
        "cold release / by hand": med["cold release"] / med["cold by hand"],
        "warm release / slowest chain": med["warm release"] / med["warm slowest chain"],
        "cold release / slowest chain": med["cold release"] / med["cold slowest chain"],
        "warm sequential / by hand": med["warm sequential"] / med["warm by hand"],
    }
    rows = [(name, f"{value:.2f}" + (f" (target <= {TARGET})" if "/ by hand" in name and "sequential" not in name
                                     else "")) for name, value in figures.items()]
    rows += [(f"{name} (s)", f"{value:.1f}") for name, value in med.items()]
    report({**figures, **{f"{k} seconds": v for k, v in med.items()}}, rows, args.reps,
           args.json or ROOT / "bench" / "results-vs-upstream.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
