"""Every named fallback of the ranking service, each caused by a real fault on the tiny world."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import redis

from gpu_core.feature_store import OnlineStore


class RaisingIndex:
    """A retrieval index whose search fails (a corrupt file, a crashed sidecar)."""

    def __init__(self, real):
        self.real = real

    def search(self, *_a, **_k):
        raise RuntimeError("index unavailable")

    retrieve = search

    def __getattr__(self, name):  # plan / relevance of the real index keep working
        return getattr(self.real, name)


def test_search_is_answered_by_the_keyword_index_alone(app_client, users, query_word):
    """A search never uses the user's vector: a failing vector index changes nothing, and every
    candidate is a keyword hit."""
    state = app_client.app.state.services.state
    state.indexes.vector = RaisingIndex(state.indexes.vector)
    r = app_client.post("/v1/search", json={"user_id": users[0], "query": query_word, "limit": 20})
    assert r.status_code == 200, r.text
    body = r.json()
    assert not {"vector_index_down", "keyword_only", "popular_in_region"} & set(body["fallbacks_used"])
    assert len(body["items"]) == 20
    from online.api import _ctx
    from online.candidates import Source
    from online.schemas import SearchRequest

    ctx = _ctx(SearchRequest(user_id=users[0], query=query_word), "search", query_word, False, state.settings)
    res = app_client.app.state.services.pipeline.rank(ctx)
    kw_ids = set(state.indexes.keyword.search(query_word, 1000)[0].tolist())
    batch = res.batch
    cand = state.mirror.ids[np.asarray(batch.idx)]
    assert (np.asarray(batch.source) == Source.KEYWORD).all() and set(cand.tolist()) <= kw_ids


def test_vector_index_down_feed_with_a_session_query_is_keyword_only(app_client, users, query_word):
    state = app_client.app.state.services.state
    state.indexes.vector = RaisingIndex(state.indexes.vector)
    from online.api import _ctx
    from online.candidates import Source
    from online.schemas import FeedRequest

    ctx = _ctx(FeedRequest(user_id=users[0]), "feed", "", False, state.settings)
    pipe = app_client.app.state.services.pipeline
    pipe.run(ctx, None, start="user", stop="user")
    ctx.user.features["current_search_query"] = query_word  # the session's last search
    batch = pipe.run(ctx, None, start="retrieval", stop="retrieval")
    assert "vector_index_down" in ctx.fallbacks and "keyword_only" in ctx.fallbacks
    kw_ids = set(state.indexes.keyword.search(query_word, 1000)[0].tolist())
    from_kw = np.asarray(batch.source) == Source.KEYWORD
    cand = state.mirror.ids[np.asarray(batch.idx)]
    assert from_kw.sum() > 0 and set(cand[from_kw].tolist()) <= kw_ids
    assert (np.asarray(batch.source)[~from_kw] == Source.POPULAR).all()  # the rest is the regional popular fill


def test_both_indexes_down_is_popular_in_region(app_client, users, query_word):
    state = app_client.app.state.services.state
    state.indexes.vector = RaisingIndex(state.indexes.vector)
    state.indexes.keyword = RaisingIndex(state.indexes.keyword)
    r = app_client.post("/v1/search", json={"user_id": users[1], "query": query_word, "limit": 10})
    assert r.status_code == 200, r.text
    body = r.json()
    assert {"vector_index_down", "keyword_index_down", "popular_in_region"} <= set(body["fallbacks_used"])
    assert len(body["items"]) == 10
    assert body["model_version"] != "none"  # the popular candidates are still scored by the model


def test_feed_with_vector_index_down_still_serves(app_client, users):
    state = app_client.app.state.services.state
    state.indexes.vector = RaisingIndex(state.indexes.vector)
    r = app_client.post("/v1/feed", json={"user_id": users[2]})
    assert r.status_code == 200 and len(r.json()["items"]) == 20
    assert "vector_index_down" in r.json()["fallbacks_used"]


def _block_redis(url: str, seconds: float) -> threading.Thread:
    """DEBUG SLEEP on another connection; returns once the server is seen blocked."""
    t = threading.Thread(target=lambda: redis.Redis.from_url(url).execute_command("DEBUG", "SLEEP", seconds))
    t.start()
    probe = redis.Redis.from_url(url, socket_timeout=0.02)
    for _ in range(200):
        try:
            probe.ping()
        except redis.TimeoutError:
            return t
        time.sleep(0.005)
    raise AssertionError("redis never blocked")


def test_slow_feature_store_is_popularity_ranking(app_client, users):
    state = app_client.app.state.services.state
    assert state.settings.feature_store_timeout_ms == 100
    t = _block_redis(state.settings.redis_url, 0.5)
    try:
        r = app_client.post("/v1/feed", json={"user_id": users[3], "limit": 20})
    finally:
        t.join()
    assert r.status_code == 200, r.text
    body = r.json()
    assert "feature_store_slow" in body["fallbacks_used"]
    assert body["model_version"] == "none"
    # generic popularity: organic items in non-increasing popularity of the snapshot
    m = state.mirror
    organic = [it for it in body["items"] if not it["sponsored"]]
    pop = m.cols["popularity"][m.index_of(np.array([it["product_id"] for it in organic]))]
    scores = [it["score"] for it in organic]
    np.testing.assert_allclose(scores, pop, rtol=1e-6)
    assert len(organic) >= 10
    # the service recovers on the next request
    r = app_client.post("/v1/feed", json={"user_id": users[3], "limit": 20})
    assert "feature_store_slow" not in r.json()["fallbacks_used"]


def test_deadline_exceeded_is_trending_globally(served_world, monkeypatch, users_of_world):
    from fastapi.testclient import TestClient

    from gpu_core.settings import reset_settings
    from online.app import create_app

    monkeypatch.setenv("JAIKOD_REQUEST_BUDGET_MS", "0.001")
    reset_settings()
    with TestClient(create_app(refresher=False, services=False)) as client:
        r = client.post("/v1/feed", json={"user_id": users_of_world[0], "limit": 15})
        trending = OnlineStore(redis.Redis.from_url(served_world.redis_url)).trending()
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["fallbacks_used"][-1] == "deadline_exceeded"
    assert len(trending) >= 15
    assert [it["product_id"] for it in body["items"]] == trending[:15].tolist()


def test_redis_down_is_local_trending_never_5xx(app_client, users, redis_server):
    state = app_client.app.state.services.state
    expect = state.mirror.trending[:20].tolist()
    redis_server.stop()
    try:
        for path, extra in (("/v1/feed", {}), ("/v1/search", {"query": "phone"})):
            r = app_client.post(path, json={"user_id": users[4], **extra})
            assert r.status_code == 200, r.text
            body = r.json()
            assert "redis_down" in body["fallbacks_used"]
            assert [it["product_id"] for it in body["items"]] == expect
        assert app_client.get("/readyz").status_code == 503
        assert app_client.get("/healthz").status_code == 200
    finally:
        redis_server.start()  # served_world restores the world's keys


def test_unknown_user_is_cold_start(app_client):
    r = app_client.post("/v1/feed", json={"user_id": 987_654_321, "lat": 13.75, "lon": 100.5, "limit": 20})
    assert r.status_code == 200, r.text
    body = r.json()
    assert "cold_start" in body["fallbacks_used"]
    assert len(body["items"]) == 20
    assert body["model_version"] != "none", body


@pytest.fixture()
def users_of_world(served_world) -> list[int]:
    r = redis.Redis.from_url(served_world.redis_url)
    version = r.get("jk:snapshot:current").decode()
    return sorted(int(k.decode().rsplit(":", 1)[1]) for k in r.scan_iter(match=f"jk:s:{version}:u:*", count=1000))[:5]
