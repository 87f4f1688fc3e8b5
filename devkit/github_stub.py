"""A local HTTP server that answers the GitHub REST endpoints fma-release calls.

There is no internet on these machines, so tests point PyGithub's ``base_url``
at this server. It keeps releases per repository, answers like GitHub does
(the fields PyGithub reads), and records every request (method, path, JSON
body, whether a token was sent) for tests to assert on. The token itself is
never recorded.

Endpoints: ``GET /repos/{o}/{r}``, ``GET /repos/{o}/{r}/releases``,
``GET /repos/{o}/{r}/releases/tags/{tag}``, ``POST /repos/{o}/{r}/releases``,
``POST /repos/{o}/{r}/releases/generate-notes``, ``GET`` and ``PATCH /repos/{o}/{r}/releases/{id}`` (a draft
published, its body edited: the fields sent replace the release's, as GitHub does).
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

_EDITABLE = ("tag_name", "name", "body", "draft", "prerelease", "target_commitish", "make_latest")


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    body: dict[str, Any] | None
    authorized: bool  # an "Authorization: token/Bearer ..." header with the expected token


@dataclass
class GitHubStub:
    """``with GitHubStub(token="t") as gh: gh.add_release("o/r", "v0.2.0")``; ``gh.url`` is the base URL."""

    token: str = "stub-token"  # noqa: S105 - the stub's own test token, not a secret
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[Recorded] = field(default_factory=list)
    releases: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- state ---------------------------------------------------------------------

    def add_release(self, repo: str, tag: str, *, draft: bool = False, prerelease: bool = False) -> dict[str, Any]:
        with self._lock:
            releases = self.releases.setdefault(repo, [])
            release = self._release(repo, len(releases) + 1, {
                "tag_name": tag, "name": tag, "body": "", "draft": draft, "prerelease": prerelease,
            })
            releases.append(release)
            return release

    def _release(self, repo: str, number: int, fields: dict[str, Any]) -> dict[str, Any]:
        tag = fields["tag_name"]
        return {
            "id": number,
            "url": f"{self.url}/repos/{repo}/releases/{number}",
            "html_url": f"{self.url}/{repo}/releases/tag/{tag}",
            "upload_url": f"{self.url}/repos/{repo}/releases/{number}/assets{{?name,label}}",
            "tag_name": tag,
            "name": fields.get("name") or tag,
            "body": fields.get("body") or "",
            "draft": bool(fields.get("draft")),
            "prerelease": bool(fields.get("prerelease")),
            "target_commitish": fields.get("target_commitish") or "main",
            "make_latest": fields.get("make_latest"),
            "created_at": "2026-11-25T12:00:00Z",
            "published_at": None if fields.get("draft") else "2026-11-25T12:00:00Z",
            "author": {"login": "fma-bot", "id": 1, "type": "User"},
            "assets": [],
        }

    def posted(self, suffix: str) -> list[Recorded]:
        """The POST requests whose path ends with ``suffix``."""
        return [r for r in self.requests if r.method == "POST" and r.path.endswith(suffix)]

    # -- serving -------------------------------------------------------------------

    def start(self) -> GitHubStub:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                stub._handle(self, "GET")

            def do_POST(self) -> None:
                stub._handle(self, "POST")

            def do_PATCH(self) -> None:
                stub._handle(self, "PATCH")

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, name="github-stub", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> GitHubStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        path = urlsplit(handler.path).path
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        auth = handler.headers.get("Authorization", "")
        authorized = auth in (f"token {self.token}", f"Bearer {self.token}")
        with self._lock:
            self.requests.append(Recorded(method, path, body, authorized))
        if not authorized:
            self._send(handler, 401, {"message": "Bad credentials"})
            return
        status, payload = self._route(method, path, body or {})
        self._send(handler, status, payload)

    def _route(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:  # noqa: PLR0911 - one return per endpoint
        match = re.fullmatch(r"(?:/api/v3)?/repos/([^/]+/[^/]+)(/.*)?", path)
        if match is None:
            return 404, {"message": "Not Found"}
        repo, rest = match.group(1), match.group(2) or ""
        with self._lock:
            releases = self.releases.setdefault(repo, [])
            if method == "GET" and rest == "":
                owner, name = repo.split("/")
                return 200, {"id": 1, "name": name, "full_name": repo, "owner": {"login": owner},
                             "url": f"{self.url}/repos/{repo}", "html_url": f"{self.url}/{repo}"}
            if method == "GET" and rest == "/releases":
                return 200, list(reversed(releases))  # newest first, as GitHub lists them
            if method == "GET" and rest.startswith("/releases/tags/"):
                tag = rest.removeprefix("/releases/tags/")
                found = [r for r in releases if r["tag_name"] == tag]
                return (200, found[0]) if found else (404, {"message": "Not Found"})
            if method == "POST" and rest == "/releases/generate-notes":
                return 200, self._notes(repo, body)
            if method == "POST" and rest == "/releases":
                if any(r["tag_name"] == body.get("tag_name") for r in releases):
                    return 422, {"message": "Validation Failed",
                                 "errors": [{"resource": "Release", "code": "already_exists", "field": "tag_name"}]}
                release = self._release(repo, len(releases) + 1, body)
                releases.append(release)
                return 201, release
            numbered = re.fullmatch(r"/releases/(\d+)", rest)
            if numbered is not None and method in ("GET", "PATCH"):
                found = [r for r in releases if r["id"] == int(numbered.group(1))]
                if not found:
                    return 404, {"message": "Not Found"}
                if method == "PATCH":
                    fields = {**found[0], **{k: v for k, v in body.items() if k in _EDITABLE}}
                    found[0].update(self._release(repo, found[0]["id"], fields))
                return 200, found[0]
        return 404, {"message": "Not Found"}

    def _notes(self, repo: str, body: dict[str, Any]) -> dict[str, Any]:
        tag = body.get("tag_name", "")
        previous = body.get("previous_tag_name")
        since = f"{previous}...{tag}" if previous else tag
        return {
            "name": tag,
            "body": (
                "## What's Changed\n"
                f"* Change for {tag} by @fma-dev in {self.url}/{repo}/pull/7\n\n"
                f"**Full Changelog**: {self.url}/{repo}/compare/{since}"
            ),
        }

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json; charset=utf-8")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
