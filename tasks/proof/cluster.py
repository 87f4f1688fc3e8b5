"""A local Kubernetes API server for the proof: etcd, kube-apiserver and (when asked)
kube-controller-manager, started from the binaries scripts/kube.sh builds into .local/kube/bin.

Everything lives in one temporary directory (data, certificates, kubeconfig, logs) and goes with
it; each process runs in a process group of its own and is stopped by its PID. The API server
listens on one address: 127.0.0.1 for a client on this machine, or the Docker bridge's gateway
when containers must reach it (they cannot reach the host's loopback). It authenticates clients by
certificate and service-account token, and authorizes with RBAC only, as a real cluster does.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tasks.core import cmd
from tasks.core.errors import KubernetesError
from tasks.core.project import PROJECT_ROOT
from tasks.proof.pki import Pki, make_pki

KUBE_BIN = PROJECT_ROOT / ".local" / "kube" / "bin"
PARTS = ("etcd", "kube-apiserver", "kube-controller-manager")
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_CIDR = "10.96.0.0/24"
# What the controller manager runs: Deployments to ReplicaSets, namespaces (their deletion, their
# default service account, their root CA config map), and garbage collection.
CONTROLLERS = ("deployment-controller", "replicaset-controller", "namespace-controller",
               "serviceaccount-controller", "root-ca-certificate-publisher-controller",
               "garbage-collector-controller")
START_TIMEOUT = 90.0  # seconds for each part to answer healthy; a loaded machine is slow


def missing_parts(bin_dir: Path = KUBE_BIN, *, controller_manager: bool = False) -> str:
    """Why the Kubernetes parts cannot run here, in one line, or ``""`` when they can."""
    wanted = PARTS if controller_manager else PARTS[:2]
    absent = [name for name in wanted if not (bin_dir / name).is_file()]
    if not absent:
        return ""
    return (f"Kubernetes is not built here ({', '.join(absent)} missing in {bin_dir}): "
            "run bash scripts/setup.sh (scripts/kube.sh builds it from source)")


@dataclass(frozen=True)
class Cluster:
    """A running API server as a client sees it."""

    host: str  # the address it listens on
    port: int
    kubeconfig: Path  # the admin's (system:masters), certificates embedded
    pki: Pki
    root: Path  # its temporary directory
    version: str  # what /version says (gitVersion)
    started_in: float  # seconds from the first process to a ready API server

    @property
    def server(self) -> str:
        return f"https://{self.host}:{self.port}"


def free_port(address: str) -> int:
    """A TCP port nothing listens on at ``address`` now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError as err:
            raise KubernetesError(f"cannot listen on {address}: {err.strerror or err}; give an address of this "
                                  "machine (127.0.0.1, or the Docker bridge's gateway)") from err
        return int(probe.getsockname()[1])


def kubeconfig_text(server: str, pki: Pki, user: str = "fma-release-admin") -> str:
    """A kubeconfig (JSON, which is YAML) for ``server`` with the CA and the admin's certificate embedded."""
    def data(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    return json.dumps({
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": "proof", "cluster": {"server": server, "certificate-authority-data": data(pki.ca_cert)}}],
        "users": [{"name": user, "user": {"client-certificate-data": data(pki.admin_cert),
                                          "client-key-data": data(pki.admin_key)}}],
        "contexts": [{"name": "proof", "context": {"cluster": "proof", "user": user}}],
        "current-context": "proof",
    }, indent=2)


@dataclass
class LocalCluster:
    """etcd + kube-apiserver (+ kube-controller-manager) under a temporary directory.

    ``with LocalCluster(address=...) as cluster:`` starts them and waits until the API server is
    ready; leaving the block stops every process by its PID and removes the directory."""

    address: str = "127.0.0.1"
    controller_manager: bool = False
    bin_dir: Path = KUBE_BIN
    parent: Path | None = None  # where the temporary directory goes (default: the system's)
    timeout: float = START_TIMEOUT
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _tmp: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> Cluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Cluster:
        reason = missing_parts(self.bin_dir, controller_manager=self.controller_manager)
        if reason:
            raise KubernetesError(reason)
        began = time.monotonic()
        self._tmp = tempfile.TemporaryDirectory(prefix="fma-kube-", dir=self.parent)
        root = Path(self._tmp.name)
        (root / "logs").mkdir()
        pki = make_pki(root / "pki", [self.address, "127.0.0.1"])
        etcd_port, peer_port = free_port("127.0.0.1"), free_port("127.0.0.1")
        self._launch("etcd", root, [
            "--name=proof", f"--data-dir={root / 'etcd'}", "--log-level=warn", "--unsafe-no-fsync",
            f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-cluster=proof=http://127.0.0.1:{peer_port}",
        ])
        self._wait("etcd", root, lambda: _json(f"http://127.0.0.1:{etcd_port}/health").get("health") == "true")
        port = free_port(self.address)
        self._launch("kube-apiserver", root, [
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            f"--bind-address={self.address}", f"--secure-port={port}", f"--advertise-address={self.address}",
            f"--cert-dir={root / 'apiserver'}",
            f"--tls-cert-file={pki.server_cert}", f"--tls-private-key-file={pki.server_key}",
            f"--client-ca-file={pki.ca_cert}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki.sa_public}", f"--service-account-signing-key-file={pki.sa_private}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=RBAC",
            "--endpoint-reconciler-type=none",  # no kubernetes Endpoints pointing at an address Pods cannot use
            "--profiling=false",
        ])
        server = f"https://{self.address}:{port}"
        self._wait("kube-apiserver", root, lambda: _ready(server, pki))
        kubeconfig = root / "kubeconfig"
        kubeconfig.write_text(kubeconfig_text(server, pki), encoding="utf-8")
        kubeconfig.chmod(0o600)
        if self.controller_manager:
            kcm_port = free_port("127.0.0.1")
            self._launch("kube-controller-manager", root, [
                f"--kubeconfig={kubeconfig}", f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1", f"--secure-port={kcm_port}", f"--cert-dir={root / 'kcm'}",
                f"--service-account-private-key-file={pki.sa_private}", f"--root-ca-file={pki.ca_cert}",
                "--use-service-account-credentials=false", "--leader-elect=false",
                f"--controllers={','.join(CONTROLLERS)}",
            ])
            # Working, not only up: its service-account controller has given the default namespace its account.
            self._wait("kube-controller-manager", root,
                       lambda: _ready(server, pki, "/api/v1/namespaces/default/serviceaccounts/default"))
        version = str(_json(f"{server}/version", verify=str(pki.ca_cert)).get("gitVersion", ""))
        return Cluster(host=self.address, port=port, kubeconfig=kubeconfig, pki=pki, root=root, version=version,
                       started_in=time.monotonic() - began)

    def _launch(self, name: str, root: Path, args: list[str]) -> None:
        self.processes[name] = cmd.start([str(self.bin_dir / name), *args], log_file=root / "logs" / f"{name}.log",
                                         what=f"start {name}", cwd=root)

    def _wait(self, name: str, root: Path, healthy: Callable[[], bool]) -> None:
        proc = self.processes[name]
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise KubernetesError(f"{name} exited with code {proc.returncode} while starting: "
                                      f"{last_line(root / 'logs' / f'{name}.log')}")
            with contextlib.suppress(requests.RequestException, ValueError):
                if healthy():
                    return
            time.sleep(0.1)
        raise KubernetesError(f"{name} was not healthy after {self.timeout:.0f}s: "
                              f"{last_line(root / 'logs' / f'{name}.log')}")

    def stop(self) -> None:
        """Stop every process by its PID (the last started first) and remove the directory."""
        for name in reversed(list(self.processes)):
            cmd.stop(self.processes.pop(name))
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    @property
    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.processes.items()}


def last_line(log: Path) -> str:
    """The last line of a part's log that says something, or what to read."""
    with contextlib.suppress(OSError):
        lines = [line.strip() for line in log.read_text(encoding="utf-8", errors="replace").splitlines()]
        said = [line for line in lines if line]
        if said:
            return said[-1][-400:]
    return f"nothing in {log}"


def _json(url: str, *, verify: bool | str = True) -> dict[str, object]:
    response = requests.get(url, timeout=2, verify=verify)
    response.raise_for_status()
    found = response.json()
    return found if isinstance(found, dict) else {}



def _ready(server: str, pki: Pki, path: str = "/readyz") -> bool:
    response = requests.get(f"{server}{path}", timeout=2, verify=str(pki.ca_cert),
                            cert=(str(pki.admin_cert), str(pki.admin_key)))
    return response.status_code == 200


@contextlib.contextmanager
def local_cluster(address: str = "127.0.0.1", *, controller_manager: bool = False,
                  bin_dir: Path = KUBE_BIN) -> Iterator[Cluster]:
    """A started :class:`LocalCluster`'s :class:`Cluster`, stopped and removed on leaving."""
    with LocalCluster(address=address, controller_manager=controller_manager, bin_dir=bin_dir) as cluster:
        yield cluster
