"""Listing intake: text analysis in time -> live or moderation; text service slow/down -> accepted,
backlogged, and ``batch review`` works the backlog off into the moderation queue."""

from __future__ import annotations

import pytest
import redis
from fastapi.testclient import TestClient

from gpu_core.moderation import QUEUE, REVIEW, ModerationQueue, ReviewBacklog, listing_key
from online.wiring import Lazy

TOKEN = "test-admin-token"
HONEST = {"seller_id": 3, "title": "Sony WH-1000XM4 headphones, like new",
          "description": "Used for two months, box and cable included. Meet at BTS Asok.",
          "price_thb": 5200, "category": "electronics"}
DIVERSION = {"seller_id": 3, "title": "iPhone 13 ราคาถูกมาก",
             "description": "แอดไลน์ 0 8 1 2 3 4 5 6 7 8 โอนก่อนนะคะ ไม่ผ่านแอป",
             "price_thb": 4000, "category": "mobile_phones"}


@pytest.fixture()
def intake_env(served_world, monkeypatch, tmp_path):
    from engines.text.settings import reset_text_settings
    from gpu_core.settings import reset_settings

    monkeypatch.setenv("JAIKOD_ADMIN_TOKEN", TOKEN)
    monkeypatch.setenv("JAIKOD_LAKE", str(tmp_path / "lake"))
    monkeypatch.setenv("JAIKOD_TEXT_MODEL_DIR", str(tmp_path / "no-heads"))  # rules + word lists
    reset_settings()
    reset_text_settings()
    r = redis.Redis.from_url(served_world.redis_url)
    r.delete(QUEUE, REVIEW)
    yield served_world
    reset_settings()
    reset_text_settings()


def _client(timeout_ms: float | None = None, monkeypatch=None):
    from gpu_core.settings import reset_settings
    from online.app import create_app

    if timeout_ms is not None:
        monkeypatch.setenv("JAIKOD_LISTING_TEXT_TIMEOUT_MS", str(timeout_ms))
    reset_settings()
    return TestClient(create_app(refresher=False, services=True))


def test_safe_listing_goes_live_unsafe_one_to_moderation(intake_env, monkeypatch):
    monkeypatch.setenv("JAIKOD_LISTING_TEXT_TIMEOUT_MS", "60000")
    with _client() as c:
        c.app.state.services.text()  # warm the language service (model load is not the listing's latency)
        ok = c.post("/v1/listings", json=HONEST)
        assert ok.status_code == 201, ok.text
        b = ok.json()
        assert b["status"] == "live" and b["safety_score"] >= 0.4 and not b["moderation"]["queued"]
        assert b["review"]["deferred"] is False and b["listing_id"] > 1_000_000_000
        bad = c.post("/v1/listings", json=DIVERSION).json()
        assert bad["status"] == "in_review" and bad["safety_score"] < 0.4
        labels = {f["label"] for f in bad["moderation"]["flags"]}
        assert {"diversion:phone", "diversion:payment_outside"} <= labels
        queue = c.get("/v1/admin/moderation/queue", headers={"X-Admin-Token": TOKEN}).json()["items"]
        assert [i["listing_id"] for i in queue] == [str(bad["listing_id"])]
        assert queue[0]["listing"]["title"] == DIVERSION["title"]
        assert c.get(f"/v1/listings/{ok.json()['listing_id']}").json()["status"] == "live"


def test_slow_text_service_defers_and_batch_review_moderates(intake_env, monkeypatch):
    from batch.review import run_review
    from engines.text.analyzer import TextAnalyzer

    with _client(timeout_ms=0.001, monkeypatch=monkeypatch) as c:
        b = c.post("/v1/listings", json=DIVERSION).json()
        h = c.post("/v1/listings", json=HONEST).json()
        assert b["status"] == "pending_review" and b["review"]["deferred"] is True
        assert "slower than" in b["review"]["reason"] and b["safety_score"] is None
        r = c.app.state.services.state.redis
        assert ReviewBacklog(r).depth() == 2 and ModerationQueue(r).depth() == 0
    summary = run_review(r, analyzer=TextAnalyzer(None))
    assert (summary.reviewed, summary.to_moderation, summary.live) == (2, 1, 1)
    assert ReviewBacklog(r).depth() == 0
    items = ModerationQueue(r).items()
    assert [i.listing_id for i in items] == [str(b["listing_id"])]
    assert r.hget(listing_key(b['listing_id']), "status") == b"in_review"
    assert r.hget(listing_key(h['listing_id']), "status") == b"live"
    assert run_review(r, analyzer=TextAnalyzer(None)).reviewed == 0  # nothing reviewed twice


def test_text_service_down_accepts_listing(intake_env):
    with _client() as c:
        def down():
            raise ConnectionError("language service unreachable")

        c.app.state.services.text = Lazy(down)
        b = c.post("/v1/listings", json=HONEST).json()
        assert b["status"] == "pending_review" and "unavailable" in b["review"]["reason"]
        assert ReviewBacklog(c.app.state.services.state.redis).depth() == 1


def test_listing_input_errors(intake_env):
    with _client() as c:
        bad = c.post("/v1/listings", json={**HONEST, "category": "weapons"})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "category"
        assert c.post("/v1/listings", json={**HONEST, "price_thb": -1}).status_code == 422
        img = c.post("/v1/listings", json={**HONEST, "image_base64": "not base64!!"})
        assert img.status_code == 422 and img.json()["error"]["field"] == "image_base64"
