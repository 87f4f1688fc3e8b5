"""GitHub webhook receiver: a published release becomes a Prefect event.

``POST /github/webhook`` checks, in this order: size (413 over 1 MiB, the body
is not read), ``X-Hub-Signature-256`` (HMAC-SHA256 of the raw body with
``GITHUB_WEBHOOK_SECRET``, compared in constant time; 401), JSON and the
fields used (400). ``ping`` gets 200. A ``release`` event with action
``published`` for the configured repository emits ``github.release.published``
(resource: repository and tag) and gets 202; the ``publish-release``
deployment's trigger turns that event into a flow run. Anything else gets 202
and is ignored. A delivery id seen before emits nothing, nor does another
delivery of a release announced in the last ten minutes (a burst of the
same tag gives one run); the delivery ids that announced a release are kept
in the state directory, so a replay after a restart is refused too.

The event is handed to the Prefect server synchronously (``POST /events``):
when the server cannot take it the delivery gets 503, and GitHub redelivers.

Under abuse: every read of a connection times out (``read_timeout``), a
request has ``request_deadline`` seconds in all before its socket is shut,
and at most ``max_requests`` are served at once; a connection above that gets
503 at once and is closed.

:func:`judge` decides (pure); :class:`WebhookServer` does the HTTP and emits.
Neither the secret nor the body is ever logged.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tasks.core.errors import InvalidTagError, ReleaseError
from tasks.core.redact import RedactingFilter, install_log_filter, register
from tasks.run.settings import Settings
from tasks.run.tags import parse_tag

PATH = "/github/webhook"
MAX_BODY = 1024 * 1024
EVENT_NAME = "github.release.published"
_DELIVERY_NS = uuid.UUID("6f1d9a3e-5a0b-4c38-9a62-0d3c1b7e2f11")

log = logging.getLogger("fma_release.webhook")


@dataclass(frozen=True)
class Verdict:
    """The answer to a delivery, and the release to announce when there is one."""

    status: int
    message: str
    repository: str = ""
    tag: str = ""
    prerelease: bool = False
    url: str = ""

    @property
    def announces(self) -> bool:
        return bool(self.tag)


def signature_ok(secret: bytes, body: bytes, header: str | None) -> bool:
    """Whether ``header`` is ``sha256=<hex HMAC-SHA256 of body>``; constant-time compare."""
    if not header or not header.startswith("sha256="):
        return False
    expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), header.strip().encode())


def judge(headers: Mapping[str, str], body: bytes, secret: bytes, repository: str) -> Verdict:  # noqa: PLR0911 - one return per answer, in the order of the spec
    """What to answer a delivery with ``headers`` (lower-case names) and ``body``.

    The size is checked by the server before the body is read.
    """
    if not signature_ok(secret, body, headers.get("x-hub-signature-256")):
        return Verdict(401, "missing or wrong X-Hub-Signature-256")
    event = headers.get("x-github-event", "")
    if not event or not headers.get("x-github-delivery"):
        return Verdict(400, "missing X-GitHub-Event or X-GitHub-Delivery")
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return Verdict(400, "body is not JSON")
    if not isinstance(payload, dict):
        return Verdict(400, "body is not a JSON object")
    if event == "ping":
        return Verdict(200, "pong")
    if event != "release":
        return Verdict(202, f"ignored: {event} event")
    release = payload.get("release")
    repo = payload.get("repository")
    action = payload.get("action")
    if not (isinstance(release, dict) and isinstance(repo, dict) and isinstance(action, str)
            and isinstance(release.get("tag_name"), str) and isinstance(repo.get("full_name"), str)):
        return Verdict(400, "release event without action, release.tag_name or repository.full_name")
    if action != "published":
        return Verdict(202, f"ignored: release {action}")
    full_name = repo["full_name"]
    if full_name.lower() != repository.lower():
        return Verdict(202, "ignored: not the configured repository")
    tag = release["tag_name"]
    try:
        version = parse_tag(tag)
    except InvalidTagError:
        return Verdict(202, "ignored: not a release tag")
    return Verdict(202, f"release {tag} announced", repository=full_name, tag=tag,
                   prerelease=version.prerelease, url=str(release.get("html_url") or ""))


def event_resource(repository: str, tag: str) -> dict[str, str]:
    """The Prefect resource of a published release; the trigger reads ``github.tag``."""
    return {
        "prefect.resource.id": f"github.release.{repository}.{tag}",
        "prefect.resource.name": f"{repository} {tag}",
        "github.repository": repository,
        "github.tag": tag,
    }


def event_id(delivery: str) -> uuid.UUID:
    """One delivery, one event id: Prefect's triggers act on an event id once."""
    return uuid.uuid5(_DELIVERY_NS, delivery)


def emit_release_event(verdict: Verdict, delivery: str) -> None:
    """Hand the event to the Prefect server and wait for its answer: an exception when it did not take it.

    Prefect's ``emit_event`` only queues the event for a background worker, so a server that is down
    would go unnoticed; a ``POST /events`` is answered (204) only once the server has the event."""
    from prefect import get_client
    from prefect.events import Event, Resource

    event = Event(
        event=EVENT_NAME,
        resource=Resource(event_resource(verdict.repository, verdict.tag)),
        payload={"prerelease": verdict.prerelease, "url": verdict.url, "delivery": delivery},
        id=event_id(delivery),
    )
    with get_client(sync_client=True) as client:
        response = client.request("POST", "/events", json=[event.model_dump(mode="json")])
        response.raise_for_status()


# GitHub sends "published" for a release once, but a burst (a re-sent hook, two hooks on the repository,
# a redelivery clicked twice) brings the same tag again under other delivery ids within moments.
TAG_WINDOW_SECONDS = 600.0


class Deliveries:
    """Delivery ids seen recently (bounded), and the releases announced in the last ``tag_window``
    seconds: a redelivery, or another delivery of a release announced a moment ago, emits nothing.
    One lock makes the check and the claim one step, so racing deliveries of a tag emit once.

    ``path``: a file where the ids of deliveries that announced a release are kept (one a line), read
    back on start: a replay after a restart is refused as well."""

    def __init__(self, size: int = 10_000, tag_window: float = TAG_WINDOW_SECONDS,
                 clock: Callable[[], float] = time.monotonic, path: Path | None = None) -> None:
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._announced: dict[str, float] = {}
        self._size = size
        self._tag_window = tag_window
        self._clock = clock
        self._lock = threading.Lock()
        self._path = path
        if path is not None and path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines()[-size:]:
                if line.strip():
                    self._remember(line.strip())

    def keep(self, delivery: str) -> None:
        """Write down that ``delivery`` announced its release (it survives a restart)."""
        if self._path is None or not _DELIVERY_ID.fullmatch(delivery):
            return
        with self._lock:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            with self._path.open("a", encoding="utf-8") as out:
                out.write(delivery + "\n")
                out.flush()
                os.fsync(out.fileno())

    def first_time(self, delivery: str) -> bool:
        with self._lock:
            return self._remember(delivery)

    def _remember(self, delivery: str) -> bool:
        if delivery in self._seen:
            return False
        self._seen[delivery] = None
        if len(self._seen) > self._size:
            self._seen.popitem(last=False)
        return True

    def claim(self, delivery: str, release: str) -> str:
        """Claim the announcement of ``release`` (repository and tag) for ``delivery``; ``""`` when this
        delivery is to emit, else why not."""
        with self._lock:
            now = self._clock()
            self._announced = {k: t for k, t in self._announced.items() if now - t < self._tag_window}
            if delivery in self._seen:
                return "duplicate delivery: already handled"
            if release in self._announced:
                self._remember(delivery)
                return "release already announced moments ago: no second run"
            self._remember(delivery)
            self._announced[release] = now
            return ""

    def forget(self, delivery: str, release: str) -> None:
        """Undo a claim whose event did not leave, so that GitHub's redelivery is served."""
        with self._lock:
            self._seen.pop(delivery, None)
            self._announced.pop(release, None)


_DELIVERY_ID = re.compile(r"[A-Za-z0-9-]{1,100}")
READ_TIMEOUT = 10.0  # seconds any one read of a connection may wait
REQUEST_DEADLINE = 30.0  # seconds a request has in all, however slowly it trickles in
MAX_REQUESTS = 64  # requests served at once; above it, 503 at once
_BUSY_BODY = json.dumps({"status": 503, "message": "busy: try again"}).encode()
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
         b"Content-Length: " + str(len(_BUSY_BODY)).encode() + b"\r\n\r\n" + _BUSY_BODY)


class WebhookServer(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default listen backlog is 5: a burst of deliveries had connections reset.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], secret: str, repository: str,  # noqa: PLR0913 - the receiver's knobs, keywords with defaults
                 emit: Callable[[Verdict, str], None] = emit_release_event, *, state_dir: Path | None = None,
                 read_timeout: float = READ_TIMEOUT, request_deadline: float = REQUEST_DEADLINE,
                 max_requests: int = MAX_REQUESTS) -> None:
        super().__init__(address, _Handler)
        self.secret = secret.encode()
        self.repository = repository
        self.emit = emit
        self.deliveries = Deliveries(path=state_dir / "webhook" / "deliveries" if state_dir else None)
        self.read_timeout = read_timeout
        self.request_deadline = request_deadline
        self._slots = threading.BoundedSemaphore(max_requests)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve ``request`` on a thread of its own when a slot is free; else 503 at once, and close."""
        if not self._slots.acquire(blocking=False):
            try:
                request.settimeout(1.0)
                request.sendall(_BUSY)
            except OSError:
                pass  # a client that is gone needs no answer
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        # However slowly a client sends, its socket is shut at the deadline, which ends the handler's read.
        deadline = threading.Timer(self.request_deadline, _shut, args=(request,))
        deadline.daemon = True
        deadline.start()
        try:
            super().process_request_thread(request, client_address)
        finally:
            deadline.cancel()
            self._slots.release()


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    server: WebhookServer
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.read_timeout)  # every read of rfile waits at most this

    def log_message(self, format: str, *args: Any) -> None:
        return  # the request line is enough, logged in _answer

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._answer(200, "ok")
        else:
            self._answer(404, "not found")

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] != PATH:
            self._answer(404, "not found", close=True)
            return
        length_header = self.headers.get("Content-Length")
        if length_header is None or not length_header.isdigit():
            self._answer(411, "Content-Length required", close=True)
            return
        length = int(length_header)
        if length > MAX_BODY:
            self._answer(413, f"body over {MAX_BODY} bytes", close=True)
            return
        body = self.rfile.read(length)
        headers = {k.lower(): v for k, v in self.headers.items()}
        verdict = judge(headers, body, self.server.secret, self.server.repository)
        delivery = headers.get("x-github-delivery", "")
        if verdict.announces:
            release = f"{self.server.repository}@{verdict.tag}"
            refused = self.server.deliveries.claim(delivery, release)
            if refused:
                self._answer(202, refused)
                return
            try:
                self.server.emit(verdict, delivery)
            except Exception as err:  # the event did not leave: let GitHub redeliver
                self.server.deliveries.forget(delivery, release)
                log.error("cannot emit %s for %s: %s", EVENT_NAME, verdict.tag, type(err).__name__)
                self._answer(503, "cannot reach Prefect; redeliver later")
                return
            self.server.deliveries.keep(delivery)
        self._answer(verdict.status, verdict.message)

    def _answer(self, status: int, message: str, close: bool = False) -> None:
        data = json.dumps({"status": status, "message": message}).encode()
        log.info("%s %s %s %s delivery=%s", self.command, self.path, status, message,
                 self.headers.get("X-GitHub-Delivery", "-"))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)


def webhook_secret() -> str:
    """``GITHUB_WEBHOOK_SECRET``, or the Prefect Secret block ``GITHUB_WEBHOOK_SECRET_BLOCK`` names."""
    secret = os.environ.get("GITHUB_WEBHOOK_SECRET", "")
    block = os.environ.get("GITHUB_WEBHOOK_SECRET_BLOCK", "")
    if not secret and block:
        from tasks.run.settings import read_secret_block

        secret = read_secret_block(block, "GITHUB_WEBHOOK_SECRET_BLOCK", ReleaseError)
    if not secret:
        raise ReleaseError(
            "GITHUB_WEBHOOK_SECRET is not set: set it to the webhook's secret in GitHub's settings (or name a "
            "Prefect Secret block holding it in GITHUB_WEBHOOK_SECRET_BLOCK); the receiver does not start without it"
        )
    register(secret)
    return secret


def serve_webhook(host: str, port: int, repository: str, state_dir: Path | None = None) -> int:
    """Run the receiver until SIGTERM or Ctrl-C; the delivery ids it has announced are kept in ``state_dir``
    (default: the release's state directory, FMA_STATE_DIR)."""
    # A delivery waits for its event to reach Prefect: a server that is down is 503 in seconds, not after
    # the client's default retries (read by Prefect when it is first imported: a Secret block, or below).
    os.environ.setdefault("PREFECT_CLIENT_MAX_RETRIES", "1")
    secret = webhook_secret()
    # A handler of the receiver's own: once Prefect is imported the root logger is Prefect's (level WARNING),
    # and logging.basicConfig would do nothing.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    install_log_filter()
    handler.addFilter(RedactingFilter())
    # Prefect's client and event model load now, before the port is open: a first delivery would otherwise
    # wait for those imports (seconds on a busy machine) inside its request.
    import prefect.client.orchestration
    import prefect.events  # noqa: F401 - loaded for the first delivery's sake
    try:
        server = WebhookServer((host, port), secret, repository, state_dir=state_dir or Settings.from_env().state_dir,
                               read_timeout=float(os.environ.get("FMA_WEBHOOK_READ_TIMEOUT") or READ_TIMEOUT),
                               max_requests=int(os.environ.get("FMA_WEBHOOK_MAX_REQUESTS") or MAX_REQUESTS))
    except OSError as err:
        raise ReleaseError(f"cannot listen on {host}:{port} ({err.strerror}): pick another --port") from err

    def stop(*_: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    print(f"listening on http://{host}:{server.server_address[1]}{PATH} for releases of {repository}",
          file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        _flush_events()
    return 0


def _flush_events() -> None:
    try:
        from prefect.events.worker import EventsWorker

        EventsWorker.drain_all()
    except Exception:  # noqa: S110 - best effort at exit; nothing left to report to
        pass
