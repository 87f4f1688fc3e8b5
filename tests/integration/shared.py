"""What a test run makes once and every test process reads: the FMA sample's bases, and one signed release
of the sample that the release, sample and signing tests all check.

A parallel run's workers are separate processes. :func:`once_per_run` lets the first one that asks make
the thing, under a file lock in the run's shared directory (tests/conftest.py), and record it as JSON;
the others wait on the lock and read the record. A failure is recorded too, so the others fail at once
with its message instead of making it again.

Tests that read the shared release hold :func:`release_lock` shared; the one test that changes it for a
moment (it points a tag at other content) holds it exclusively, so nobody reads it meanwhile.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import docker

from devkit.fma_sample import BaseImage, FmaBases, FmaSample, make_fma_source, push_fma_bases
from tasks.core import tools

PASSWORD = "pw-Zq81-never-in-a-log"


def shared_dir() -> Path:
    found = os.environ.get("FMA_TEST_SHARED")
    if not found:
        raise RuntimeError("FMA_TEST_SHARED is not set: run the tests with pytest from this project")
    return Path(found)


def once_per_run(name: str, make: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """``make(directory)``'s record, made by the first process of the run that asks and read by the others."""
    root = shared_dir()
    record = root / f"{name}.json"
    with (root / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not record.exists():
            directory = root / name
            directory.mkdir(exist_ok=True)
            try:
                made = {"value": make(directory)}
            except BaseException as err:
                made = {"error": f"{type(err).__name__}: {err}", "where": traceback.format_exc()[-3000:]}
                record.write_text(json.dumps(made))
                raise
            record.write_text(json.dumps(made))
    found: dict[str, Any] = json.loads(record.read_text())
    if "error" in found:
        raise RuntimeError(f"{name}, made once per run, failed where it was made: {found['error']}\n{found['where']}")
    value: dict[str, Any] = found["value"]
    return value


@contextlib.contextmanager
def release_lock(*, exclusive: bool = False) -> Iterator[None]:
    """Hold the shared release for reading (shared) or for a change (exclusive) until the block ends."""
    with (shared_dir() / "signed-release.rw").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield


def shared_prefect_template() -> Path:
    """A migrated SQLite database for the Prefect servers tests start for themselves, made once per run."""
    from devkit.prefect_server import save_sqlite_template

    record = once_per_run("prefect-sqlite", lambda directory: {
        "path": str(save_sqlite_template(directory / "prefect.db", directory / "home"))})
    return Path(record["path"])


# -- the bases -------------------------------------------------------------------------------------


def bases_of(record: dict[str, Any]) -> FmaBases:
    go = record.pop("go_builder")
    return FmaBases(go_builder=BaseImage(**go) if go else None, **{k: BaseImage(**v) for k, v in record.items()})


def shared_bases(registry_host: str) -> FmaBases:
    """The sample's four bases and the Go toolchain image, pushed once per run under ``fma-bases``."""
    return bases_of(once_per_run(
        "fma-bases", lambda _: asdict(push_fma_bases(f"{registry_host}/fma-bases", go_builder=True))))


# -- the signed release ----------------------------------------------------------------------------


def key_pair(directory: Path, password: str) -> tuple[Path, Path]:
    """A cosign key pair made by the real cosign, protected by ``password``."""
    directory.mkdir(parents=True, exist_ok=True)
    made = subprocess.run([tools.tool("cosign"), "generate-key-pair"], cwd=directory, capture_output=True, text=True,
                          env={**os.environ, "COSIGN_PASSWORD": password}, timeout=120, check=False)
    assert made.returncode == 0, made.stderr
    return directory / "cosign.key", directory / "cosign.pub"


def fma_release(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The real CLI in its own process, with the signing settings in its environment only."""
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, timeout=1200,
                          check=False, env={**os.environ, **env})


@dataclass(frozen=True)
class Signed:
    """The run's signed release of the FMA sample: its source, registry path, summary, the CLI run that made it,
    the key pair, the run's state directory and the containers the engine created meanwhile."""

    src: FmaSample
    registry: str
    summary: dict[str, Any]
    run: subprocess.CompletedProcess[str]
    key: Path
    pub: Path
    state: Path
    created: list[dict[str, Any]]

    @property
    def env(self) -> dict[str, str]:
        return {"FMA_SIGNING_KEY": str(self.key), "FMA_SIGNING_PASSWORD": PASSWORD, "FMA_STATE_DIR": str(self.state)}

    def image_digests(self) -> list[tuple[str, str, bool]]:
        """(repository, digest, is a platform manifest) of every image manifest the summary lists."""
        found = []
        for image in self.summary["images"]:
            repo = image["ref"].rsplit(":", 1)[0]
            indexed = any(p["ref"] != image["ref"] for p in image["platforms"])
            found.append((repo, image["digest"], not indexed))
            if indexed:
                found += [(repo, p["digest"], True) for p in image["platforms"]]
        return found

    def chart_digests(self) -> list[tuple[str, str]]:
        return [(c["ref"].removeprefix("oci://"), c["digest"]) for c in self.summary["charts"]]


def _containers_created(engine: docker.APIClient, since: int, repositories: list[str]) -> list[dict[str, Any]]:
    """Container create events since ``since`` whose image is under one of ``repositories`` (other tests of the
    run create containers on the same engine meanwhile: only these count)."""
    created = engine.events(since=since, until=int(time.time()) + 1, decode=True,
                            filters={"type": "container", "event": "create"})
    ours = {image["Id"] for image in engine.images()
            for name in (image.get("RepoTags") or []) + (image.get("RepoDigests") or [])
            if name.startswith(tuple(repositories))}
    return [e for e in created
            if e.get("from") in ours or any(str(e.get("from")).startswith(r) for r in repositories)]


def _make_signed(directory: Path, registry_host: str, bases: FmaBases) -> dict[str, Any]:
    key, pub = key_pair(directory / "keys", PASSWORD)
    src = make_fma_source(directory / "fma", bases=bases)
    reg = f"{registry_host}/signed/fma"
    state = directory / "state"
    out = directory / "summary.json"
    env = {"FMA_SIGNING_KEY": str(key), "FMA_SIGNING_PASSWORD": PASSWORD, "FMA_STATE_DIR": str(state)}
    since = int(time.time()) - 1
    run = fma_release("run", src.tag, "--source", str(src.path), "--registry", reg, "--retry-delay", "0.1",
                      "--summary-json", str(out), env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    bases_repositories = [b.ref.rsplit(":", 1)[0] for b in (bases.static, bases.builder, bases.runtime,
                                                             bases.launcher)]
    client = docker.APIClient(version="auto")
    try:
        created = _containers_created(client, since, [*bases_repositories, reg])
    finally:
        client.close()
    return {"src": {**asdict(src), "path": str(src.path), "config": str(src.config)}, "registry": reg,
            "summary": json.loads(out.read_text()),
            "run": {"args": run.args, "returncode": run.returncode, "stdout": run.stdout, "stderr": run.stderr},
            "key": str(key), "pub": str(pub), "state": str(state), "created": created}


def shared_signed_release(registry_host: str, bases: FmaBases) -> Signed:
    """The FMA sample released once per run by the real CLI with a generated cosign key, into ``signed/fma``."""
    record = once_per_run("signed-release", lambda directory: _make_signed(directory, registry_host, bases))
    src = record["src"]
    run = record["run"]
    return Signed(
        src=FmaSample(path=Path(src["path"]), tag=src["tag"], tag_commit=src["tag_commit"],
                      head_commit=src["head_commit"], config=Path(src["config"])),
        registry=record["registry"], summary=record["summary"],
        run=subprocess.CompletedProcess(run["args"], run["returncode"], run["stdout"], run["stderr"]),
        key=Path(record["key"]), pub=Path(record["pub"]), state=Path(record["state"]), created=record["created"])
