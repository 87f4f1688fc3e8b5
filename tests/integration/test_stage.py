"""Staged releases: built, pushed and signed to a stage, proven there (every container the chart runs started
from its staged image on every platform; the chart installed on a Kubernetes API server built from source when
this machine has one), and only then promoted to the registry (real dockerd, registry, ko, cosign, Helm)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from devkit.fma_sample import FmaBases, make_fma_source
from devkit.registry import RegistryProcess
from tasks.oci.registry import RegistryAPI
from tasks.proof.cluster import missing_parts
from tests.integration.shared import PASSWORD, fma_release, key_pair

pytestmark = pytest.mark.integration
IMAGES = ("dual-pods-controller", "launcher-populator", "launcher", "requester")


def staged_run(src_path: Path, tag: str, *, stage: str, final: str, tmp: Path, env: dict[str, str]) -> tuple[
        int, str, dict[str, object]]:
    out = tmp / "summary.json"
    run = fma_release("run", tag, "--source", str(src_path), "--registry", final, "--stage", stage,
                      "--retry-delay", "0.1", "--summary-json", str(out), env=env)
    summary = json.loads(out.read_text()) if out.exists() else {}
    return run.returncode, run.stdout + run.stderr, summary


def test_a_staged_release_is_proven_then_promoted_with_the_same_digests(
    registry: RegistryProcess, fma_bases: FmaBases, tmp_path: Path,
) -> None:
    """The stage gets the release; every check of the proof passes (a container start per chart container and
    platform, the images no chart runs with their entrypoint); the registry gets the same digests, signed, and
    `fma-release verify` passes there; the summary has the proof's table."""
    key, pub = key_pair(tmp_path / "keys", PASSWORD)
    src = make_fma_source(tmp_path / "fma", bases=fma_bases)
    run_id = uuid.uuid4().hex[:8]
    stage, final = f"{registry.host}/stage-{run_id}/fma", f"{registry.host}/final-{run_id}/fma"
    env = {"FMA_SIGNING_KEY": str(key), "FMA_SIGNING_PASSWORD": PASSWORD, "FMA_STATE_DIR": str(tmp_path / "state")}
    code, console, summary = staged_run(src.path, src.tag, stage=stage, final=final, tmp=tmp_path, env=env)
    assert code == 0, console[-4000:]
    assert summary["registry"] == final and summary["staged_at"] == stage
    rows = summary["proof"]
    assert rows and all(r["verdict"] in ("passed", "skipped") for r in rows), rows
    checks = [r["check"] for r in rows]
    for arch in ("amd64", "arm64"):
        assert any(c.startswith(f"start dual-pods-controller linux/{arch} (chart fma-controllers, Deployment")
                   for c in checks), checks
        assert f"start requester linux/{arch} (no chart runs it)" in checks
    assert "chart fma-controllers: render with dualPodsController.secureMetrics=true" in checks
    # The default release.yaml asks for the proof on Kubernetes too: with the parts built here (setup.sh), the
    # chart installs after the CRDs and the node-viewer ClusterRole, and both controllers keep running.
    assert missing_parts() == "", "scripts/setup.sh builds Kubernetes (scripts/kube.sh) for this test"
    kube = {r["check"]: r for r in rows if r["check"].startswith("kubernetes")}
    assert {"kubernetes: API server", "kubernetes: CRDs", "kubernetes: objects"} <= set(kube), sorted(kube)
    assert all(r["verdict"] == "passed" for r in kube.values()), kube
    assert any("dual-pods-controller" in name and "arm64" in name for name in kube), sorted(kube)
    assert "## Proof" in console and "proven" in console

    namespace_stage, namespace_final = stage.split("/", 1)[1], final.split("/", 1)[1]
    with RegistryAPI(registry.host) as api:
        for image in summary["images"]:
            at_stage = api.digest(f"{namespace_stage}/{image['name']}", src.tag)
            assert image["digest"] == at_stage == api.digest(f"{namespace_final}/{image['name']}", src.tag)
    assert sorted(i["name"] for i in summary["images"]) == sorted(IMAGES)
    verified = fma_release("verify", src.tag, "--key", str(pub), "--registry", final, env={})
    assert verified.returncode == 0, verified.stdout + verified.stderr


def _missing_command(tree: Path) -> None:
    """The chart runs the dual-pods controller from a path its image does not have."""
    for template in (tree / "charts").rglob("*.yaml"):
        text = template.read_text()
        if "/ko-app/dual-pods-controller" in text:
            template.write_text(text.replace("/ko-app/dual-pods-controller", "/ko-app/no-such-controller"))


def test_a_staged_release_whose_chart_runs_a_missing_command_promotes_nothing(
    registry: RegistryProcess, fma_bases: FmaBases, tmp_path: Path,
) -> None:
    """The proof fails before any promotion, in one line naming the container, the platform and the missing
    command; the registry holds nothing of the release."""
    src = make_fma_source(tmp_path / "fma", bases=fma_bases, mutate=_missing_command)
    run_id = uuid.uuid4().hex[:8]
    stage, final = f"{registry.host}/stage-{run_id}/fma", f"{registry.host}/final-{run_id}/fma"
    code, console, _ = staged_run(src.path, src.tag, stage=stage, final=final, tmp=tmp_path,
                                  env={"FMA_STATE_DIR": str(tmp_path / "state")})
    assert code != 0
    failure = [line for line in console.splitlines() if "failed its proof" in line]
    assert failure, console[-4000:]
    assert "nothing was promoted" in failure[-1] and "/ko-app/no-such-controller" in failure[-1]
    assert "start dual-pods-controller linux/" in failure[-1] and "container controller" in failure[-1]
    with RegistryAPI(registry.host) as api:
        assert api.catalog(f"final-{run_id}/") == []
        assert api.tags(f"stage-{run_id}/fma/dual-pods-controller") == [src.tag]  # the stage has it
