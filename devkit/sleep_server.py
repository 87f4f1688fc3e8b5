"""An HTTP server that answers ``GET /<seconds>/<anything>`` after that many seconds, and
``GET /gate/<name>`` once the gate of that name is opened.

Benchmark builds wait on it (``ADD http://127.0.0.1:PORT/2/name /app/slept``): a build as long as
wanted that costs the engine no container, so a benchmark of many images measures the release's
own cost, not the engine's per-container cost on a 2-core machine. A test holds a build at a gate
for as long as it wants to look at what the rest of the release does meanwhile, with no guessing
of durations (:meth:`SleepServer.open_gate`).
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GATE_LIMIT = 600.0  # seconds a gated request waits at most (a test that never opens its gate)


class _Sleep(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        parts = self.path.strip("/").split("/")
        if parts[0] == "gate" and len(parts) > 1:
            self.server.gate(parts[1]).wait(GATE_LIMIT)
            self._answer(b"opened\n")
            return
        try:
            seconds = float(self.path.strip("/").split("/")[0])
        except ValueError:
            self.send_error(400, "GET /<seconds>/<name>")
            return
        time.sleep(seconds)
        self._answer(f"slept {seconds}\n".encode())

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # dozens of builds connect at once; the default backlog of 5 stalls them

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._gates: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self.waiting: set[str] = set()  # the gates a request has reached

    def gate(self, name: str) -> threading.Event:
        with self._lock:
            self.waiting.add(name)
            return self._gates.setdefault(name, threading.Event())


class SleepServer:
    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Sleep)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def open_gate(self, name: str) -> None:
        """Let every request for ``/gate/<name>``, waiting or to come, through."""
        self._server.gate(name).set()

    def reached(self, name: str) -> bool:
        """Whether a request for ``/gate/<name>`` has arrived (a build is waiting there)."""
        with self._server._lock:
            return name in self._server.waiting

    def start(self) -> SleepServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        for event in list(self._server._gates.values()):
            event.set()
        self._server.shutdown()
        self._server.server_close()
