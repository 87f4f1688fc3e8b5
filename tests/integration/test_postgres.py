"""The Prefect server on PostgreSQL (docs/scale.md): tag slots and release records on both backends,
and eight releases of different tags at once on PostgreSQL, each with its own content in the registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devkit import prefect_api
from devkit.prefect_server import (
    drop_postgres_database,
    new_postgres_database,
    postgres_available,
    start_prefect_server,
    stop_prefect_server,
)
from devkit.registry import RegistryProcess
from devkit.sample_source import SampleSource
from tasks.oci.registry import RegistryAPI
from tests.integration.prefect_helpers import slot_limit, task_log_window
from tests.integration.test_release import file_in_image

pytestmark = pytest.mark.integration
CLI = str(Path(sys.executable).with_name("fma-release"))
IMAGES = ("dual-pods-controller", "launcher-populator")


def _session_backend() -> str:
    """The database of the run's Prefect server (tests/conftest.py): postgres, sqlite, or "" when not known."""
    return os.environ.get("FMA_TEST_PREFECT_BACKEND", "")


@pytest.fixture(scope="module")
def postgres_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Prefect server on PostgreSQL: the run's when it is one, else this module's on a database of its own."""
    if not postgres_available():
        pytest.fail("PostgreSQL is not running on 127.0.0.1:5433: run scripts/setup.sh (scripts/postgres.sh)")
    if _session_backend() == "postgres":
        yield os.environ["PREFECT_API_URL"]
        return
    database = new_postgres_database()
    proc, url = start_prefect_server(tmp_path_factory.mktemp("prefect-pg"), database_url=database, ui=False)
    yield url
    stop_prefect_server(proc)
    drop_postgres_database(database)


@pytest.fixture(scope="module")
def sqlite_api(tmp_path_factory: pytest.TempPathFactory, prefect_template: Path) -> Iterator[str]:
    """A Prefect server on SQLite: the run's when it is one, else this module's."""
    if _session_backend() == "sqlite":
        yield os.environ["PREFECT_API_URL"]
        return
    proc, url = start_prefect_server(tmp_path_factory.mktemp("prefect-sqlite"), ui=False, template=prefect_template)
    yield url
    stop_prefect_server(proc)


@pytest.fixture(params=["sqlite", "postgres"])
def api_url(request: pytest.FixtureRequest) -> str:
    """The API of a Prefect server on each backend."""
    return str(request.getfixturevalue(f"{request.param}_api"))


def start_cli(api: str, log: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PREFECT_API_URL": api}
    return subprocess.Popen([CLI, *args], stdout=log.open("w"), stderr=subprocess.STDOUT, text=True, env=env)


def release_args(src: SampleSource, registry: str, *extra: str) -> list[str]:
    return ["run", src.tag, "--source", str(src.path), "--config", str(src.config), "--registry", registry,
            "--retry-delay", "0.1", *extra]


def flow_runs(api: str, tag: str, source: Path) -> list[dict[str, Any]]:
    body = {"flow_runs": {"name": {"any_": [f"release {tag}"]}}}
    runs = prefect_api.post(f"{api}/flow_runs/filter", body)
    return [r for r in runs if (r.get("parameters") or {}).get("source") == str(source)]


def test_tag_slot_and_release_record_on_each_backend(
    api_url: str, registry: RegistryProcess, namespace: str, sample: Callable[..., SampleSource], tmp_path: Path,
) -> None:
    """Two runs of one tag started together hold release-<tag> one after the other and both publish nothing
    twice; a third run is answered from the release record."""
    src = sample(tag="v0.3.1", images=IMAGES, sleeps=dict.fromkeys(IMAGES, 2), nonce=uuid.uuid4().hex)
    reg = f"{registry.host}/{namespace}"
    procs = [start_cli(api_url, tmp_path / f"run-{i}.log", *release_args(src, reg)) for i in range(2)]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, [p.read_text() for p in tmp_path.glob("run-*.log")]

    runs = flow_runs(api_url, src.tag, src.path)
    assert len(runs) == 2 and all(r["state_type"] == "COMPLETED" for r in runs)
    (a_start, a_end), (b_start, b_end) = (task_log_window(api_url, r["id"]) for r in runs)
    assert min(a_end, b_end) <= max(a_start, b_start), "two runs of one tag held its slot at once"
    limit = prefect_api.get(f"{api_url}/v2/concurrency_limits/{slot_limit(src.tag)}")
    assert (limit["limit"], limit["active_slots"]) == (1, 0)

    again = start_cli(api_url, tmp_path / "again.log", *release_args(src, reg))
    assert again.wait(timeout=300) == 0, (tmp_path / "again.log").read_text()
    assert "nothing changed" in (tmp_path / "again.log").read_text()


def test_eight_tags_at_once_on_postgres(
    postgres_api: str, registry: RegistryProcess, namespace: str, sample: Callable[..., SampleSource],
    tmp_path: Path,
) -> None:
    """Eight releases of different tags run together on a PostgreSQL-backed server; each tag's images and
    chart in the registry carry that tag's content, and the digests its summary names."""
    tags = [f"v0.{minor}.0" for minor in range(1, 9)]
    nonces = {tag: uuid.uuid4().hex for tag in tags}
    sources = {tag: sample(tag=tag, images=IMAGES, nonce=nonces[tag]) for tag in tags}
    reg = f"{registry.host}/{namespace}"
    procs = {
        tag: start_cli(postgres_api, tmp_path / f"{tag}.log",
                       *release_args(src, reg, "--summary-json", str(tmp_path / f"{tag}.json")))
        for tag, src in sources.items()
    }
    for tag, proc in procs.items():
        assert proc.wait(timeout=900) == 0, (tmp_path / f"{tag}.log").read_text()

    with RegistryAPI(registry.host) as api:
        for tag, src in sources.items():
            (run,) = flow_runs(postgres_api, tag, src.path)
            assert run["state_type"] == "COMPLETED"
            summary = json.loads((tmp_path / f"{tag}.json").read_text())
            assert summary["tag"] == tag and summary["source_revision"] == src.tag_commit
            for image in summary["images"]:
                repo = f"{namespace}/{image['name']}"
                found = api.manifest(repo, tag)
                assert found is not None and found[0] == image["digest"]
                config = api.image_config(repo, tag)
                assert config is not None
                assert config["config"]["Labels"]["org.opencontainers.image.revision"] == src.tag_commit
                assert file_in_image(api, repo, tag, "app/VERSION") == f"{tag.removeprefix('v')}\n{nonces[tag]}\n"
            (chart,) = summary["charts"]
            version = tag.removeprefix("v")
            found = api.manifest(f"{namespace}/charts/fma-controllers", version)
            assert found is not None and found[0] == chart["digest"]
        # Eight tags, eight distinct digests per image: nothing of one tag landed under another.
        for name in IMAGES:
            digests = {(api.manifest(f"{namespace}/{name}", tag) or ("", {}))[0] for tag in tags}
            assert len(digests) == len(tags)
