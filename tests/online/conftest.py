"""Fixtures of the ranking-service tests: an app on the tiny world, and the world's Redis content kept safe."""

from __future__ import annotations

import pytest
import redis


@pytest.fixture()
def served_world(world_env, redis_server):
    """The tiny world, with its Redis db restored afterwards (overrides, replay records, a stopped server)."""
    yield world_env
    world_env.restore(redis_server)


@pytest.fixture()
def app_client(served_world):
    """A TestClient over ``create_app(refresher=False, services=False)`` on the tiny world."""
    from fastapi.testclient import TestClient

    from online.app import create_app

    app = create_app(refresher=False, services=False)
    with TestClient(app) as client:
        yield client


def known_users(redis_url: str, n: int = 5) -> list[int]:
    """User ids of the live snapshot that have an embedding (so vector retrieval runs for them)."""
    import numpy as np

    from gpu_core.schema import USER_DAILY

    r = redis.Redis.from_url(redis_url)
    version = r.get("jk:snapshot:current").decode()
    keys = sorted(r.scan_iter(match=f"jk:s:{version}:u:*", count=1000))
    ids = [int(k.decode().rsplit(":", 1)[1]) for k in keys]
    rows = np.frombuffer(b"".join(r.mget(keys)), dtype="<f4").reshape(len(keys), USER_DAILY.width)
    emb = USER_DAILY.unpack(rows)["user_embedding"]
    return sorted(i for i, e in zip(ids, emb, strict=True) if np.any(e))[:n]


@pytest.fixture()
def users(served_world) -> list[int]:
    return known_users(served_world.redis_url, 8)


@pytest.fixture()
def query_word(app_client) -> str:
    return busiest_word(app_client.app.state.services.state.indexes.keyword)


def busiest_word(kw) -> str:
    """A title word (no sub-word part, concept, category or condition term) found in many titles of the
    world's keyword index ``kw``."""
    indptr = kw.bm25.scores["indptr"]
    vocab = [(w, t) for w, t in kw.bm25.vocab_dict.items()
             if w and w[0] not in "#=@" and w.isalpha() and t + 1 < len(indptr)
             and not kw.plan(w).parsed.condition_only]  # a condition word alone is its own fallback
    best = max(vocab, key=lambda kv: (indptr[kv[1] + 1] - indptr[kv[1]], kv[0]))
    return best[0]
