"""The Kubernetes proof's pure decisions (tasks/proof/checks.py) and the pins of the Kubernetes build."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tasks.proof.checks import (
    SERVICE_ACCOUNT_DIR,
    container_verdict,
    expand,
    images_to_run,
    kubernetes_env,
    last_lines,
    manifest_docs,
    not_run,
    refusal,
    release_containers,
    service_account_files,
)
from tasks.proof.cluster import missing_parts
from tasks.proof.kubernetes import chart_label, ipv4_gateway
from tasks.run.result import PushedImage

ROOT = Path(__file__).resolve().parents[2]
RELEASE = {"reg/ns/dual-pods-controller:v1", "reg/ns/launcher-populator:v1"}


def deployment(name: str, containers: list[dict[str, object]], **spec: object) -> dict[str, object]:
    pod = {"serviceAccountName": "fma-sa", "containers": containers, **spec.pop("pod", {})}  # type: ignore[dict-item]
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {**spec, "template": {"spec": pod}}}


def test_release_containers_are_the_release_images_of_deployments_with_replicas() -> None:
    """Only containers whose image is the release's, of Deployments that run (replicas 0 does not), with
    the chart's command, args and env, the service account, and each volume mount's path."""
    docs = [
        deployment("dpc", [{"name": "controller", "image": "reg/ns/dual-pods-controller:v1",
                            "command": ["/ko-app/dual-pods-controller", "-v=5"],
                            "env": [{"name": "GOCOVERDIR", "value": "/var/coverdata"}],
                            "volumeMounts": [{"name": "c", "mountPath": "/var/coverdata"}]},
                           {"name": "sidecar", "image": "busybox:1.38.0", "command": ["sleep"]}]),
        deployment("inspector", [{"name": "i", "image": "reg/ns/launcher-populator:v1"}], replicas=0),
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "fma-sa"}},
        deployment("lp", [{"name": "controller", "image": "reg/ns/launcher-populator:v1", "args": ["--x"]}],
                   pod={"serviceAccountName": ""}),
    ]
    dpc, lp = release_containers(docs, RELEASE, "proof-ns")
    assert (dpc.label, dpc.command, dpc.args, dpc.env, dpc.mounts, dpc.service_account, dpc.namespace) == (
        "dpc/controller", ("/ko-app/dual-pods-controller", "-v=5"), None, (("GOCOVERDIR", "/var/coverdata"),),
        ("/var/coverdata",), "fma-sa", "proof-ns")
    assert (lp.command, lp.args, lp.service_account, lp.token) == (None, ("--x",), "default", True)


def test_env_from_fields_is_given_and_the_rest_is_noted_and_expanded_in_args() -> None:
    """fieldRef env (namespace, pod name) is given as Kubernetes would; a secretKeyRef is noted as not given;
    $(VAR) in args expands, $$ is a literal dollar, an unknown $(X) stays."""
    docs = [deployment("dpc", [{
        "name": "c", "image": "reg/ns/dual-pods-controller:v1", "args": ["--ns=$(NS)", "$$(NS)", "$(NOPE)"],
        "env": [{"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                {"name": "WHERE", "value": "in $(NS)"}]}])]
    (run,) = release_containers(docs, RELEASE, "proof-ns")
    assert dict(run.env) == {"NS": "proof-ns", "WHERE": "in proof-ns"}
    assert run.args == ("--ns=proof-ns", "$(NS)", "$(NOPE)")
    assert run.notes == ("env PW (secretKeyRef) not given",)


def test_no_token_when_the_pod_opts_out() -> None:
    """automountServiceAccountToken: false on the Pod means no service-account files."""
    docs = [deployment("dpc", [{"name": "c", "image": "reg/ns/dual-pods-controller:v1"}],
                       pod={"automountServiceAccountToken": False})]
    assert [r.token for r in release_containers(docs, RELEASE, "ns")] == [False]


@given(st.text(alphabet=st.characters(blacklist_characters="$"), max_size=40))
def test_expand_leaves_text_without_references_alone(text: str) -> None:
    """Text with no $ is never changed by $(VAR) expansion."""
    assert expand(text, {"A": "b"}) == text


def test_what_a_container_is_given() -> None:
    """The service-account files Kubernetes mounts and the KUBERNETES_SERVICE_* variables."""
    assert SERVICE_ACCOUNT_DIR == "/var/run/secrets/kubernetes.io/serviceaccount"
    assert service_account_files("tok", b"PEM", "ns") == {"token": b"tok", "ca.crt": b"PEM", "namespace": b"ns"}
    env = kubernetes_env("172.17.0.1", 6443)
    assert (env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"], env["KUBERNETES_PORT"]) == (
        "172.17.0.1", "6443", "tcp://172.17.0.1:6443")


SSA = "server-side apply failed for object ns/fma-fma-controllers-default fma-sample.example.invalid/v1alpha1, Kind="


@pytest.mark.parametrize(("error", "named", "reason"), [
    (SSA + 'LauncherPolicy: LauncherPolicy.fma-sample.example.invalid "fma-fma-controllers-default" is invalid: '
     "spec.launchers: Invalid value: 99: spec.launchers in body should be less than or equal to 16",
     'LauncherPolicy.fma-sample.example.invalid "fma-fma-controllers-default"',
     "invalid: spec.launchers: Invalid value: 99: spec.launchers in body should be less than or equal to 16"),
    (SSA + "LauncherPolicy: failed to create typed patch object (ns/fma-fma-controllers-default; "
     "fma-sample.example.invalid/v1alpha1, Kind=LauncherPolicy): .spec.launchers: expected numeric (int or float), "
     "got string",
     'LauncherPolicy "fma-fma-controllers-default" (fma-sample.example.invalid/v1alpha1)',
     ".spec.launchers: expected numeric (int or float), got string"),
    ('clusterrolebindings.rbac.authorization.k8s.io "x-view" is forbidden: user "u" is attempting to grant\n'
     "RBAC permissions not currently held", 'clusterrolebindings.rbac.authorization.k8s.io "x-view"',
     'forbidden: user "u" is attempting to grant RBAC permissions not currently held'),
    ('unable to build kubernetes objects from release manifest: resource mapping not found for name: "p" '
     'namespace: "" from "": no matches for kind "LauncherPolicy" in version "x/v1"', 'LauncherPolicy "p"', None),
    ("Kubernetes cluster unreachable: connection refused", "", "Kubernetes cluster unreachable: connection refused"),
])
def test_refusal_names_the_object_the_server_refused(error: str, named: str, reason: str | None) -> None:
    """The object as the server names it (or as Helm's server-side apply does), else the rendered object of a
    kind the server does not know; the reason is the server's own words on one line."""
    docs = [{"kind": "LauncherPolicy", "metadata": {"name": "p"}}]
    found, why = refusal(error, docs)
    assert found == named
    assert why == (reason if reason is not None else why)
    assert "\n" not in why


def test_verdicts() -> None:
    """Running at the end passes with what it said last; any exit fails with the code and the last lines."""
    out = "a\nb\ndual-pods-controller: failed to list /api/v1/nodes: nodes is forbidden: User \"x\" cannot\n"
    assert container_verdict(running=True, exit_code=None, watched=20.2, output="one\nsynced\n") == (
        True, "running 20 s; last said: synced")
    passed, detail = container_verdict(running=False, exit_code=1, watched=0.43, output=out)
    assert not passed and detail.startswith("exited with code 1 after 0.4 s: a | b | dual-pods-controller:")
    assert "nodes is forbidden" in detail
    assert container_verdict(running=False, exit_code=0, watched=1, output="")[0] is False
    assert last_lines("\n".join(str(i) for i in range(10)), 3) == "7 | 8 | 9"


def test_a_proof_that_cannot_run_is_skipped_never_passed(tmp_path: Path) -> None:
    """No built Kubernetes: one line naming what is missing and the fix; the check is skipped and not passed."""
    why = missing_parts(tmp_path)
    assert "etcd, kube-apiserver missing" in why and "bash scripts/setup.sh" in why
    check = not_run(why)
    assert (check.passed, check.skipped, check.verdict) == (False, True, "skipped")


def test_manifest_docs_and_chart_labels(tmp_path: Path) -> None:
    """Rendered text splits into its objects; a packaged chart is named without its version."""
    assert [d["kind"] for d in manifest_docs({"a": "kind: A\n---\n# only a comment\n---\nkind: B\n"})] == ["A", "B"]
    archive = tmp_path / "fma-controllers-0.6.4.tgz"
    archive.write_bytes(b"")
    assert chart_label(archive) == "fma-controllers"
    assert chart_label(tmp_path / "fma-controllers") == "fma-controllers"


def test_kubernetes_pins_are_one_release() -> None:
    """devkit/kubernetes/go.mod pins k8s.io/kubernetes, and every staging module it replaces is at the same
    release's published version (v0.MINOR.PATCH); the three mains are there."""
    text = (ROOT / "devkit/kubernetes/go.mod").read_text()
    version = re.search(r"^\s*k8s\.io/kubernetes (v1\.\d+\.\d+)$", text, re.MULTILINE)
    assert version, "go.mod requires no k8s.io/kubernetes"
    staging = "v0." + version.group(1).removeprefix("v1.")
    replaced = re.findall(r"^\s*(k8s\.io/\S+) => (k8s\.io/\S+) (v\S+)$", text, re.MULTILINE)
    assert len(replaced) == 31
    assert all(old == new and v == staging for old, new, v in replaced), replaced
    assert re.search(r"^\s*go\.etcd\.io/etcd/server/v3 v3\.\d+\.\d+$", text, re.MULTILINE)
    for main in ("kube-apiserver", "etcd", "kube-controller-manager"):
        assert (ROOT / "devkit/kubernetes" / main / "main.go").is_file()


def test_images_to_run_are_each_platform_by_digest() -> None:
    """An index gives each platform's manifest by digest under the tag the chart renders; a single manifest
    its own digest (a registry with a port keeps its port)."""
    index = PushedImage(name="dpc", ref="127.0.0.1:5000/fma/dpc:v1", digest="sha256:i", platforms=(
        PushedImage(name="dpc", ref="127.0.0.1:5000/fma/dpc:v1", digest="sha256:a", platform="linux/amd64"),
        PushedImage(name="dpc", ref="127.0.0.1:5000/fma/dpc:v1", digest="sha256:b", platform="linux/arm64")))
    single = PushedImage(name="lp", ref="reg/fma/lp:v1", digest="sha256:c", platform="linux/amd64")
    assert images_to_run([index, single]) == {
        "127.0.0.1:5000/fma/dpc:v1": {"linux/amd64": "127.0.0.1:5000/fma/dpc@sha256:a",
                                      "linux/arm64": "127.0.0.1:5000/fma/dpc@sha256:b"},
        "reg/fma/lp:v1": {"linux/amd64": "reg/fma/lp@sha256:c"},
    }


def test_the_bridge_gateway_is_the_given_one_else_the_subnets_first_address() -> None:
    """A dockerd that found docker0 up records the bridge's subnet alone: its containers reach the host at the
    subnet's first address, the one the engine gives the bridge."""
    assert ipv4_gateway([{"Subnet": "172.17.0.0/16", "Gateway": "172.17.0.1"}]) == "172.17.0.1"
    assert ipv4_gateway([{"Subnet": "172.17.0.0/16"}]) == "172.17.0.1"
    assert ipv4_gateway([{"Subnet": "fd00::/64", "Gateway": "fd00::1"}, {"Subnet": "10.9.0.0/24"}]) == "10.9.0.1"
    assert ipv4_gateway([{"Subnet": "fd00::/64"}]) is None
    assert ipv4_gateway([{"Subnet": "not a subnet"}]) is None
    assert ipv4_gateway([]) is None
