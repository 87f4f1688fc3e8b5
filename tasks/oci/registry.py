"""Read an OCI registry through its HTTP API (distribution spec v2).

Used to read back what a release published (manifests, digests, labels) and
to decide whether a chart version already exists. Auth follows the
registry's challenge: Basic, or a Bearer token fetched from the realm (as
ghcr and Docker Hub do). Credentials go only to a host they are bound to
(FMA_REGISTRY_HOSTS), and only after that host asked for them: the first
request to a host is anonymous, Basic is sent after a Basic challenge, and
a Bearer realm on another host gets them only when they are bound to it
too. TLS is verified per request (the machine-wide ``REQUESTS_CA_BUNDLE``
would override ``Session.verify``); a loopback registry without TLS is
spoken to over plain HTTP, as dockerd does.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import socket
import ssl
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import requests

from tasks.core.errors import RegistryError
from tasks.oci.auth import ANONYMOUS, RegistryAccess, RegistryCredentials
from tasks.oci.references import Reference

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


def is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


# Loopback registries are spoken to without TLS verification on purpose (see _verify).
warnings.filterwarnings(
    "ignore", message=r"Unverified HTTPS request is being made to host '(127\.|localhost|\[?::1)",
)

class Schemes:
    """Which scheme each registry host speaks, asked once per host and owner (a run's :class:`Registries`): the
    threads that need a host at once wait for one probe."""

    def __init__(self) -> None:
        self._known: dict[str, str] = {}
        self._probing: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def __call__(self, host: str) -> str:
        """``https``, or ``http`` for a loopback registry that does not speak TLS."""
        with self._lock:
            if host in self._known:
                return self._known[host]
            probing = self._probing.setdefault(host, threading.Lock())
        with probing:
            with self._lock:
                if host in self._known:
                    return self._known[host]
            scheme = "http" if is_loopback(host) and not speaks_tls(host) else "https"
            with self._lock:
                self._known[host] = scheme
        return scheme


def speaks_tls(host: str, timeout: float = 5) -> bool:
    """Whether ``host`` (``name[:port]``, port 443 by default) completes a TLS handshake. A probe of which scheme
    a loopback registry speaks: no certificate is checked and nothing is sent after the handshake, so nothing it
    says is trusted. A refused or dropped connection counts as no TLS (plain HTTP's own request then says why)."""
    parts = urlsplit(f"//{host}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # no CA bundle to load: nothing is verified
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((parts.hostname or "", parts.port or 443), timeout=timeout) as sock, \
                context.wrap_socket(sock, server_hostname=parts.hostname):
            return True
    except (OSError, ValueError):  # ssl.SSLError is an OSError: a plain HTTP server answers the hello with a 400
        return False


def registry_scheme(host: str) -> str:
    """:class:`Schemes` for a caller without a run (asks every time)."""
    return Schemes()(host)


MAX_RETRY_AFTER = 30.0


def retry_after(value: str) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds), capped; ``None`` when absent or a date."""
    value = value.strip()
    if not value.isdigit():
        return None
    return min(float(value), MAX_RETRY_AFTER)


_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')


class RegistryAPI:
    """A small client for one registry host."""

    def __init__(
        self, host: str, access: RegistryAccess = ANONYMOUS, timeout: float = 30, *,
        anonymous: bool = False, schemes: Schemes | None = None,
    ) -> None:
        """``access``: the credentials and CA bundle to use (the run's settings; none by default);
        ``anonymous``: send no credentials (a registry other than the release's, e.g. of a base image)."""
        self.host = host
        self.access = ANONYMOUS if anonymous else access
        self.credentials: RegistryCredentials | None = self.access.credentials(host)
        self.ca_file = access.registry_ca_file
        self.timeout = timeout
        self.base = f"{(schemes or registry_scheme)(host)}://{host}"
        self._session = requests.Session()
        self._session.trust_env = False  # no ~/.netrc: credentials come from the run, bound to their host
        self._token: dict[str, str] = {}
        self._basic_asked = False  # the host sent a Basic challenge: Basic goes with every request since

    def _verify(self) -> bool | str:
        """A CA bundle when configured; loopback registries go unverified, as dockerd treats them."""
        return self.ca_file or not is_loopback(self.host)

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> RegistryAPI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport -------------------------------------------------------------

    def request(self, method: str, path: str, *, scope: str, **kwargs: Any) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}))
        url = f"{self.base}{path}"
        throttled = 0
        body: Any = kwargs.get("data")
        start = body.tell() if hasattr(body, "seek") else None  # a file body is sent again from its start
        for _ in range(3):
            if start is not None:
                body.seek(start)
            token = self._token.get(scope)
            if token:
                headers["Authorization"] = f"Bearer {token}"
            try:
                response = self._session.request(
                    method, url, headers=headers, timeout=self.timeout, verify=self._verify(),
                    auth=None if token or not self._basic_asked else self._basic(), **kwargs,
                )
            except requests.exceptions.SSLError as err:
                raise RegistryError(
                    f"TLS verification of the registry {self.host} failed: set FMA_REGISTRY_CA_FILE to its "
                    "CA bundle, or check the address"
                ) from err
            except requests.exceptions.RequestException as err:
                raise RegistryError(
                    f"cannot reach the registry {self.host} ({type(err).__name__}): check the address "
                    "and that the registry is running",
                    transient=True,
                ) from err
            wait = retry_after(response.headers.get("Retry-After", "")) if response.status_code == 429 else None
            if wait is not None and not throttled:  # rate limited: wait as told, once, then try again
                throttled += 1
                time.sleep(wait)
                continue
            if response.status_code != 401:
                return response
            challenge = response.headers.get("WWW-Authenticate", "")
            if challenge.lower().startswith("basic"):
                if self._basic_asked or self.credentials is None:
                    return response
                self._basic_asked = True  # asked by this very host: answer with its credentials
                continue
            if not challenge.lower().startswith("bearer") or scope in self._token:
                return response
            self._token[scope] = self._fetch_token(challenge, scope)
        return response

    def _basic(self) -> tuple[str, str] | None:
        if self.credentials is None:
            return None
        return (self.credentials.username, self.credentials.password.get_secret_value())

    def _fetch_token(self, challenge: str, scope: str) -> str:
        params: dict[str, str | list[str]] = dict(_CHALLENGE.findall(challenge))
        realm = str(params.pop("realm", ""))
        if not realm:
            raise RegistryError(f"registry {self.host} sent a Bearer challenge without a realm")
        # A request that spans repositories (a blob mount) asks for each scope: one ``scope`` parameter each.
        params["scope"] = scope.split() if " " in scope else params.get("scope", scope)
        realm_host = urlsplit(realm).netloc
        # The token service gets the credentials only when they are bound to its host too.
        creds = self.credentials if realm_host == self.host else self.access.credentials(realm_host)
        auth = (creds.username, creds.password.get_secret_value()) if creds is not None else None
        try:
            response = self._session.get(
                realm, params=params, auth=auth, timeout=self.timeout,
                verify=self.ca_file or not is_loopback(realm_host),
            )
        except requests.exceptions.RequestException as err:
            raise RegistryError(
                f"cannot reach the token service of {self.host}: check the network", transient=True
            ) from err
        if response.status_code in (401, 403):
            raise RegistryError(
                f"registry {self.host} refused the credentials: check FMA_REGISTRY_USERNAME / "
                "FMA_REGISTRY_PASSWORD"
            )
        response.raise_for_status()
        body = response.json()
        return str(body.get("token") or body.get("access_token") or "")

    def _check(self, response: requests.Response, what: str) -> None:
        if response.status_code in (401, 403):
            raise RegistryError(
                f"registry {self.host} refused to {what} ({response.status_code}): check "
                "FMA_REGISTRY_USERNAME / FMA_REGISTRY_PASSWORD"
            )
        if response.status_code >= 500 or response.status_code == 429:
            raise RegistryError(
                f"registry {self.host} failed to {what} ({response.status_code}): try again later",
                transient=True,
            )
        if response.status_code >= 400:
            raise RegistryError(f"registry {self.host} cannot {what} ({response.status_code})")

    # -- reads -------------------------------------------------------------------

    def check_access(self, repository: str) -> None:
        """Fail unless the registry answers and accepts the credentials (for pulls and pushes).

        No retry: the point is to fail fast, before anything is built.
        """
        response = self.request("GET", "/v2/", scope=f"repository:{repository}:pull,push")
        if response.status_code == 401:
            if self.credentials is None:
                raise RegistryError(
                    f"registry {self.host} requires credentials: set FMA_REGISTRY_USERNAME and "
                    f"FMA_REGISTRY_PASSWORD, with {self.host} in FMA_REGISTRY_HOSTS"
                )
            raise RegistryError(
                f"registry {self.host} refused the credentials of {self.credentials.username!r}: check "
                "FMA_REGISTRY_USERNAME / FMA_REGISTRY_PASSWORD"
            )
        self._check(response, "answer the API check")

    def manifest(self, repository: str, reference: str) -> tuple[str, dict[str, Any]] | None:
        """``(digest, manifest)`` for a tag or digest, ``None`` when it does not exist."""
        found = self.manifest_bytes(repository, reference)
        if found is None:
            return None
        digest, _, body = found
        return digest, json.loads(body)

    def digest(self, repository: str, reference: str) -> str:
        """The digest ``reference`` (a tag) points at, ``""`` when there is none; one HEAD request."""
        response = self.request(
            "HEAD", f"/v2/{repository}/manifests/{reference}",
            scope=f"repository:{repository}:pull", headers={"Accept": MANIFEST_TYPES},
        )
        if response.status_code == 404:
            return ""
        self._check(response, f"read {repository}:{reference}")
        return response.headers.get("Docker-Content-Digest", "")

    def blob(self, repository: str, digest: str) -> bytes:
        response = self.request(
            "GET", f"/v2/{repository}/blobs/{digest}", scope=f"repository:{repository}:pull"
        )
        self._check(response, f"read blob {digest} of {repository}")
        return response.content

    def manifest_bytes(self, repository: str, reference: str) -> tuple[str, str, bytes] | None:
        """``(digest, media type, bytes)`` of a manifest as stored, ``None`` when it does not exist."""
        response = self.request(
            "GET", f"/v2/{repository}/manifests/{reference}",
            scope=f"repository:{repository}:pull", headers={"Accept": MANIFEST_TYPES},
        )
        if response.status_code == 404:
            return None
        self._check(response, f"read {repository}:{reference}")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        return response.headers.get("Docker-Content-Digest", ""), media_type, response.content

    def put_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str:
        """PUT a manifest (e.g. an image index) under a tag; its digest as the registry computed it.

        Faults are :class:`RegistryError`, ``transient`` for 5xx, 429 and dropped connections.
        """
        response = self.request(
            "PUT", f"/v2/{repository}/manifests/{reference}", scope=f"repository:{repository}:pull,push",
            headers={"Content-Type": media_type}, data=body,
        )
        self._check(response, f"write the manifest {repository}:{reference}")
        return response.headers.get("Docker-Content-Digest", "")

    def tags(self, repository: str) -> list[str]:
        response = self.request("GET", f"/v2/{repository}/tags/list", scope=f"repository:{repository}:pull")
        if response.status_code == 404:
            return []
        self._check(response, f"list the tags of {repository}")
        return list(response.json().get("tags") or [])

    def manifest_and_config(self, repository: str, reference: str) -> ImageManifest | None:
        """A single-platform image's manifest (as stored) and its config blob; ``None`` when the
        reference does not exist or is not an image manifest (an index, a chart)."""
        found = self.manifest_bytes(repository, reference)
        if found is None:
            return None
        digest, media_type, body = found
        manifest = json.loads(body)
        config = manifest.get("config") or {}
        if "digest" not in config or "manifests" in manifest:
            return None
        return ImageManifest(digest=digest, media_type=media_type or str(manifest.get("mediaType", "")), body=body,
                             manifest=manifest, config=json.loads(self.blob(repository, config["digest"])))

    def image_config(self, repository: str, reference: str) -> dict[str, Any] | None:
        """The image config (with ``config.Labels``) of a single-platform image."""
        found = self.manifest_and_config(repository, reference)
        return None if found is None else found.config


    # -- blob upload (for pushing an OCI layout) -----------------------------------

    def blob_exists(self, repository: str, digest: str) -> bool:
        """Whether the repository holds the blob ``digest`` (one HEAD request)."""
        response = self.request(
            "HEAD", f"/v2/{repository}/blobs/{digest}", scope=f"repository:{repository}:pull"
        )
        if response.status_code == 404:
            return False
        self._check(response, f"look up blob {digest} of {repository}")
        return True

    def upload_blob(self, repository: str, digest: str, data: bytes | Path | BinaryIO) -> None:
        """Upload one blob monolithically: ``POST .../blobs/uploads/``, then ``PUT <Location>?digest=``.

        ``data``: the bytes, a file on disk, or an open file positioned at their start; a file is
        streamed as it is read (a layer need not fit in memory). The registry checks the bytes against
        ``digest``. Faults are :class:`RegistryError`, ``transient`` for 5xx, 429 and dropped connections.
        """
        if isinstance(data, Path):
            with data.open("rb") as body:
                self._upload_blob(repository, digest, body)
        else:
            self._upload_blob(repository, digest, data)

    def _upload_blob(self, repository: str, digest: str, data: bytes | BinaryIO) -> None:
        scope = f"repository:{repository}:pull,push"
        started = self.request("POST", f"/v2/{repository}/blobs/uploads/", scope=scope, data=b"")
        self._check(started, f"start an upload to {repository}")
        self._finish_upload(repository, self._location(started, repository), digest, data, scope=scope)

    def _location(self, started: requests.Response, repository: str) -> str:
        location = started.headers.get("Location", "")
        if not location:
            raise RegistryError(
                f"registry {self.host} started an upload to {repository} but sent no Location; "
                "check that it speaks the distribution API", transient=True,
            )
        return self._same_origin_path(location)

    def _finish_upload(self, repository: str, path: str, digest: str, data: bytes | BinaryIO, *,
                       scope: str) -> None:
        separator = "&" if "?" in path else "?"
        response = self.request(
            "PUT", f"{path}{separator}digest={digest}", scope=scope, data=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        self._check(response, f"upload blob {digest} to {repository}")

    def mount_blob(self, repository: str, digest: str, source: str) -> str:
        """Mount the blob ``digest`` of the repository ``source`` (on this host) into ``repository``
        without sending its bytes: ``POST .../blobs/uploads/?mount=<digest>&from=<source>``.

        ``""`` when it is mounted (201). A registry that cannot mount it (no pull right on
        ``source``, the blob is not there, or no cross-repository mounts at all) starts an upload
        instead (202): its location is returned, for :meth:`finish_upload`.
        """
        scope = f"repository:{repository}:pull,push repository:{source}:pull"
        started = self.request("POST", f"/v2/{repository}/blobs/uploads/?mount={digest}&from={source}",
                               scope=scope, data=b"")
        self._check(started, f"mount blob {digest} from {source} into {repository}")
        if started.status_code == 201:
            return ""
        return self._location(started, repository)

    def finish_upload(self, repository: str, location: str, digest: str, data: bytes | BinaryIO) -> None:
        """Send a blob's bytes to an upload :meth:`mount_blob` started instead of mounting."""
        self._finish_upload(repository, location, digest, data, scope=f"repository:{repository}:pull,push")

    def fetch_blob(self, repository: str, digest: str, into: BinaryIO, chunk: int = 1 << 20) -> int:
        """Write the blob ``digest`` into the file ``into`` as it arrives, checked against its digest;
        the number of bytes. A blob that does not match is a transient :class:`RegistryError` (a
        transfer cut short, or a proxy that changed it)."""
        response = self.request("GET", f"/v2/{repository}/blobs/{digest}", scope=f"repository:{repository}:pull",
                                stream=True)
        try:
            self._check(response, f"read blob {digest} of {repository}")
            algorithm = digest.partition(":")[0]
            hasher = hashlib.new(algorithm) if algorithm in ("sha256", "sha512") else None
            size = 0
            try:
                for part in response.iter_content(chunk):
                    into.write(part)
                    size += len(part)
                    if hasher is not None:
                        hasher.update(part)
            except requests.exceptions.RequestException as err:
                raise RegistryError(f"reading blob {digest} of {repository} from {self.host} was cut short "
                                    f"({type(err).__name__}): try again", transient=True) from err
        finally:
            response.close()
        if hasher is not None and f"{algorithm}:{hasher.hexdigest()}" != digest:
            raise RegistryError(f"registry {self.host} sent bytes for blob {digest} of {repository} that do not "
                                "match its digest: try again", transient=True)
        return size

    def referrers(self, repository: str, digest: str) -> list[dict[str, Any]] | None:
        """The descriptors of the manifests whose ``subject`` is ``digest`` (the OCI referrers API);
        ``None`` when the registry has no referrers API (then the referrers tag schema applies:
        :func:`tasks.oci.copy.referrers_tag`)."""
        response = self.request(
            "GET", f"/v2/{repository}/referrers/{digest}", scope=f"repository:{repository}:pull",
            headers={"Accept": "application/vnd.oci.image.index.v1+json"},
        )
        if response.status_code in (404, 405):
            return None
        self._check(response, f"list the referrers of {repository}@{digest}")
        try:
            found = response.json()
        except ValueError:
            return None  # something other than the API answered (a proxy's page)
        manifests = found.get("manifests") if isinstance(found, dict) else None
        return [m for m in manifests or [] if isinstance(m, dict) and m.get("digest")]

    def catalog(self, prefix: str = "", page: int = 1000) -> list[str]:
        """The repositories of this registry (``GET /v2/_catalog``, page by page) under ``prefix``;
        :class:`RegistryError` when the registry does not list them (many hosted ones do not)."""
        found: list[str] = []
        path = f"/v2/_catalog?n={page}"
        while path:
            response = self.request("GET", path, scope="registry:catalog:*")
            if response.status_code in (401, 403, 404, 405):
                raise RegistryError(f"registry {self.host} does not list its repositories "
                                    f"({response.status_code})")
            self._check(response, "list its repositories")
            names = [str(n) for n in response.json().get("repositories") or []]
            found += [n for n in names if n.startswith(prefix)]
            following = response.links.get("next", {}).get("url", "")
            path = self._same_origin_path(following) if following and names else ""
        return found

    def _same_origin_path(self, location: str) -> str:
        """An upload ``Location`` as a path on this registry (it may be relative or absolute)."""
        if not location.startswith(("http://", "https://")):
            return location if location.startswith("/") else f"/{location}"
        parts = urlsplit(location)
        if parts.netloc != self.host:
            raise RegistryError(
                f"registry {self.host} sent an upload location on another host ({parts.netloc}); "
                "uploads through a second host are not supported: push to that host directly"
            )
        return f"{parts.path}?{parts.query}" if parts.query else parts.path


@dataclass(frozen=True)
class ImageManifest:
    """One image manifest as the registry stores it, and its config."""

    digest: str
    media_type: str
    body: bytes
    manifest: dict[str, Any]
    config: dict[str, Any]

    @property
    def labels(self) -> dict[str, str]:
        return dict((self.config.get("config") or {}).get("Labels") or {})


class Registries:
    """The registry clients of a run: its access (the run's settings), and what it learnt of each host's scheme."""

    def __init__(self, access: RegistryAccess) -> None:
        self.access = access
        self.schemes = Schemes()

    def api(self, host: str, *, anonymous: bool = False, timeout: float = 30) -> RegistryAPI:
        return RegistryAPI(host, self.access, timeout, anonymous=anonymous, schemes=self.schemes)

    def for_ref(self, ref: str) -> tuple[RegistryAPI, Reference]:
        """A client for the host of ``ref`` (which names its registry), and the parsed reference."""
        target = Reference.parse(ref)
        return self.api(target.host), target

    def __getstate__(self) -> dict[str, object]:
        return {"access": self.access}  # another process learns schemes again

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["access"])  # type: ignore[misc]
