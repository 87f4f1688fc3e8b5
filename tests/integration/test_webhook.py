"""The webhook receiver as a real process on loopback, fed real signed HTTP requests."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
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
