"""What the webhook receiver answers, decided without a network."""

from __future__ import annotations

import hashlib
import hmac
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from flows.triggers import Deliveries, event_id, event_resource, judge, signature_ok

SECRET = b"webhook-secret"
REPO = "llm-d-incubation/llm-d-fast-model-actuation"


def sign(body: bytes, secret: bytes = SECRET) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def release(action: str = "published", tag: str = "v0.3.1", repo: str = REPO, **extra: Any) -> bytes:
    return json.dumps({"action": action, "release": {"tag_name": tag, "html_url": "u", **extra},
                       "repository": {"full_name": repo}}).encode()


def headers(body: bytes, event: str = "release", signature: str | None = None) -> dict[str, str]:
    return {"x-github-event": event, "x-github-delivery": "d-1",
            "x-hub-signature-256": sign(body) if signature is None else signature}


def test_published_release_is_announced() -> None:
    """A signed release published event for the repository: 202 with its tag."""
    body = release()
    verdict = judge(headers(body), body, SECRET, REPO)
    assert (verdict.status, verdict.tag, verdict.repository, verdict.prerelease) == (202, "v0.3.1", REPO, False)


def test_prerelease_flag_and_case_insensitive_repository() -> None:
    """A release candidate is announced as a pre-release; GitHub names compare case-insensitively."""
    body = release(tag="v0.3.0-rc.1", repo=REPO.upper())
    verdict = judge(headers(body), body, SECRET, REPO)
    assert verdict.announces and verdict.prerelease


@pytest.mark.parametrize("signature", ["", "sha256=", "sha1=abc", "sha256=" + "0" * 64, sign(b"other")])
def test_bad_signatures_are_401(signature: str) -> None:
    """Missing, malformed, or computed over other bytes: 401, nothing announced."""
    body = release()
    verdict = judge(headers(body, signature=signature), body, SECRET, REPO)
    assert verdict.status == 401 and not verdict.announces


def test_wrong_secret_is_401() -> None:
    """A signature made with another secret is refused."""
    body = release()
    assert judge(headers(body, signature=sign(body, b"guess")), body, SECRET, REPO).status == 401


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1, 2]", b"\xff\xfe", json.dumps({"action": "published"}).encode(),
     json.dumps({"action": "published", "release": {}, "repository": {"full_name": REPO}}).encode()],
)
def test_malformed_bodies_are_400(body: bytes) -> None:
    """Signed but not JSON, not an object, or missing the fields used: 400."""
    verdict = judge(headers(body), body, SECRET, REPO)
    assert verdict.status == 400 and not verdict.announces


def test_missing_delivery_is_400() -> None:
    """Without X-GitHub-Delivery a repeat cannot be recognised: 400."""
    body = release()
    h = headers(body)
    del h["x-github-delivery"]
    assert judge(h, body, SECRET, REPO).status == 400


def test_ping_is_200() -> None:
    """GitHub's ping when the hook is created gets 200."""
    body = b'{"zen": "Keep it logically awesome.", "hook_id": 1}'
    assert judge(headers(body, event="ping"), body, SECRET, REPO).status == 200


@pytest.mark.parametrize(
    ("event", "body"),
    [
        ("push", json.dumps({"ref": "refs/heads/main"}).encode()),
        ("release", release(action="created")),
        ("release", release(action="prereleased")),
        ("release", release(repo="someone/else")),
        ("release", release(tag="nightly")),
    ],
)
def test_other_deliveries_are_202_ignored(event: str, body: bytes) -> None:
    """Other events, actions, repositories and non-release tags: 202, nothing announced."""
    verdict = judge(headers(body, event=event), body, SECRET, REPO)
    assert verdict.status == 202 and not verdict.announces and "ignored" in verdict.message


def test_signature_ok_is_exact() -> None:
    """The header must be exactly sha256=<hex>."""
    assert signature_ok(SECRET, b"x", sign(b"x"))
    assert not signature_ok(SECRET, b"x", None)
    assert not signature_ok(SECRET, b"x", sign(b"x").upper())


def test_deliveries_remember_and_forget_oldest() -> None:
    """A delivery id is new once; the memory is bounded."""
    seen = Deliveries(size=2)
    assert seen.first_time("a") and not seen.first_time("a")
    assert seen.first_time("b") and seen.first_time("c")
    assert seen.first_time("a")  # forgotten after two newer ones


def test_event_resource_and_id() -> None:
    """The resource carries repository and tag; one delivery maps to one event id."""
    resource = event_resource(REPO, "v0.3.1")
    assert resource["prefect.resource.id"] == f"github.release.{REPO}.v0.3.1"
    assert (resource["github.repository"], resource["github.tag"]) == (REPO, "v0.3.1")
    assert event_id("d-1") == event_id("d-1") != event_id("d-2")


def test_a_release_is_claimed_once_in_its_window_even_by_racing_deliveries() -> None:
    """Many threads deliver one tag under many ids at once: one claim wins; after the window, a new one may."""
    now = [0.0]
    seen = Deliveries(tag_window=600, clock=lambda: now[0])
    with ThreadPoolExecutor(max_workers=16) as pool:
        refusals = list(pool.map(lambda i: seen.claim(f"d{i % 20}", "o/r@v1.0.0"), range(64)))
    assert refusals.count("") == 1
    assert seen.claim("other", "o/r@v1.0.1") == ""  # another tag is its own release
    assert seen.claim("d0", "o/r@v2.0.0") == "duplicate delivery: already handled"
    now[0] = 601.0
    assert seen.claim("late", "o/r@v1.0.0") == ""


def test_a_claim_whose_event_did_not_leave_is_forgotten() -> None:
    seen = Deliveries()
    assert seen.claim("d1", "o/r@v1.0.0") == ""
    seen.forget("d1", "o/r@v1.0.0")
    assert seen.claim("d1", "o/r@v1.0.0") == ""  # GitHub's redelivery is served
