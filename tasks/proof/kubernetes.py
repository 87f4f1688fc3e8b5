"""The proof on a real Kubernetes API server: the CRDs and a chart install, and each of the
release's controllers runs from its image against the server until it settles.

:func:`prove_on_kubernetes` is the whole check, as a staged release calls it: it starts a local API
server (:mod:`tasks.proof.cluster`) where the Docker engine's containers reach it (the gateway of
the engine's bridge network), or uses a cluster it is given; applies the CRD files and any other
objects a real install has first; installs each chart with Helm's SDK into a fresh namespace (any
object the server refuses fails the install, named); then, for every container of a Deployment
whose image is one of the release's, on every platform of that image (arm64 under qemu), starts the
image with the chart's command, args and env and the Deployment's service account mounted as
Kubernetes mounts it (a TokenRequest token, ``ca.crt``, ``namespace``) and ``KUBERNETES_SERVICE_*``
pointing at the server. A container still running after ``settle_seconds`` passes; one that exits
fails with its last lines. Everything is torn down: containers, the namespace, the server.

It returns named checks (:class:`~tasks.proof.checks.ProofCheck`), never raises for a chart's or a
controller's fault, and says in one skipped check why it could not run (no built Kubernetes, no
Docker engine): it never passes silently.
"""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import helm_python as helm
import requests.exceptions
import yaml

from tasks.core.errors import KubernetesError
from tasks.core.redact import redact
from tasks.proof.checks import (
    SERVICE_ACCOUNT_DIR,
    ContainerRun,
    ProofCheck,
    container_verdict,
    kubernetes_env,
    manifest_docs,
    not_run,
    refusal,
    release_containers,
    service_account_files,
)
from tasks.proof.cluster import KUBE_BIN, Cluster, LocalCluster, missing_parts
from tasks.proof.kubeapi import KubeAPI, Refused, object_name
from tasks.run.engines import stream_error

PROOF_LABEL = "fma-release.proof"  # on every container a proof starts: its run's id
POLL = 0.5  # seconds between looks at the running containers
INSTALL_TIMEOUT = 120  # seconds Helm may take to create a chart's objects

Say = Callable[[str], None]


@dataclass(frozen=True)
class KubeProof:
    """What a Kubernetes proof checks.

    ``images``: each image reference the charts render that is the release's, with the reference to
    run for each of its platforms (by digest: ``{"linux/amd64": "reg/x@sha256:..."}``).
    ``crds``: CustomResourceDefinition files (from the source at the tag), applied first.
    ``objects``: other objects a real install has before the chart (a ClusterRole the values name).
    ``values``: for the proof only, over the chart's own."""

    charts: tuple[Path, ...]  # packaged archives or chart directories
    images: Mapping[str, Mapping[str, str]]
    values: Mapping[str, Any] = field(default_factory=dict)
    crds: tuple[Path, ...] = ()
    objects: tuple[Mapping[str, Any], ...] = ()
    settle_seconds: float = 20.0
    release_name: str = "fma"
    controller_manager: bool = False  # also run kube-controller-manager (ReplicaSets, namespace deletion)


def bridge_gateway(client: docker.DockerClient) -> str:
    """The address of the engine's host on its default bridge: where its containers reach the host."""
    try:
        config = client.networks.get("bridge").attrs.get("IPAM", {}).get("Config") or []
    except docker.errors.DockerException as err:
        raise KubernetesError(f"cannot read the Docker engine's bridge network: {err}") from err
    gateway = ipv4_gateway(config)
    if gateway is None:
        raise KubernetesError("the Docker engine's bridge network has no IPv4 gateway or subnet: the containers "
                              "could not reach the API server")
    return gateway


def ipv4_gateway(config: Sequence[Mapping[str, Any]]) -> str | None:
    """The IPv4 gateway of a network's IPAM ``config`` (pure): as given, else the subnet's first address, which is
    the one the engine gives its bridge when none is given (a dockerd that found docker0 already up records the
    subnet alone)."""
    for pool in config:
        gateway, subnet = str(pool.get("Gateway") or ""), str(pool.get("Subnet") or "")
        if gateway and ":" not in gateway:
            return gateway
        if subnet and ":" not in subnet:
            with contextlib.suppress(ValueError, StopIteration):
                return str(next(ipaddress.ip_network(subnet, strict=False).hosts()))
    return None


def engine_problem(client: docker.DockerClient) -> str:
    """Why the engine cannot run the proof's containers, in one line, or ``""``."""
    try:
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as err:
        return f"no Docker engine answers ({type(err).__name__}): start dockerd (bash scripts/setup.sh does)"
    return ""


def prove_on_kubernetes(
    proof: KubeProof,
    client: docker.DockerClient,
    *,
    cluster: Cluster | None = None,
    bin_dir: Path = KUBE_BIN,
    parent: Path | None = None,
    say: Say | None = None,
) -> list[ProofCheck]:
    """Run the whole proof (module docstring); the checks in order. ``cluster``: use this running
    server instead of starting one (its address must be reachable from the engine's containers; what
    the proof made there is deleted afterwards); ``parent``: where a started server's directory goes."""
    tell: Say = say or (lambda _line: None)
    why = engine_problem(client)
    if not why and cluster is None:
        why = missing_parts(bin_dir, controller_manager=proof.controller_manager)
    if why:
        tell(f"kubernetes proof: not run: {why}")
        return [not_run(why)]
    began = time.monotonic()
    with contextlib.ExitStack() as stack:
        undo: list[Callable[[], None]] | None = None  # a server the proof started goes whole
        if cluster is None:
            try:
                cluster = stack.enter_context(LocalCluster(
                    address=bridge_gateway(client), bin_dir=bin_dir, parent=parent,
                    controller_manager=proof.controller_manager))
            except KubernetesError as err:
                tell(f"kubernetes proof: not run: {err}")
                return [not_run(str(err))]
            tell(f"kubernetes proof: API server {cluster.version} ready at {cluster.server} "
                 f"in {cluster.started_in:.1f} s")
        else:
            undo = []
            stack.callback(_undo, undo)
        run = _Proving(proof=proof, cluster=cluster, api=stack.enter_context(KubeAPI(cluster)), client=client,
                       run_id=secrets.token_hex(4), undo=undo, tell=tell)
        checks = [ProofCheck("kubernetes: API server", True, f"{cluster.version or 'unknown version'} at "
                             f"{cluster.server}", time.monotonic() - began)]
        checks += run.apply_first()
        if all(c.passed for c in checks):
            for chart in proof.charts:
                checks += run.chart(chart)
    return checks


def _undo(steps: list[Callable[[], None]]) -> None:
    """Delete what the proof made on a server it did not start, the last first; best effort."""
    for step in reversed(steps):
        with contextlib.suppress(Refused, KubernetesError, helm.HelmError):
            step()


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if isinstance(doc, dict) and doc]


def chart_label(chart: Path) -> str:
    """A chart's name as the checks say it: the directory's, or the archive's without the version."""
    name = chart.name.removesuffix(".tgz")
    head, _, tail = name.rpartition("-")
    return head if chart.is_file() and head and tail[:1].isdigit() else name


@dataclass
class _Started:
    run: ContainerRun
    platform: str
    container: Any  # docker.models.containers.Container
    began: float


@dataclass
class _Proving:
    """One proof's parts, passed whole to each of its steps."""

    proof: KubeProof
    cluster: Cluster
    api: KubeAPI
    client: docker.DockerClient
    run_id: str
    undo: list[Callable[[], None]] | None  # None: the server goes whole, nothing to delete one by one
    tell: Say

    def _remember(self, doc: Mapping[str, Any]) -> None:
        if self.undo is not None:
            self.undo.append(lambda: self.api.delete(doc))

    def apply_first(self) -> list[ProofCheck]:
        """The CRDs (each file's documents, each served before the next step) and the other objects."""
        checks = []
        if self.proof.crds:
            began = time.monotonic()
            names: list[str] = []
            path = self.proof.crds[0]
            try:
                for path in self.proof.crds:
                    for doc in _documents(path):
                        self.api.create(doc)
                        self._remember(doc)
                        if doc.get("kind") == "CustomResourceDefinition":
                            self.api.wait_established(str(doc["metadata"]["name"]))
                        names.append(str((doc.get("metadata") or {}).get("name", "?")))
            except Refused as err:
                checks.append(ProofCheck("kubernetes: CRDs", False, f"the API server refused {err.what} of "
                                         f"{path.name}: {err.reason}", time.monotonic() - began))
            except (OSError, yaml.YAMLError) as err:
                checks.append(ProofCheck("kubernetes: CRDs", False, f"cannot read {path}: {_one_line(err)}",
                                         time.monotonic() - began))
            else:
                checks.append(ProofCheck("kubernetes: CRDs", True, f"applied {len(names)}: {', '.join(names)}",
                                         time.monotonic() - began))
            self.tell(f"kubernetes proof: CRDs: {checks[-1].detail}")
        if self.proof.objects:
            began = time.monotonic()
            try:
                for item in self.proof.objects:
                    self.api.create(item)
                    self._remember(item)
            except Refused as err:
                checks.append(ProofCheck("kubernetes: objects", False, f"the API server refused {err.what}: "
                                         f"{err.reason}", time.monotonic() - began))
            else:
                checks.append(ProofCheck("kubernetes: objects", True, "created " + ", ".join(
                    object_name(d) for d in self.proof.objects), time.monotonic() - began))
        return checks

    def chart(self, chart: Path) -> list[ProofCheck]:
        """Install ``chart`` into a fresh namespace; then run its release containers."""
        label = chart_label(chart)
        namespace = f"proof-{label[:40]}-{self.run_id}".lower()
        began = time.monotonic()
        try:
            self.api.create_namespace(namespace)
        except Refused as err:
            return [ProofCheck(f"kubernetes: install {label}", False, f"cannot create the namespace {namespace}: "
                               f"{err.reason}", time.monotonic() - began)]
        self._remember({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        ok, detail, docs = install_chart(self.cluster, chart, namespace, release=self.proof.release_name,
                                         values=dict(self.proof.values))
        if self.undo is not None:  # before the namespace goes: the chart's cluster-wide objects go with it
            release = self.proof.release_name
            self.undo.append(lambda: _uninstall(self.cluster, release, namespace))
        install = ProofCheck(f"kubernetes: install {label}", ok, detail, time.monotonic() - began)
        self.tell(f"kubernetes proof: install {label}: {detail}")
        if not ok:
            return [install]
        return [install, *self.containers(label, release_containers(docs, self.proof.images.keys(), namespace))]

    def containers(self, label: str, runs: Sequence[ContainerRun]) -> list[ProofCheck]:
        """Start every container of ``runs`` on every platform of its image at once, watch them for
        ``settle_seconds``, then remove them; one check each."""
        checks: list[ProofCheck] = []
        started: list[_Started] = []
        with tempfile.TemporaryDirectory(prefix="fma-proof-sa-") as tmp, contextlib.ExitStack() as cleanup:
            cleanup.callback(_remove, started)
            for run in runs:
                for platform, ref in sorted(self.proof.images[run.image].items()):
                    name = f"kubernetes: {label} {run.label} {platform}"
                    began = time.monotonic()
                    try:
                        container = self._create(run, platform, ref, Path(tmp) / str(len(started)))
                        started.append(_Started(run, platform, container, time.monotonic()))
                        container.start()
                    except Refused as err:
                        checks.append(ProofCheck(name, False, f"cannot give it its service account: {err.what}: "
                                                 f"{err.reason}", time.monotonic() - began))
                    except (docker.errors.DockerException, KubernetesError) as err:
                        checks.append(ProofCheck(name, False, f"cannot start {ref}: {_one_line(err)}",
                                                 time.monotonic() - began))
            self.tell(f"kubernetes proof: {label}: {len(started)} container(s) started; watching them for "
                      f"{self.proof.settle_seconds:.0f} s")
            checks += _watch(started, self.proof.settle_seconds, label)
        for check in checks:
            self.tell(f"kubernetes proof: {check.name.removeprefix('kubernetes: ')}: {check.detail}")
        return checks

    def _create(self, run: ContainerRun, platform: str, ref: str, directory: Path) -> Any:
        image = pull(self.client, ref, platform)
        mount = _service_account_dir(self.api, self.cluster, run, directory)
        return self.client.containers.create(
            image, entrypoint=list(run.command) if run.command is not None else None,
            command=list(run.args) if run.args is not None else None,
            environment={**dict(run.env), **kubernetes_env(self.cluster.host, self.cluster.port)},
            volumes={str(mount): {"bind": SERVICE_ACCOUNT_DIR, "mode": "ro"}} if mount else {},
            tmpfs={path: "" for path in run.mounts}, working_dir=run.working_dir or None,
            labels={PROOF_LABEL: self.run_id}, name=f"fma-proof-{self.run_id}-{directory.name}",
            hostname=f"{run.deployment}-proof"[:63],
        )


def install_chart(cluster: Cluster, chart: Path, namespace: str, *, release: str, values: dict[str, Any]
                  ) -> tuple[bool, str, list[dict[str, Any]]]:
    """Install ``chart`` with Helm's SDK: ``(accepted, detail, the objects it made)``. A refusal
    names the object the API server refused and says the server's reason."""
    with helm.Config(kubeconfig_path=cluster.kubeconfig, namespace=namespace) as config:
        try:
            made = config.install(str(chart), release, values, namespace=namespace, timeout=INSTALL_TIMEOUT)
        except helm.HelmError as err:
            docs = _rendered(chart, release, namespace, values)
            what, reason = refusal(str(err), docs)
            named = f"the API server refused {what}: " if what else "Helm could not install it: "
            return False, named + reason, docs
    docs = manifest_docs(str(made.get("manifest", "")))
    kinds: dict[str, int] = {}
    for doc in docs:
        kinds[str(doc.get("kind"))] = kinds.get(str(doc.get("kind")), 0) + 1
    made_text = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
    return True, f"accepted in {namespace}: {made_text or 'no objects'}", docs


def _uninstall(cluster: Cluster, release: str, namespace: str) -> None:
    with helm.Config(kubeconfig_path=cluster.kubeconfig, namespace=namespace) as config:
        config.uninstall(release, ignore_not_found=True)


def _rendered(chart: Path, release: str, namespace: str, values: dict[str, Any]) -> list[dict[str, Any]]:
    """The chart's objects as Helm renders them (to name a refused one); ``[]`` if it does not render."""
    try:
        loaded = helm.Chart.load(chart)
    except helm.HelmError:
        return []
    try:
        return manifest_docs(loaded.render(values, name=release, namespace=namespace, is_install=True))
    except helm.HelmError:
        return []
    finally:
        loaded.close()


def _one_line(err: Exception) -> str:
    return " ".join(redact(str(err)).split())[:400]


def pull(client: docker.DockerClient, ref: str, platform: str) -> str:
    """Pull ``ref`` (a platform's manifest, by digest) into the engine; the reference to run."""
    repository, sep, digest = ref.partition("@")
    if not sep:
        repository, _, digest = ref.rpartition(":")
    for item in client.api.pull(repository, tag=digest, platform=platform, stream=True, decode=True):
        error = stream_error(item)
        if error:
            raise KubernetesError(f"the engine could not pull {ref}: {error}")
    return ref


def _service_account_dir(api: KubeAPI, cluster: Cluster, run: ContainerRun, directory: Path) -> Path | None:
    """The service account's files as Kubernetes mounts them, in ``directory`` (readable by any user
    of the container, as Kubernetes' default mode 0644 makes them); None when the Pod mounts none."""
    if not run.token:
        return None
    token = api.token(run.namespace, run.service_account)
    directory.mkdir(mode=0o755)
    for name, data in service_account_files(token, cluster.pki.ca_cert.read_bytes(), run.namespace).items():
        (directory / name).write_bytes(data)
        (directory / name).chmod(0o644)
    return directory


def _watch(started: Sequence[_Started], settle: float, label: str) -> list[ProofCheck]:
    """Watch every container until ``settle`` seconds have passed since it started (or all have
    ended), then judge each."""
    ended: dict[int, float] = {}
    while True:
        now = time.monotonic()
        for i, item in enumerate(started):
            if i in ended:
                continue
            with contextlib.suppress(docker.errors.NotFound):
                item.container.reload()
            if item.container.status not in ("created", "running"):
                ended[i] = now
        if len(ended) == len(started) or all(now - s.began >= settle for s in started):
            break
        time.sleep(POLL)
    checks = []
    for i, item in enumerate(started):
        state = item.container.attrs.get("State") or {}
        running = i not in ended
        watched = (ended[i] if not running else time.monotonic()) - item.began
        output = item.container.logs(tail=40).decode("utf-8", "replace")
        passed, detail = container_verdict(running=running, exit_code=state.get("ExitCode"), watched=watched,
                                           output=output, oom=bool(state.get("OOMKilled")))
        if item.run.notes:
            detail += f" ({'; '.join(item.run.notes)})"
        checks.append(ProofCheck(f"kubernetes: {label} {item.run.label} {item.platform}", passed,
                                 f"{detail} [{item.run.image}]", watched))
    return checks


def _remove(started: Sequence[_Started]) -> None:
    for item in started:
        with contextlib.suppress(docker.errors.DockerException):
            item.container.remove(force=True)


@contextlib.contextmanager
def proof_cluster(client: docker.DockerClient, *, controller_manager: bool = False, bin_dir: Path = KUBE_BIN
                  ) -> Iterator[Cluster]:
    """A local API server where ``client``'s containers reach it, for several proofs in a row."""
    with LocalCluster(address=bridge_gateway(client), controller_manager=controller_manager,
                      bin_dir=bin_dir) as cluster:
        yield cluster
