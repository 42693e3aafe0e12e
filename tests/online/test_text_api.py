"""HTTP API of the language service, mounted on a tiny app with the project's error mapping."""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from batch.text_train import train_heads
from gpu_core.errors import JaikodError
from online.services.text import TextInputError, TextService, text_router

LISTINGS = {
    "L1": {"title": "โต๊ะไม้สัก", "price_thb": 3500, "in_stock": True, "meetup_area": "BTS อ่อนนุช"},
    "L2": {"title": "Canon 600D", "price_thb": 7900, "in_stock": False, "meetup_area": "Siam"},
}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    out = tmp_path_factory.mktemp("text_heads")
    train_heads(out_dir=out)
    service = TextService(model_dir=out, listing_lookup=LISTINGS.get)
    app = FastAPI()

    @app.exception_handler(JaikodError)
    def _err(_req: Request, exc: JaikodError):
        return JSONResponse(status_code=exc.http_status, content={"error": {
            "code": type(exc).__name__, "message": exc.message, "field": exc.field}})

    app.include_router(text_router(service))
    with TestClient(app) as c:
        yield c


def test_analyze_text_contract(client):
    text = "ขายปืนพก ของแท้ แอดไลน์ 0 8 1 - 2 3 4 - 5 6 7 8"
    r = client.post("/v1/analyze-text", json={"text": text, "context": "listing"})
    assert r.status_code == 200
    body = r.json()
    assert set(body) >= {"offensive", "prohibited", "diversion", "safety_score"}
    assert "weapon" in [p["item"] for p in body["prohibited"]]
    phone = [d for d in body["diversion"] if d["kind"] == "phone"][0]
    assert text[phone["span"][0] : phone["span"][1]] == "0 8 1 - 2 3 4 - 5 6 7 8"
    assert 0.0 <= body["safety_score"] < 0.4
    assert body["model_version"].startswith("text-lr-")


def test_clean_listing_is_safe(client):
    r = client.post("/v1/analyze-text", json={"text": "ขายหม้อหุงข้าว 1.8 ลิตร ใช้งานปกติ", "context": "listing"})
    body = r.json()
    assert body["prohibited"] == [] and body["diversion"] == [] and body["safety_score"] >= 0.4


@pytest.mark.parametrize(("payload", "field"), [
    ({"text": "   ", "context": "chat"}, "text"),
    ({"text": "hello", "context": "email"}, "context"),
    ({"text": "x" * 6000, "context": "chat"}, "text"),
])
def test_analyze_bad_input_is_422_with_field(client, payload, field):
    r = client.post("/v1/analyze-text", json=payload)
    assert r.status_code == 422
    assert r.json()["error"] == {"code": "TextInputError", "message": r.json()["error"]["message"], "field": field}


def test_auto_reply_with_listing_id(client):
    conv = [{"role": "buyer", "text": "ราคาเท่าไหร่คะ โทรหาหนูที่ 0891112222 ได้นะ"}]
    r = client.post("/v1/auto-reply", json={"conversation": conv, "listing_id": "L1"})
    assert r.status_code == 200
    body = r.json()
    assert body["language"] == "th" and len(body["replies"]) == 3
    joined = " ".join(body["replies"])
    assert "3,500" in joined and "0891112222" not in joined.replace(" ", "")
    assert set(re.findall(r"\d[\d,]*", joined)) <= {"3,500"}


def test_auto_reply_with_inline_listing_english(client):
    conv = [{"role": "seller", "text": "hi"}, {"role": "buyer", "text": "is it still available?"}]
    r = client.post("/v1/auto-reply", json={"conversation": conv, "listing": LISTINGS["L2"]})
    body = r.json()
    assert body["language"] == "en" and body["intent"] == "availability"
    assert "sold" in body["replies"][0].lower()


@pytest.mark.parametrize(("payload", "field"), [
    ({"conversation": [], "listing_id": "L1"}, "conversation"),
    ({"conversation": [{"role": "admin", "text": "hi"}], "listing_id": "L1"}, "conversation.0.role"),
    ({"conversation": [{"role": "buyer", "text": "hi"}], "listing_id": "nope"}, "listing_id"),
    ({"conversation": [{"role": "buyer", "text": "hi"}]}, "listing_id"),
])
def test_auto_reply_bad_input(client, payload, field):
    r = client.post("/v1/auto-reply", json=payload)
    assert r.status_code == 422 and r.json()["error"]["field"] == field


def test_text_input_error_is_jaikod_422():
    e = TextInputError("bad", field="text")
    assert isinstance(e, JaikodError) and e.http_status == 422


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/v1/analyze-text", '{"text": "\\ud800 hello", "context": "chat"}', "text"),
    ("/v1/auto-reply", '{"conversation": [{"role": "buyer", "text": "hi \\udfff"}], "listing_id": "L1"}',
     "conversation.0.text"),
    ("/v1/auto-reply", '{"conversation": [{"role": "buyer", "text": "hi"}], "listing": {"title": "a\\ud83d"}}',
     "listing.title"),
    ("/v1/auto-reply", '{"conversation": [{"role": "buyer", "text": "hi"}], "listing_id": "L\\ud800"}',
     "listing_id"),
])
def test_lone_surrogate_is_422_naming_the_field(client, path, body, field):
    r = client.post(path, content=body.encode(), headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["field"] == field


def test_megabyte_text_is_422_and_emoji_only_is_answered(client):
    r = client.post("/v1/analyze-text", json={"text": "ก" * 1_000_000, "context": "listing"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "text"
    r = client.post("/v1/analyze-text", json={"text": "😀🔥💯", "context": "chat"})
    assert r.status_code == 200 and r.json()["prohibited"] == [] and r.json()["diversion"] == []


def test_missing_heads_rules_answer_and_say_so(tmp_path):
    from online.services.text import text_readiness

    service = TextService(model_dir=tmp_path / "nothing")
    out = service.analyze("ขายปืนพก glock พร้อมกระสุน", "listing")
    assert out["model_version"].startswith("rules-only+") and "weapon" in [p["item"] for p in out["prohibited"]]
    status = text_readiness(service)
    assert status["heads"] == "missing" and status["degraded"] and status["heads_error"]
    assert text_readiness(lambda: service, loaded=lambda: False) == {"loaded": False}
