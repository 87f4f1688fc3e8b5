"""An HTTP server that answers ``GET /<seconds>/<anything>`` after that many seconds.

Benchmark builds wait on it (``ADD http://127.0.0.1:PORT/2/name /app/slept``): a build as long as
wanted that costs the engine no container, so a benchmark of many images measures the release's
own cost, not the engine's per-container cost on a 2-core machine.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Sleep(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        try:
            seconds = float(self.path.strip("/").split("/")[0])
        except ValueError:
            self.send_error(400, "GET /<seconds>/<name>")
            return
        time.sleep(seconds)
        body = f"slept {seconds}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # dozens of builds connect at once; the default backlog of 5 stalls them


class SleepServer:
    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Sleep)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> SleepServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
