"""A local Kubernetes API server for development, tests and benchmarks: etcd, kube-apiserver and
(asked for) kube-controller-manager, built from upstream's source by scripts/kube.sh.

The server itself is the proof's (tasks/proof/cluster.py): started on one address with its own
certificates, an admin kubeconfig, a service-account key pair and RBAC, everything under a
temporary directory, stopped by PID. This module adds what a developer uses by hand:

``python -m devkit.kube [--address ADDR] [--controller-manager]`` starts one, prints
``KUBECONFIG=...``, the server, its version and the PIDs, and stops it all on Ctrl-C or SIGTERM.
``--address`` defaults to 127.0.0.1; give the Docker bridge's gateway (``172.17.0.1``) for a server
that containers reach.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from tasks.core.errors import KubernetesError
from tasks.proof.cluster import KUBE_BIN, Cluster, LocalCluster, missing_parts

__all__ = ["KUBE_BIN", "Cluster", "LocalCluster", "kube_server", "main", "missing_parts"]


@contextmanager
def kube_server(*, address: str = "127.0.0.1", controller_manager: bool = False, parent: Path | None = None,
                bin_dir: Path = KUBE_BIN) -> Iterator[tuple[Cluster, LocalCluster]]:
    """A running server and its processes (``.pids``); stopped by PID and removed on leaving."""
    local = LocalCluster(address=address, controller_manager=controller_manager, parent=parent, bin_dir=bin_dir)
    with local as cluster:
        yield cluster, local


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devkit.kube", description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", default="127.0.0.1", help="the one address the API server listens on")
    parser.add_argument("--controller-manager", action="store_true", help="also run kube-controller-manager")
    args = parser.parse_args(argv)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        with kube_server(address=args.address, controller_manager=args.controller_manager) as (cluster, local):
            print(f"KUBECONFIG={cluster.kubeconfig}")
            print(f"server={cluster.server} version={cluster.version} started_in={cluster.started_in:.1f}s")
            print("pids=" + " ".join(f"{name}:{pid}" for name, pid in local.pids.items()), flush=True)
            with suppress(KeyboardInterrupt):
                stopped.wait()
    except KubernetesError as err:
        print(f"devkit.kube: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
