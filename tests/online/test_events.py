"""POST /v1/events: validation (422 naming index and field), append-then-ack, duplicates counted once."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from gpu_core.settings import get_settings


@pytest.fixture()
def client(jaikod_env, redis_client):
    from online.app import create_app

    app = create_app(refresher=False, services=False)
    from online.events import router

    app.include_router(router)
    return TestClient(app)


def ev(i: int, **kw) -> dict:
    base = {"event_id": f"e-{i}", "event_type": "click", "ts": int(time.time() * 1000), "user_id": 7,
            "product_id": 100 + i % 3, "model_version": "jaikod-ranker/1", "request_id": "r1", "position": i}
    return {**base, **kw}


def test_accepts_and_appends_to_the_stream(client, redis_client):
    r = client.post("/v1/events", json={"events": [ev(i) for i in range(5)]})
    assert r.status_code == 200 and r.json() == {"accepted": 5, "duplicates": 0}
    entries = redis_client.xrange(get_settings().event_stream)
    assert len(entries) == 5
    assert b'"event_id":"e-3"' in entries[3][1][b"e"]


def test_duplicate_event_ids_counted_once(client, redis_client):
    assert client.post("/v1/events", json={"events": [ev(1), ev(2)]}).json() == {"accepted": 2, "duplicates": 0}
    # a retry of the batch plus one new event, and a duplicate inside one batch
    body = {"events": [ev(1), ev(2), ev(3), ev(3)]}
    assert client.post("/v1/events", json=body).json() == {"accepted": 1, "duplicates": 3}
    assert redis_client.xlen(get_settings().event_stream) == 3


@pytest.mark.parametrize(("bad", "field"), [
    ({"event_type": "like"}, "events.2.event_type"),
    ({"ts": "yesterday"}, "events.2.ts"),
    ({"ts": "2026-01-01T10:00:00"}, "events.2.ts"),  # no zone
    ({"ts": -5}, "events.2.ts"),
    ({"ts": True}, "events.2.ts"),
    ({"user_id": None}, "events.2.user_id"),
    ({"event_id": ""}, "events.2.event_id"),
    ({"product_id": -1}, "events.2.product_id"),
])
def test_invalid_event_is_422_naming_index_and_field(client, redis_client, bad, field):
    events = [ev(0), ev(1), {**ev(2), **bad}]
    r = client.post("/v1/events", json={"events": events})
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["field"] == field
    assert err["message"].startswith(field)
    assert redis_client.xlen(get_settings().event_stream) == 0  # nothing of the batch appended


def test_missing_ids_and_empty_batch(client):
    e = ev(0)
    del e["product_id"]
    r = client.post("/v1/events", json={"events": [e]})
    assert r.status_code == 422 and r.json()["error"]["field"] == "events.0.product_id"
    assert client.post("/v1/events", json={"events": []}).status_code == 422


def test_iso_timestamp_is_epoch_ms(client, redis_client):
    r = client.post("/v1/events", json={"events": [ev(0, ts="2026-01-02T03:04:05.678+07:00")]})
    assert r.status_code == 200
    from gpu_core.streams import decode_event

    e = decode_event(redis_client.xrange(get_settings().event_stream)[0][1][b"e"])
    assert e["ts"] == 1767297845678


def test_bus_down_is_503_and_retry_counts_once(client, redis_server, redis_client):
    redis_server.stop()
    try:
        r = client.post("/v1/events", json={"events": [ev(0)]})
        assert r.status_code == 503 and r.json()["error"]["code"] == "eventbusunavailable"
    finally:
        redis_server.start()
    client.app.state.services.event_bus.set(None)  # reconnect
    assert client.post("/v1/events", json={"events": [ev(0)]}).json() == {"accepted": 1, "duplicates": 0}
    assert client.post("/v1/events", json={"events": [ev(0)]}).json() == {"accepted": 0, "duplicates": 1}


def test_mounted_by_create_app(jaikod_env):
    from online.app import create_app

    paths = create_app(refresher=False).openapi()["paths"]
    assert "/v1/events" in paths
