"""A fault-injecting HTTP proxy in front of a registry, for tests and benchmarks.

Rules pick requests by repository and operation (``upload_start``,
``upload_patch``, ``blob_put``, ``manifest_put``, ``manifest_get``, ...) and
answer them with a status code, a dropped connection or a hang, a set number of times
or forever. Everything else is forwarded as is (the Host header is kept, so
the registry's upload ``Location`` URLs point back at the proxy). Every
request is counted per ``(repository, operation)``, and so are the bytes of the
request bodies it received (``received``: what a client sent, blob bytes included).
"""

from __future__ import annotations

import http.client
import re
import socket
import sys
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_PATH = re.compile(r"^/v2/(?P<repo>.+?)/(?P<kind>manifests|blobs/uploads|blobs)(?:/(?P<ref>[^?]*))?")
_ERROR_CODES = {401: "UNAUTHORIZED", 403: "DENIED", 404: "NAME_UNKNOWN", 429: "TOOMANYREQUESTS"}
_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


def operation(method: str, path: str) -> tuple[str, str]:
    """``(repository, operation)`` of a registry API request."""
    match = _PATH.match(path)
    if not match:
        return "", f"{method.lower()}_other"
    repo, kind, ref = match.group("repo"), match.group("kind"), match.group("ref") or ""
    if kind == "manifests":
        return repo, f"manifest_{method.lower()}"
    if kind == "blobs/uploads":
        if method == "POST":
            return repo, "upload_start"
        return repo, {"PATCH": "upload_patch", "PUT": "blob_put"}.get(method, f"upload_{method.lower()}")
    del ref
    return repo, f"blob_{method.lower()}"


@dataclass
class Rule:
    repo_suffix: str  # matches repositories ending with it ("" = all)
    op: str
    status: int | None = None  # answer with this code...
    drop: bool = False  # ...or close the connection without answering
    hang: float = 0  # ...or hold the request this many seconds, then close the connection
    times: int | None = None  # None = forever
    retry_after: str | None = None
    ref: str = ""  # only this tag or digest ("" = any), e.g. the tag an image index is PUT under
    ref_suffix: str = ""  # only tags ending with it, e.g. ".sig" for cosign's signatures
    # ...or forward it without its query: a blob mount (POST .../uploads/?mount=&from=) reaches the registry as a
    # plain upload start, which it answers 202 with an upload's location, as a registry without mounts does
    no_mount: bool = False

    def matches(self, repo: str, op: str, ref: str = "") -> bool:
        return (op == self.op and repo.endswith(self.repo_suffix) and (not self.ref or ref == self.ref)
                and ref.endswith(self.ref_suffix) and (self.times is None or self.times > 0))


class _QuietServer(ThreadingHTTPServer):
    """A client that closes its kept-alive connection is no error worth a traceback on the console."""

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.rules: list[Rule] = []
        self.counts: Counter[tuple[str, str]] = Counter()
        self.received: Counter[tuple[str, str]] = Counter()  # request body bytes
        self.injected: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._released = threading.Event()  # set on stop: hung requests end
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            break
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    return b"".join(chunks)
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _handle(self) -> None:
                body = self._body()
                repo, op = operation(self.command, self.path)
                match = _PATH.match(self.path)
                rule = proxy._take(repo, op, (match.group("ref") or "") if match else "", len(body))
                path = self.path
                if rule is not None and rule.no_mount:
                    path, rule = path.split("?", 1)[0], None
                if rule is not None:
                    if rule.hang:
                        proxy._released.wait(rule.hang)
                    if rule.drop or rule.hang:
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    status = rule.status or 503
                    code = _ERROR_CODES.get(status, "UNAVAILABLE" if status >= 500 else "UNKNOWN")
                    payload = b'{"errors":[{"code":"%s","message":"injected fault"}]}' % code.encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    if rule.retry_after:
                        self.send_header("Retry-After", rule.retry_after)
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                headers["Content-Length"] = str(len(body))
                conn.request(self.command, path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                self.send_response(response.status, response.reason)
                for key, value in response.getheaders():
                    if key.lower() not in _HOP and key.lower() != "content-length":
                        self.send_header(key, value)
                # A HEAD's answer has no body but says how long the body is: pass the registry's length on.
                length = response.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_PATCH = do_HEAD = do_DELETE = _handle

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _take(self, repo: str, op: str, ref: str = "", size: int = 0) -> Rule | None:
        with self._lock:
            self.counts[(repo, op)] += 1
            self.received[(repo, op)] += size
            for rule in self.rules:
                if rule.matches(repo, op, ref):
                    if rule.times is not None:
                        rule.times -= 1
                    self.injected[(repo, op)] += 1
                    return rule
        return None

    def add(self, rule: Rule) -> None:
        with self._lock:
            self.rules.append(rule)

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def count(self, repo_suffix: str, op: str) -> int:
        with self._lock:
            return sum(n for (repo, o), n in self.counts.items() if o == op and repo.endswith(repo_suffix))

    def snapshot(self) -> dict[tuple[str, str], tuple[int, int]]:
        """``(requests, body bytes)`` per ``(repository, operation)`` so far."""
        with self._lock:
            return {key: (n, self.received[key]) for key, n in self.counts.items()}

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()
        self.server.shutdown()
        self.server.server_close()
