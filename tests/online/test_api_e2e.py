"""End-to-end on the tiny world through the FastAPI test client: responses, validation, replay log."""

from __future__ import annotations

import numpy as np
import pytest

from gpu_core import replay_log
from online import replay

STAGES = ("user", "retrieval", "filters", "hydration", "scoring", "rerank", "polish", "total")


def test_feed_and_search_contract(app_client, users, query_word):
    state = app_client.app.state.services.state
    for path, extra in (("/v1/feed", {}), ("/v1/search", {"query": query_word})):
        r = app_client.post(path, json={"user_id": users[0], "limit": 20, "device_type": "ios", **extra})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["fallbacks_used"] == []
        assert body["model_version"] == state.models.get("production").label
        assert body["snapshot_version"] == state.mirror.version
        assert set(STAGES) <= set(body["timings_ms"])
        items = body["items"]
        assert [it["position"] for it in items] == list(range(1, 21))
        ids = [it["product_id"] for it in items]
        assert len(set(ids)) == 20 and (state.mirror.index_of(np.array(ids)) >= 0).all()
        organic = [it["score"] for it in items if not it["sponsored"]]
        assert len(organic) >= 18
        assert len(body["request_id"]) == 32


def test_openapi_health_metrics(app_client, users):
    assert app_client.get("/healthz").json() == {"status": "ok"}
    ready = app_client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"]
    assert "/v1/feed" in app_client.get("/openapi.json").json()["paths"]
    app_client.post("/v1/feed", json={"user_id": users[0]})
    text = app_client.get("/metrics").text
    assert 'jaikod_requests_total{endpoint="feed"' in text
    assert "jaikod_stage_latency_seconds_bucket" in text


@pytest.mark.parametrize("path,body,field", [
    ("/v1/feed", {"user_id": 1, "lat": 91.0, "lon": 100.0}, "lat"),
    ("/v1/feed", {"user_id": 1, "lat": 13.0, "lon": -181.0}, "lon"),
    ("/v1/feed", {"user_id": 1, "lat": 13.0}, "lon"),
    ("/v1/feed", {"user_id": 1, "limit": 0}, "limit"),
    ("/v1/feed", {"user_id": 1, "limit": 51}, "limit"),
    ("/v1/feed", {"user_id": "abc"}, "user_id"),
    ("/v1/feed", {"user_id": 1, "limit": "many"}, "limit"),
    ("/v1/feed", {"user_id": 1, "device_type": "toaster"}, "device_type"),
    ("/v1/feed", {"limit": 5}, "user_id"),
    ("/v1/search", {"user_id": 1, "query": ""}, "query"),
    ("/v1/search", {"user_id": 1, "query": "   "}, "query"),
    ("/v1/search", {"user_id": 1}, "query"),
])
def test_invalid_requests_are_422_naming_the_field(app_client, path, body, field):
    r = app_client.post(path, json=body)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["field"] == field
    assert err["code"] == "invalid_request"


def test_non_json_body_is_422(app_client):
    r = app_client.post("/v1/feed", content=b"not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "error" in r.json()


def test_replay_record_of_a_feed_response(app_client, users, monkeypatch):
    state = app_client.app.state.services.state
    monkeypatch.setattr(state.settings, "replay_sample_rate", 1.0)
    body = app_client.post("/v1/feed", json={"user_id": users[1], "limit": 20}).json()
    assert body["replay_sampled"], body["fallbacks_used"]
    rec = replay_log.load(state.redis, body["request_id"])
    assert rec is not None
    assert rec.X.shape == (len(rec.candidate_ids), len(rec.features))
    assert rec.matrix_ok()
    assert rec.served_ids.tolist() == [it["product_id"] for it in body["items"]]
    assert rec.model_version == body["model_version"] and rec.snapshot_version == body["snapshot_version"]
    assert rec.settings_digest == state.settings.digest()
    assert set(rec.served_ids.tolist()) <= set(rec.candidate_ids.tolist())
    assert rec.user_id == users[1] and not hasattr(rec, "lat")  # PII-free: no coordinates stored
    # unsampled responses leave no record
    monkeypatch.setattr(state.settings, "replay_sample_rate", 0.0)
    body2 = app_client.post("/v1/feed", json={"user_id": users[1]}).json()
    assert replay_log.load(state.redis, body2["request_id"]) is None


def test_replay_request_same_ranking_then_changed_input(app_client, users, monkeypatch):
    from gpu_core.feature_store import OnlineStore

    state = app_client.app.state.services.state
    monkeypatch.setattr(state.settings, "replay_sample_rate", 1.0)
    body = app_client.post("/v1/feed", json={"user_id": users[2], "limit": 20}).json()
    out = replay.replay_request(state, body["request_id"])
    assert out["same_ranking"], out
    assert out["matrix_sha256_ok"] and not out["model_changed"] and not out["snapshot_changed"]
    assert out["changed_features"] == {}
    # a real-time input changes: one candidate boosted now
    pid = body["items"][5]["product_id"]
    OnlineStore(state.redis).set_flags(pid, boosted=True)
    out = replay.replay_request(state, body["request_id"])
    assert out["changed_features"] == {"is_boosted_now": 1}
    assert out["same_ranking"]  # the recorded matrix still re-scores to the served ranking
