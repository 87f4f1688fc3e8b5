"""The webhook receiver as a real process on loopback, fed real signed HTTP requests."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from devkit.registry import free_port
from flows.triggers import EVENT_NAME
from tests.integration.prefect_helpers import events, wait_for

CLI = str(Path(sys.executable).with_name("fma-release"))
SECRET = "whsec-" + uuid.uuid4().hex
REPO = "llm-d-incubation/llm-d-fast-model-actuation"


@dataclass
class Receiver:
    url: str
    proc: subprocess.Popen[str]
    log: Path

    def send(self, body: bytes, event: str = "release", delivery: str | None = None,
             signature: str | None = "sign", secret: str = SECRET) -> requests.Response:
        headers = {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
                   "Content-Type": "application/json"}
        if signature == "sign":
            headers["X-Hub-Signature-256"] = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        elif signature is not None:
            headers["X-Hub-Signature-256"] = signature
        return requests.post(self.url, data=body, headers=headers, timeout=10)


def start_receiver(tmp: Path, env_extra: dict[str, str]) -> Receiver:
    port = free_port()
    log = tmp / f"webhook-{port}.log"
    env = {**os.environ, **env_extra}
    proc = subprocess.Popen(
        [CLI, "webhook", "--host", "127.0.0.1", "--port", str(port), "--repository", REPO],
        stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, text=True,
    )

    def up() -> bool:
        assert proc.poll() is None, f"receiver exited: {log.read_text()}"
        try:
            return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    wait_for("the webhook receiver to listen", up, timeout=30)
    return Receiver(f"http://127.0.0.1:{port}/github/webhook", proc, log)


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    """`fma-release webhook` running with a secret, reporting to the session's Prefect server."""
    rec = start_receiver(tmp_path_factory.mktemp("webhook"), {"GITHUB_WEBHOOK_SECRET": SECRET})
    yield rec
    rec.proc.terminate()
    rec.proc.wait(timeout=15)
    assert SECRET not in rec.log.read_text()


def release_body(tag: str, action: str = "published", repo: str = REPO) -> bytes:
    return json.dumps({"action": action, "release": {"tag_name": tag, "draft": False, "html_url": "x"},
                       "repository": {"full_name": repo}, "padding": "p" * 200}).encode()


def unique_tag() -> str:
    return f"v9.{uuid.uuid4().int % 10_000}.0-rc.1"


def release_events(tag: str) -> list[object]:
    return events(EVENT_NAME, f"github.release.{REPO}.{tag}")


def test_refuses_to_start_without_secret(tmp_path: Path) -> None:
    """No GITHUB_WEBHOOK_SECRET: exit 1 with one line naming the variable; nothing listens."""
    env = {k: v for k, v in os.environ.items() if k != "GITHUB_WEBHOOK_SECRET"}
    done = subprocess.run([CLI, "webhook", "--port", str(free_port())], env=env, capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "GITHUB_WEBHOOK_SECRET is not set" in done.stderr


def test_ping_is_answered(receiver: Receiver) -> None:
    """A signed ping gets 200."""
    response = receiver.send(b'{"zen": "Design for failure.", "hook_id": 7}', event="ping")
    assert response.status_code == 200


def test_published_release_emits_one_event_even_when_redelivered(receiver: Receiver) -> None:
    """Signed release published: 202 and one github.release.published event; the same delivery again: one still."""
    tag = unique_tag()
    delivery = str(uuid.uuid4())
    first = receiver.send(release_body(tag), delivery=delivery)
    again = receiver.send(release_body(tag), delivery=delivery)
    assert (first.status_code, again.status_code) == (202, 202)
    assert "duplicate" in again.json()["message"]
    found = wait_for(f"the event for {tag}", lambda: release_events(tag))
    (event,) = found
    assert event.resource["github.tag"] == tag and event.resource["github.repository"] == REPO
    # A later event on the same connection has arrived too; the duplicate still is not there.
    barrier = unique_tag()
    assert receiver.send(release_body(barrier)).status_code == 202
    wait_for("the barrier event", lambda: release_events(barrier))
    assert len(release_events(tag)) == 1


def test_rejected_deliveries_emit_nothing(receiver: Receiver) -> None:
    """Unsigned, forged, wrong-secret, oversize, malformed and ignored deliveries get their status and no event."""
    tag = unique_tag()
    body = release_body(tag)
    assert receiver.send(body, signature=None).status_code == 401
    assert receiver.send(body, signature="sha256=" + "ab" * 32).status_code == 401
    assert receiver.send(body, secret="not-the-secret").status_code == 401
    tampered = body.replace(b'"published"', b'"published" ')
    forged = receiver.send(tampered, signature="sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest())
    assert forged.status_code == 401
    oversize = json.dumps({"action": "published", "release": {"tag_name": tag}, "repository": {"full_name": REPO},
                           "padding": "x" * (1024 * 1024)}).encode()
    assert receiver.send(oversize).status_code == 413
    assert receiver.send(b"{not json").status_code == 400
    assert receiver.send(json.dumps({"action": "published", "release": {"tag_name": tag}}).encode()).status_code == 400
    assert receiver.send(release_body(tag, action="created")).status_code == 202
    assert receiver.send(release_body(tag, repo="someone/fork")).status_code == 202
    assert receiver.send(b'{"ref": "refs/heads/main"}', event="push").status_code == 202
    # Everything above went before this one; once it is stored, none of them made an event.
    barrier = unique_tag()
    assert receiver.send(release_body(barrier)).status_code == 202
    wait_for("the barrier event", lambda: release_events(barrier))
    assert release_events(tag) == []
    assert receiver.proc.poll() is None


def test_secret_and_body_are_not_logged(receiver: Receiver) -> None:
    """The receiver's log has the status lines but neither the secret nor any body text."""
    receiver.send(release_body("v9.9.9"))
    receiver.send(b"{not json")
    text = wait_for("log lines", lambda: receiver.log.read_text() if "400" in receiver.log.read_text() else None)
    assert "listening on" in text
    assert SECRET not in text and "padding" not in text and "pppp" not in text and "{not json" not in text


# -- under abuse, across restarts, with Prefect gone ------------------------------------------------


def _idle(url: str) -> socket.socket:
    """A connection that declares a 1 MiB body and sends nothing of it."""
    host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
    sock = socket.create_connection((host, int(port)), timeout=60)
    sock.sendall(b"POST /github/webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n")
    return sock


def _closed_by_server(sock: socket.socket) -> bool:
    """Whether the server ended the connection (EOF, a reset, or an answer then EOF); waits for it."""
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    return True


def test_idle_connections_are_cut_while_a_valid_delivery_gets_through(tmp_path: Path) -> None:
    """200 connections that never send their body hold no slot past the read timeout, and a valid delivery
    made while they are open is announced."""
    rec = start_receiver(tmp_path, {"GITHUB_WEBHOOK_SECRET": SECRET, "FMA_STATE_DIR": str(tmp_path / "state"),
                                    "FMA_WEBHOOK_READ_TIMEOUT": "20", "FMA_WEBHOOK_MAX_REQUESTS": "256"})
    idle = [_idle(rec.url) for _ in range(200)]
    try:
        tag = unique_tag()
        answer = rec.send(release_body(tag))
        assert answer.status_code == 202 and "announced" in answer.json()["message"]
        for sock in idle:  # still open when the delivery was answered: nothing has arrived on them
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(1)
            sock.setblocking(True)
        assert all(_closed_by_server(sock) for sock in idle)
        assert rec.proc.poll() is None and rec.send(b"{}", event="ping").status_code == 200
    finally:
        for sock in idle:
            sock.close()
        rec.proc.terminate()
        rec.proc.wait(timeout=15)


def test_above_the_request_cap_a_connection_gets_503_at_once(tmp_path: Path) -> None:
    """With 4 requests being served, a fifth connection is answered 503 and closed."""
    rec = start_receiver(tmp_path, {"GITHUB_WEBHOOK_SECRET": SECRET, "FMA_STATE_DIR": str(tmp_path / "state"),
                                    "FMA_WEBHOOK_READ_TIMEOUT": "30", "FMA_WEBHOOK_MAX_REQUESTS": "4"})
    idle = [_idle(rec.url) for _ in range(4)]
    try:
        for _ in range(50):  # the 4 are accepted in order; a fifth waits on nothing once they hold their slots
            answer = rec.send(release_body(unique_tag()))
            if answer.status_code == 503:
                break
        assert answer.status_code == 503 and answer.json()["message"] == "busy: try again"
    finally:
        for sock in idle:
            sock.close()
        rec.proc.terminate()
        rec.proc.wait(timeout=15)


def test_a_replay_after_a_restart_is_refused(tmp_path: Path) -> None:
    """A delivery announced by one receiver process is a duplicate for the next one on the same state dir."""
    env = {"GITHUB_WEBHOOK_SECRET": SECRET, "FMA_STATE_DIR": str(tmp_path / "state")}
    delivery, body = str(uuid.uuid4()), release_body(unique_tag())
    first = start_receiver(tmp_path, env)
    try:
        assert "announced" in first.send(body, delivery=delivery).json()["message"]
    finally:
        first.proc.terminate()
        first.proc.wait(timeout=15)
    second = start_receiver(tmp_path, env)
    try:
        again = second.send(body, delivery=delivery)
        assert again.status_code == 202 and again.json()["message"] == "duplicate delivery: already handled"
    finally:
        second.proc.terminate()
        second.proc.wait(timeout=15)


def test_a_delivery_prefect_cannot_take_gets_503(tmp_path: Path) -> None:
    """With the Prefect server unreachable the delivery is answered 503 (GitHub redelivers), and the same
    delivery is served again once it can be."""
    gone = f"http://127.0.0.1:{free_port()}/api"
    rec = start_receiver(tmp_path, {"GITHUB_WEBHOOK_SECRET": SECRET, "FMA_STATE_DIR": str(tmp_path / "state"),
                                    "PREFECT_API_URL": gone})
    try:
        answer = rec.send(release_body(unique_tag()), delivery="gone-1")
        assert answer.status_code == 503 and "cannot reach Prefect" in answer.json()["message"]
    finally:
        rec.proc.terminate()
        rec.proc.wait(timeout=15)
    assert not (tmp_path / "state" / "webhook" / "deliveries").exists()
