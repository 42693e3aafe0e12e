"""The ranking service on ``vector_backend=milvus``, through the real API: the tiny world materialised
into a milvus-lite collection (the same eligible listings and vectors as its faiss index), feeds served
from it with the hard rules applied inside Milvus, and "vector DB down" by killing the server — the
named fallback (``vector_index_down``; ``keyword_only`` with a session query), never a 5xx — then
served from Milvus again once it is back."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tests.online.conftest import busiest_word, known_users

RETRIEVAL_FALLBACKS = {"vector_index_down", "keyword_only", "popular_in_region"}


@pytest.fixture(scope="module")
def milvus_world(tiny_world, milvus_server, redis_server, tmp_path_factory):
    """The tiny world's lake and registry, materialised with vector_backend=milvus into its own home and
    Redis db 2 (the tiny world's home and db stay untouched)."""
    from gpu_core.device import reset_backend
    from gpu_core.settings import reset_settings

    home = tmp_path_factory.mktemp("milvus_home")
    url = redis_server.url.rsplit("/", 1)[0] + "/2"
    env = {"JAIKOD_HOME": str(home), "JAIKOD_LAKE": str(tiny_world.lake), "JAIKOD_REDIS_URL": url,
           "JAIKOD_MLFLOW_URI": f"sqlite:///{(tiny_world.home / 'mlflow' / 'mlflow.db').resolve()}",
           "JAIKOD_DEVICE": "cpu", "JAIKOD_VECTOR_BACKEND": "milvus", "JAIKOD_MILVUS_URI": milvus_server.uri,
           "JAIKOD_MILVUS_TIMEOUT_MS": "5000",  # a loaded CI machine must not turn a slow answer into "down"
           "JAIKOD_MILVUS_BREAKER_S": "0.2",
           # a loaded CI machine: no deadline or feature-store budget may decide what these tests check
           "JAIKOD_FEATURE_STORE_TIMEOUT_MS": "2000", "JAIKOD_REQUEST_BUDGET_MS": "20000"}
    mp = pytest.MonkeyPatch()
    for k, v in env.items():
        mp.setenv(k, v)
    reset_settings()
    reset_backend()
    import redis

    from batch.materialize import run_materialize

    redis.Redis.from_url(url).flushdb()
    summary = run_materialize(tiny_world.lake)
    yield {"summary": summary, "redis_url": url}
    mp.undo()
    reset_settings()
    reset_backend()


@pytest.fixture()
def client(milvus_world, milvus):
    from fastapi.testclient import TestClient

    from online.app import create_app

    with TestClient(create_app(refresher=False, services=False)) as c:
        yield c


def _faiss_of_tiny_world(tiny_world):
    from engines.index import VectorIndex

    root = tiny_world.home / "artifacts" / "index"
    return VectorIndex.load(root / (root / "CURRENT").read_text().strip())


def test_feed_is_served_from_milvus_with_the_answers_of_faiss(client, milvus_world, tiny_world):
    from engines.vector_milvus import MilvusVectorIndex, collection_name

    state = client.app.state.services.state
    index = state.indexes.vector
    assert isinstance(index, MilvusVectorIndex)
    assert index.collection == collection_name(milvus_world["summary"].version)
    users = known_users(milvus_world["redis_url"], 4)
    for uid in users:
        r = client.post("/v1/feed", json={"user_id": uid})
        assert r.status_code == 200, r.text
        assert not RETRIEVAL_FALLBACKS & set(r.json()["fallbacks_used"]) and len(r.json()["items"]) == 20
    # the same eligible listings and vectors as the tiny world's faiss index: FLAT gives the same neighbours
    faiss_index = _faiss_of_tiny_world(tiny_world)
    rng = np.random.default_rng(0)
    for _ in range(5):
        q = rng.standard_normal(index.dim).astype(np.float32)
        q /= np.linalg.norm(q)
        got, want = index.search(q, 100)[0], faiss_index.search(q, 100)[0]
        assert len(set(got.tolist()) & set(want.tolist())) >= 99  # ties at the 100th score may swap


def test_hard_rules_run_inside_milvus_and_the_pool_is_eligible(client, milvus_world):
    """A banned category and a 50 km radius: every vector candidate retrieval hands on passes both."""
    from gpu_core.feature_store import OverrideKeys
    from kernels.geo import bounding_box, haversine_km
    from online.api import _ctx
    from online.candidates import Source
    from online.schemas import FeedRequest
    from online.state import Overrides

    state = client.app.state.services.state
    uid = known_users(milvus_world["redis_url"], 1)[0]
    cats = state.mirror.cols["category"].astype(np.int64)
    banned = int(np.bincount(cats[cats >= 0]).argmax())  # the commonest category
    r = state.redis
    Overrides.change(r, "sadd", OverrideKeys.BANNED_CATEGORIES, banned)
    try:
        req = FeedRequest(user_id=uid, lat=13.7563, lon=100.5018)
        ctx = _ctx(req, "feed", "", False, state.settings)
        pipe = client.app.state.services.pipeline
        pipe.run(ctx, None, start="user", stop="user")
        ctx.user.max_distance_km = 50.0
        batch = pipe.run(ctx, None, start="retrieval", stop="retrieval")
        idx = np.asarray(batch.idx)[np.asarray(batch.source) == Source.VECTOR]
        assert len(idx) > 0 and "vector_index_down" not in ctx.fallbacks
        assert (cats[idx] != banned).all()
        ll = np.asarray(state.mirror.cols["latlong"])[idx].astype(np.float64)
        lat_min, lat_max, lon_min, lon_max = bounding_box(13.7563, 100.5018, 50.0)
        assert ((ll[:, 0] >= lat_min) & (ll[:, 0] <= lat_max) & (ll[:, 1] >= lon_min) & (ll[:, 1] <= lon_max)).all()
        everywhere = state.indexes.vector.search(ctx.user.vector, len(state.mirror.ids))[0]  # no rules
        far = haversine_km(13.7563, 100.5018, *np.asarray(state.mirror.cols["latlong"])[
            state.mirror.index_of(everywhere)].astype(np.float64).T, xp=np) > 100.0
        assert far.any()  # the same search without the rules does reach beyond the box
    finally:
        Overrides.change(r, "srem", OverrideKeys.BANNED_CATEGORIES, banned)


def test_vector_db_killed_is_the_named_fallback_never_a_5xx(client, milvus_world, milvus):
    state = client.app.state.services.state
    users = known_users(milvus_world["redis_url"], 3)
    milvus.kill()
    r = client.post("/v1/feed", json={"user_id": users[0]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert "vector_index_down" in body["fallbacks_used"] and len(body["items"]) == 20
    r = client.post("/v1/search", json={"user_id": users[1], "query": busiest_word(state.indexes.keyword), "limit": 10})
    assert r.status_code == 200 and r.json()["items"]  # a search never needed the vector index
    # a feed seasoned by the session's last query is answered by keyword search alone
    from online.api import _ctx
    from online.schemas import FeedRequest

    ctx = _ctx(FeedRequest(user_id=users[2]), "feed", "", False, state.settings)
    pipe = client.app.state.services.pipeline
    pipe.run(ctx, None, start="user", stop="user")
    ctx.user.features["current_search_query"] = busiest_word(state.indexes.keyword)
    pipe.run(ctx, None, start="retrieval", stop="retrieval")
    assert {"vector_index_down", "keyword_only"} <= set(ctx.fallbacks)
    # back up: after the breaker's 0.2 s the next request probes, reconnects and is served from Milvus again
    milvus.start()
    time.sleep(0.25)
    r = client.post("/v1/feed", json={"user_id": users[0]})
    assert r.status_code == 200 and not RETRIEVAL_FALLBACKS & set(r.json()["fallbacks_used"])
