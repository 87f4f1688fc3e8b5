"""Staged releases: built, pushed and signed to a stage, proven there (every container the chart runs started
from its staged image on every platform; the chart installed on a Kubernetes API server built from source when
this machine has one), and only then promoted to the registry (real dockerd, registry, ko, cosign, Helm)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from devkit.fma_sample import FmaBases, make_fma_source
from devkit.github_stub import GitHubStub
from devkit.registry import RegistryProcess
from tasks.oci.registry import RegistryAPI
from tasks.proof.cluster import missing_parts
from tests.integration.shared import PASSWORD, fma_release, key_pair

pytestmark = pytest.mark.integration
IMAGES = ("dual-pods-controller", "launcher-populator", "launcher", "requester")
REPO = "llm-d-incubation/llm-d-fast-model-actuation"


def staged_run(src_path: Path, tag: str, *, stage: str, final: str, tmp: Path, env: dict[str, str],
               github: GitHubStub | None = None) -> tuple[int, str, dict[str, object]]:
    """The staged run of the CLI; with ``github``, it publishes the GitHub release of the tag there."""
    out = tmp / "summary.json"
    more: tuple[str, ...] = ()
    if github is not None:
        more = ("--github-repo", REPO)
        env = {**env, "GITHUB_TOKEN": github.token, "GITHUB_API_URL": github.url}
    run = fma_release("run", tag, "--source", str(src_path), "--registry", final, "--stage", stage,
                      "--retry-delay", "0.1", "--summary-json", str(out), *more, env=env)
    summary = json.loads(out.read_text()) if out.exists() else {}
    return run.returncode, run.stdout + run.stderr, summary


def test_a_staged_release_is_proven_then_promoted_with_the_same_digests(
    registry: RegistryProcess, fma_bases: FmaBases, tmp_path: Path,
) -> None:
    """The stage gets the release; every check of the proof passes (a container start per chart container and
    platform, the images no chart runs with their entrypoint); the registry gets the same digests, signed, and
    `fma-release verify` passes there; the summary has the proof's table. The GitHub release (--github-repo),
    a draft from the start, is published at the end, marked Latest, listing every digest, the verify command and
    the proof."""
    key, pub = key_pair(tmp_path / "keys", PASSWORD)
    src = make_fma_source(tmp_path / "fma", bases=fma_bases)
    run_id = uuid.uuid4().hex[:8]
    stage, final = f"{registry.host}/stage-{run_id}/fma", f"{registry.host}/final-{run_id}/fma"
    env = {"FMA_SIGNING_KEY": str(key), "FMA_SIGNING_PASSWORD": PASSWORD, "FMA_STATE_DIR": str(tmp_path / "state")}
    with GitHubStub() as github:
        github.add_release(REPO, "v0.6.3")  # the release before: the notes start there
        code, console, summary = staged_run(src.path, src.tag, stage=stage, final=final, tmp=tmp_path, env=env,
                                            github=github)
    assert code == 0, console[-4000:]
    assert [r.body and r.body["draft"] for r in github.posted(f"{REPO}/releases")] == [True]  # created a draft
    edits = [r for r in github.requests if r.method == "PATCH"]
    assert len(edits) == 1 and edits[0].body and edits[0].body["draft"] is False, edits
    published = github.releases[REPO][-1]
    assert (published["tag_name"], published["draft"], published["make_latest"]) == (src.tag, False, "true")
    assert summary["github_release"] == published["html_url"]
    body = published["body"]
    assert f"v0.6.3...{src.tag}" in body, body  # the notes since the release before
    assert f"fma-release verify {src.tag}" in body and "start requester linux/arm64 (no chart runs it)" in body
    for image in summary["images"]:  # type: ignore[attr-defined]
        assert image["digest"] in body, image
    assert "being published by fma-release" not in body  # the draft's placeholder is replaced
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


def _wrong_architecture(tree: Path) -> None:
    """The requester's binary comes from its builder stage, which runs on the build machine's platform: its
    arm64 image gets an amd64 executable (a cross-compile that forgot GOARCH)."""
    dockerfile = tree / "dockerfiles" / "Dockerfile.requester"
    text = dockerfile.read_text()
    assert "/bin/busybox mkdir -p /out" in text and 'ENTRYPOINT ["/bin/busybox", "cat"' in text
    dockerfile.write_text(text.replace("/bin/busybox mkdir -p /out",  # busybox runs the applet its name says
                                       "/bin/busybox mkdir -p /out && /bin/busybox cp /bin/busybox /out/cat")
                          .replace('ENTRYPOINT ["/bin/busybox", "cat"', 'ENTRYPOINT ["/app/cat"'))


def _two_faults(tree: Path) -> None:
    _missing_command(tree)
    _wrong_architecture(tree)


def test_a_staged_release_whose_chart_runs_a_missing_command_or_whose_arm64_binary_is_amd64_promotes_nothing(
    registry: RegistryProcess, fma_bases: FmaBases, tmp_path: Path,
) -> None:
    """The proof fails before any promotion, in one line naming each failed start: the controller's container,
    its platform and the missing command; the requester's arm64 image, whose executable is built for amd64 (on
    this amd64 host it would run natively, so only its ELF header tells). Its amd64 image passes. The registry
    holds nothing of the release."""
    src = make_fma_source(tmp_path / "fma", bases=fma_bases, mutate=_two_faults)
    run_id = uuid.uuid4().hex[:8]
    stage, final = f"{registry.host}/stage-{run_id}/fma", f"{registry.host}/final-{run_id}/fma"
    with GitHubStub() as github:
        code, console, _ = staged_run(src.path, src.tag, stage=stage, final=final, tmp=tmp_path,
                                      env={"FMA_STATE_DIR": str(tmp_path / "state")}, github=github)
    assert code != 0
    drafts = github.releases[REPO]  # the GitHub release was a draft from the start, and stays one
    assert [(r["tag_name"], r["draft"]) for r in drafts] == [(src.tag, True)]
    assert not [r for r in github.requests if r.method == "PATCH"]
    assert f"the GitHub release {src.tag} of {REPO} stays a draft: {drafts[0]['html_url']}" in console
    failure = [line for line in console.splitlines() if "failed its proof" in line]
    assert failure, console[-4000:]
    assert "nothing was promoted" in failure[-1] and "/ko-app/no-such-controller" in failure[-1]
    assert "start dual-pods-controller linux/" in failure[-1] and "container controller" in failure[-1]
    assert ("start requester linux/arm64 (no chart runs it): exec format error: /app/cat is built for "
            "linux/amd64, the image is linux/arm64") in failure[-1], failure[-1]
    assert "start requester linux/amd64" not in failure[-1]
    assert failure[-1].count("start dual-pods-controller linux/arm64") == 1  # two renders, one start: said once
    assert "kubernetes" not in failure[-1]  # not tried with containers that cannot start
    with RegistryAPI(registry.host) as api:
        assert api.catalog(f"final-{run_id}/") == []
        assert api.tags(f"stage-{run_id}/fma/dual-pods-controller") == [src.tag]  # the stage has it


def test_a_staged_release_whose_controller_is_forbidden_by_the_api_server_promotes_nothing(
    registry: RegistryProcess, fma_bases: FmaBases, tmp_path: Path,
) -> None:
    """A chart that never binds the node-viewer ClusterRole: its containers start, but on the Kubernetes API
    server the dual-pods controller's list of nodes is forbidden; the proof fails naming the controller and the
    server's line, and the registry holds nothing of the release."""
    assert missing_parts() == "", "scripts/setup.sh builds Kubernetes (scripts/kube.sh) for this test"
    src = make_fma_source(tmp_path / "fma", bases=fma_bases, proof_fault="forbidden-nodes")
    run_id = uuid.uuid4().hex[:8]
    stage, final = f"{registry.host}/stage-{run_id}/fma", f"{registry.host}/final-{run_id}/fma"
    code, console, _ = staged_run(src.path, src.tag, stage=stage, final=final, tmp=tmp_path,
                                  env={"FMA_STATE_DIR": str(tmp_path / "state")})
    assert code != 0
    failure = [line for line in console.splitlines() if "failed its proof" in line]
    assert failure, console[-4000:]
    assert "kubernetes:" in failure[-1] and "dual-pods-controller" in failure[-1], failure[-1]
    assert "nodes is forbidden" in failure[-1], failure[-1]
    assert "start dual-pods-controller" not in failure[-1]  # the containers started: only the API refused them
    with RegistryAPI(registry.host) as api:
        assert api.catalog(f"final-{run_id}/") == []
