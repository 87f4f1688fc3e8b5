"""A small client of a Kubernetes API server, for what the proof does itself: create objects of
any kind (found through the server's discovery), make a namespace, ask for a service account's
token (the TokenRequest API, as the kubelet does), wait for a CRD to be served, delete.

It speaks the API over HTTPS with the admin's client certificate. A refusal is a
:class:`Refused` naming the object as ``Kind/name`` with the server's own message; a server that
cannot be reached is a :class:`~tasks.core.errors.KubernetesError`. Tokens are registered as
secrets (:mod:`tasks.core.redact`), so none reaches a log.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests

from tasks.core.errors import KubernetesError
from tasks.core.redact import register
from tasks.proof.cluster import Cluster


class Refused(Exception):
    """The API server refused an object: ``what`` names it (``Kind/name``), ``reason`` is its message."""

    def __init__(self, what: str, reason: str, code: int) -> None:
        super().__init__(f"{what}: {reason}")
        self.what = what
        self.reason = reason
        self.code = code


@dataclass(frozen=True)
class Resource:
    plural: str
    namespaced: bool


def object_name(doc: Mapping[str, Any]) -> str:
    """``Kind/name`` of a manifest, as a refusal names it."""
    meta = doc.get("metadata") or {}
    return f"{doc.get('kind', '?')}/{meta.get('name') or meta.get('generateName') or '?'}"


def api_path(api_version: str) -> str:
    """``/api/v1`` for the core group, ``/apis/GROUP/VERSION`` for the others."""
    return f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"


class KubeAPI:
    """The admin's view of one API server."""

    def __init__(self, cluster: Cluster, timeout: float = 30) -> None:
        self.cluster = cluster
        self.timeout = timeout
        self._session = requests.Session()
        self._session.trust_env = False  # the machine's CA bundle variable must not replace the server's CA
        self._session.cert = (str(cluster.pki.admin_cert), str(cluster.pki.admin_key))
        self._resources: dict[tuple[str, str], Resource] = {}

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> KubeAPI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> requests.Response:
        try:
            return self._session.request(method, f"{self.cluster.server}{path}", json=body, timeout=self.timeout,
                                         verify=str(self.cluster.pki.ca_cert))
        except requests.RequestException as err:
            raise KubernetesError(f"the API server {self.cluster.server} did not answer {method} {path} "
                                  f"({type(err).__name__}): is it still running?") from err

    # -- discovery ---------------------------------------------------------------------------

    def resource(self, api_version: str, kind: str, *, attempts: int = 20) -> Resource:
        """The resource serving ``kind`` of ``api_version``; asks the server's discovery again for a
        while (a CRD just established may take a moment to be listed)."""
        key = (api_version, kind)
        for attempt in range(attempts):
            if key in self._resources:
                return self._resources[key]
            response = self.request("GET", api_path(api_version))
            if response.ok:
                for found in response.json().get("resources") or []:
                    if "/" not in str(found.get("name", "")):
                        self._resources[(api_version, str(found.get("kind")))] = Resource(
                            str(found["name"]), bool(found.get("namespaced")))
            if key in self._resources:
                return self._resources[key]
            if attempt < attempts - 1:
                time.sleep(0.25)
        raise Refused(f"{kind} ({api_version})", f"the server has no resource for kind {kind} in {api_version}: "
                      "is its CustomResourceDefinition applied?", 404)

    def object_path(self, doc: Mapping[str, Any], namespace: str = "") -> str:
        """The collection a manifest is created in."""
        api_version, kind = str(doc.get("apiVersion", "")), str(doc.get("kind", ""))
        if not api_version or not kind:
            raise Refused(object_name(doc), "the manifest has no apiVersion or kind", 400)
        found = self.resource(api_version, kind)
        if not found.namespaced:
            return f"{api_path(api_version)}/{found.plural}"
        ns = (doc.get("metadata") or {}).get("namespace") or namespace or "default"
        return f"{api_path(api_version)}/namespaces/{ns}/{found.plural}"

    # -- objects -----------------------------------------------------------------------------

    def create(self, doc: Mapping[str, Any], namespace: str = "") -> dict[str, Any]:
        """Create ``doc``; :class:`Refused` naming it when the server does not accept it."""
        response = self.request("POST", self.object_path(doc, namespace), doc)
        if not response.ok:
            raise Refused(object_name(doc), status_message(response), response.status_code)
        created: dict[str, Any] = response.json()
        return created

    def delete(self, doc: Mapping[str, Any], namespace: str = "") -> None:
        """Delete ``doc`` (gone already is fine)."""
        name = (doc.get("metadata") or {}).get("name", "")
        response = self.request("DELETE", f"{self.object_path(doc, namespace)}/{name}")
        if not response.ok and response.status_code != 404:
            raise Refused(object_name(doc), status_message(response), response.status_code)

    def create_namespace(self, name: str) -> None:
        self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    def wait_established(self, crd_name: str, timeout: float = 30) -> None:
        """Wait until the CRD ``crd_name`` is served (condition Established)."""
        deadline = time.monotonic() + timeout
        while True:
            response = self.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd_name}")
            conditions = (response.json().get("status") or {}).get("conditions") or [] if response.ok else []
            if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
                return
            if time.monotonic() > deadline:
                raise Refused(f"CustomResourceDefinition/{crd_name}", f"not established after {timeout:.0f}s: "
                              f"{conditions_text(conditions)}", 0)
            time.sleep(0.1)

    def token(self, namespace: str, service_account: str, seconds: int = 3600) -> str:
        """A token of ``service_account`` from the TokenRequest API, as the kubelet asks for a Pod's;
        registered as a secret. :class:`Refused` when the account does not exist."""
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"expirationSeconds": seconds}}
        response = self.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token",
                                body)
        if not response.ok:
            raise Refused(f"ServiceAccount/{service_account}", status_message(response), response.status_code)
        token = str((response.json().get("status") or {}).get("token", ""))
        register(token)
        return token


def status_message(response: requests.Response) -> str:
    """The message of a Kubernetes ``Status`` answer, else the status line."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    message = str(body.get("message", "")) if isinstance(body, dict) else ""
    return message or f"HTTP {response.status_code} {response.reason}"


def conditions_text(conditions: list[dict[str, Any]]) -> str:
    return "; ".join(f"{c.get('type')}={c.get('status')} {c.get('message', '')}".strip() for c in conditions) or "none"
