"""The proof on a real Kubernetes API server (kube-apiserver, etcd, kube-controller-manager built from
upstream's source by scripts/kube.sh), with the FMA-shaped sample's released controllers.

The images are the run's signed release of the sample (its controllers, for linux/amd64 and linux/arm64);
the charts and CRDs are the sample's at the tag, or a proof fault's (devkit/fma_files.py PROOF_FAULTS), with
the release's registry and tag as values. The arm64 containers run under qemu.
"""

from __future__ import annotations

import os
import re
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

import docker
import helm_python as helm
import pytest
import requests

from devkit.fma_files import CHART, CRDS_FILE
from devkit.fma_sample import FmaBases, make_fma_source
from devkit.kube import kube_server
from tasks.core.errors import KubernetesError
from tasks.proof.checks import ProofCheck
from tasks.proof.cluster import missing_parts
from tasks.proof.kubernetes import PROOF_LABEL, KubeProof, prove_on_kubernetes
from tests.integration.shared import Signed

pytestmark = pytest.mark.integration

CONTROLLERS = ("dual-pods-controller", "launcher-populator")
SETTLE = 8.0  # seconds each controller must keep running (the product's default is 20)
NODE_VIEWER = {  # what FMA's install docs have a user create before the chart (kubectl create clusterrole ...)
    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "fma-node-viewer"},
    "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}],
}


@pytest.fixture(scope="module", autouse=True)
def kubernetes_built() -> None:
    """The parts scripts/setup.sh builds; the tests fail (not skip) without them."""
    why = missing_parts(controller_manager=True)
    if why:
        pytest.fail(why)


@pytest.fixture
def client() -> Any:
    made = docker.from_env(version="auto")
    yield made
    made.close()


def release_images(signed: Signed) -> dict[str, dict[str, str]]:
    """Each controller image of the release as its chart names it, with the reference of each platform by digest."""
    found = {}
    for image in signed.summary["images"]:
        if image["ref"].rsplit("/", 1)[-1].split(":")[0] in CONTROLLERS:
            repository = image["ref"].rsplit(":", 1)[0]
            found[image["ref"]] = {p["platform"]: f"{repository}@{p['digest']}" for p in image["platforms"]}
    assert len(found) == 2 and all(set(p) == {"linux/amd64", "linux/arm64"} for p in found.values()), found
    return found


def at_tag(source: Path, tag: str, into: Path) -> Path:
    """The chart and the CRDs of ``source`` as they are at ``tag``."""
    into.mkdir(parents=True)
    archive = into / "tree.tar"
    subprocess.run(["git", "archive", "--output", str(archive), tag, CHART, "config"], cwd=source, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into


def proof_of(tree: Path, signed: Signed, **values: Any) -> KubeProof:
    return KubeProof(
        charts=(tree / CHART,), images=release_images(signed), crds=(tree / CRDS_FILE,), objects=(NODE_VIEWER,),
        values={"global": {"imageRegistry": signed.registry, "imageTag": signed.src.tag,
                           "nodeViewClusterRole": "fma-node-viewer", **values}},
        settle_seconds=SETTLE)


def by_name(checks: list[ProofCheck]) -> dict[str, ProofCheck]:
    return {c.name: c for c in checks}


def controller_checks(checks: list[ProofCheck], controller: str) -> list[ProofCheck]:
    return [c for c in checks if f"-{controller}/controller linux/" in c.name]


def no_proof_left(client: Any, parent: Path, checks: list[ProofCheck]) -> None:
    """Nothing of a proof remains: no container with its label, no process of its server, no files."""
    (install,) = [c for c in checks if c.name.startswith("kubernetes: install ")]
    run_id = re.search(r"proof-fma-controllers-([0-9a-f]+)", install.detail)
    if install.passed:  # a refused install starts no container
        assert run_id, install
        assert client.containers.list(all=True, filters={"label": f"{PROOF_LABEL}={run_id.group(1)}"}) == []
    leftovers = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(parent) in line:
                leftovers.append(line)
    assert leftovers == []
    assert list(parent.iterdir()) == []


def test_server_has_its_own_pki_rbac_and_stops_by_pid(tmp_path: Path) -> None:
    """etcd, kube-apiserver and kube-controller-manager start under a temporary directory: /version says
    v1.34.0, Helm's SDK lists releases with the admin kubeconfig, a service account's token is refused what
    RBAC does not grant, the controller manager made the default namespace's account; stopping ends every
    process by its PID and removes the directory."""
    with kube_server(controller_manager=True, parent=tmp_path) as (cluster, local):
        pids = local.pids
        assert set(pids) == {"etcd", "kube-apiserver", "kube-controller-manager"}
        assert cluster.version == "v1.34.0"
        assert cluster.root.parent == tmp_path
        with helm.Config(kubeconfig_path=cluster.kubeconfig, namespace="default") as config:
            assert config.list() == []
        from tasks.proof.kubeapi import KubeAPI

        with KubeAPI(cluster) as api:
            token = api.token("default", "default")
        nodes = requests.get(f"{cluster.server}/api/v1/nodes", headers={"Authorization": f"Bearer {token}"},
                             verify=str(cluster.pki.ca_cert), timeout=10)
        assert nodes.status_code == 403
        assert 'cannot list resource "nodes"' in nodes.json()["message"]
        anonymous = requests.get(f"{cluster.server}/api/v1/namespaces", verify=str(cluster.pki.ca_cert), timeout=10)
        assert anonymous.status_code in (401, 403)
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert list(tmp_path.iterdir()) == []


def test_a_server_that_cannot_start_says_why_in_one_line(tmp_path: Path) -> None:
    """An address the machine does not have: one line naming the part and its own last words."""
    with pytest.raises(KubernetesError) as failed, kube_server(address="192.0.2.1", parent=tmp_path):
        pass
    message = str(failed.value)
    assert "\n" not in message and ("192.0.2.1" in message or "kube-apiserver" in message), message
    assert list(tmp_path.iterdir()) == []


def test_good_sample_installs_and_its_controllers_run_past_settle(
        signed: Signed, client: Any, tmp_path: Path) -> None:
    """The sample's CRDs and chart install with the real Helm into a fresh namespace; both controllers, on
    linux/amd64 and linux/arm64 (qemu), read their mounted service account, list what their chart lets them
    (Pods, Nodes, LauncherPolicies) and are still running after the settle time; everything is gone after."""
    tree = at_tag(signed.src.path, signed.src.tag, tmp_path / "tree")
    parent = tmp_path / "proof"
    parent.mkdir()
    lines: list[str] = []
    began = time.monotonic()
    checks = prove_on_kubernetes(proof_of(tree, signed), client, parent=parent, say=lines.append)
    took = time.monotonic() - began
    failed = [c for c in checks if not c.passed]
    assert failed == [], failed
    named = by_name(checks)
    assert named["kubernetes: API server"].detail.startswith("v1.34.0 at https://")
    assert named["kubernetes: CRDs"].detail == "applied 1: launcherpolicies.fma-sample.example.invalid"
    assert named["kubernetes: objects"].detail == "created ClusterRole/fma-node-viewer"
    install = named["kubernetes: install fma-controllers"]
    assert "accepted in proof-fma-controllers-" in install.detail and "1 ClusterRoleBinding" in install.detail
    for controller in CONTROLLERS:
        ran = controller_checks(checks, controller)
        assert len(ran) == 2, checks
        for check in ran:
            assert re.match(rf"running \d+ s; last said: {controller}: caches synced: ", check.detail), check
            assert check.seconds >= SETTLE
    dpc = controller_checks(checks, "dual-pods-controller")[0]
    assert "in /api/v1/nodes" in dpc.detail
    assert "launcherpolicies" in controller_checks(checks, "launcher-populator")[0].detail
    assert any("watching them for 8 s" in line for line in lines)
    no_proof_left(client, parent, checks)
    print(f"\nproof of the good sample: {took:.1f} s ({SETTLE:.0f} s settle)")


def test_a_controller_without_its_permission_fails_naming_it_and_the_forbidden_line(
        signed: Signed, fma_bases: FmaBases, client: Any, tmp_path: Path) -> None:
    """The forbidden-nodes fault's chart never binds the node-view ClusterRole: the chart installs, the
    dual-pods controller exits on both platforms with the server's `nodes is forbidden` line, the populator
    runs on."""
    fault = make_fma_source(tmp_path / "fault", bases=fma_bases, proof_fault="forbidden-nodes")
    tree = at_tag(fault.path, fault.tag, tmp_path / "tree")
    parent = tmp_path / "proof"
    parent.mkdir()
    checks = prove_on_kubernetes(proof_of(tree, signed), client, parent=parent)
    named = by_name(checks)
    assert named["kubernetes: install fma-controllers"].passed
    assert "ClusterRoleBinding" not in named["kubernetes: install fma-controllers"].detail
    failed = [c for c in checks if not c.passed]
    assert sorted(c.name for c in failed) == sorted(c.name for c in controller_checks(checks, "dual-pods-controller"))
    for check in failed:
        assert "dual-pods-controller" in check.name
        assert check.detail.startswith("exited with code 1 after "), check
        assert 'nodes is forbidden: User "system:serviceaccount:proof-fma-controllers-' in check.detail
        assert 'cannot list resource "nodes" in API group "" at the cluster scope' in check.detail
    assert all(c.passed for c in controller_checks(checks, "launcher-populator"))
    no_proof_left(client, parent, checks)


def test_an_object_the_server_refuses_fails_the_install_naming_it(
        signed: Signed, fma_bases: FmaBases, client: Any, tmp_path: Path) -> None:
    """The invalid-policy fault's chart makes a LauncherPolicy its CRD's schema refuses: the install fails
    naming that object and the server's reason, and no container is started."""
    fault = make_fma_source(tmp_path / "fault", bases=fma_bases, proof_fault="invalid-policy")
    tree = at_tag(fault.path, fault.tag, tmp_path / "tree")
    parent = tmp_path / "proof"
    parent.mkdir()
    checks = prove_on_kubernetes(proof_of(tree, signed), client, parent=parent)
    assert [c.name for c in checks] == ["kubernetes: API server", "kubernetes: CRDs", "kubernetes: objects",
                                        "kubernetes: install fma-controllers"]
    install = checks[-1]
    assert not install.passed
    assert install.detail.startswith(
        'the API server refused LauncherPolicy.fma-sample.example.invalid "fma-fma-controllers-default": '), install
    assert install.detail.endswith(": invalid: spec.launchers: Invalid value: 99: spec.launchers in body should be "
                                   "less than or equal to 16"), install
    no_proof_left(client, parent, checks)


def test_without_kubernetes_the_proof_says_so_and_does_not_pass(client: Any, tmp_path: Path) -> None:
    """No built Kubernetes: one skipped check naming what is missing and how to build it; nothing started."""
    lines: list[str] = []
    proof = KubeProof(charts=(tmp_path / "chart",), images={})
    checks = prove_on_kubernetes(proof, client, bin_dir=tmp_path / "empty", say=lines.append)
    assert len(checks) == 1 and checks[0].skipped and not checks[0].passed
    assert checks[0].detail.startswith("not run: Kubernetes is not built here")
    assert lines == [f"kubernetes proof: {checks[0].detail}"]
