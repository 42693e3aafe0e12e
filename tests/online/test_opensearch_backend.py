"""The service on the OpenSearch keyword backend (``JAIKOD_KEYWORD_BACKEND=opensearch``), tiny world: a
search is answered by the node, then the node is stopped for real and searches answer with the named
``keyword_index_down`` fallback — never a 5xx."""

from __future__ import annotations

import pandas as pd

from engines.search.opensearch import OpenSearchIndex, build_index, index_name
from gpu_core.schema import CATEGORIES, code_of


def _common_word(index) -> str:
    """A plain title word (no part, concept, category or condition term) found in many titles."""
    indptr = index.bm25.scores["indptr"]
    vocab = [(w, t) for w, t in index.bm25.vocab_dict.items()
             if w and w[0] not in "#=@" and w.isalpha() and t + 1 < len(indptr)
             and not index.plan(w).parsed.condition_only]
    return max(vocab, key=lambda kv: (indptr[kv[1] + 1] - indptr[kv[1]], kv[0]))[0]


def test_search_on_opensearch_then_node_stopped_is_keyword_index_down(opensearch_node, served_world, users,
                                                                       monkeypatch):
    from fastapi.testclient import TestClient

    from gpu_core.settings import get_settings, reset_settings
    from online.app import create_app

    # the world's current snapshot, indexed in the node as the materialiser does on this backend
    version = (get_settings().artifacts_dir / "index" / "CURRENT").read_text().strip()
    p = pd.read_parquet(served_world.lake / "products", columns=["product_id", "title", "category", "in_stock"])
    build_index(opensearch_node.url, index_name(version), p["product_id"].to_numpy(), p["title"].to_numpy(),
                code_of(CATEGORIES, p["category"].tolist()), eligible=p["in_stock"].to_numpy(bool))
    monkeypatch.setenv("JAIKOD_KEYWORD_BACKEND", "opensearch")
    monkeypatch.setenv("JAIKOD_OPENSEARCH_URL", opensearch_node.url)
    # behaviour, not latency: a busy CI machine must not turn a slow answer into a fallback here
    monkeypatch.setenv("JAIKOD_OPENSEARCH_TIMEOUT_MS", "20000")
    monkeypatch.setenv("JAIKOD_REQUEST_BUDGET_MS", "60000")
    reset_settings()
    with TestClient(create_app(refresher=False, services=False)) as client:
        kw = client.app.state.services.state.indexes.keyword
        assert isinstance(kw, OpenSearchIndex) and kw.name == index_name(version)
        word = _common_word(kw.local)
        r = client.post("/v1/search?explain=true", json={"user_id": users[0], "query": word, "limit": 20})
        assert r.status_code == 200, r.text
        body = r.json()
        assert "keyword_index_down" not in body["fallbacks_used"] and len(body["items"]) == 20
        on_node = set(kw.retrieve(word, 3000).ids.tolist())
        assert on_node == set(kw.local.retrieve(word, 3000).ids.tolist())  # same candidates as embedded
        assert {it["product_id"] for it in body["items"] if not it["sponsored"]} <= on_node

        opensearch_node.stop()  # keyword index down, for real
        for uid in users[:3]:
            r = client.post("/v1/search", json={"user_id": uid, "query": word, "limit": 20})
            assert r.status_code == 200, r.text
            down = r.json()
            assert "keyword_index_down" in down["fallbacks_used"]
            assert len(down["items"]) > 0  # the user's vector and the region's popular listings
        # the feed seasoned with the session's query still serves
        r = client.post("/v1/feed", json={"user_id": users[0]})
        assert r.status_code == 200 and len(r.json()["items"]) == 20
