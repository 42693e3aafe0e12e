"""One scoring path: the served scores, the replayed scores and the trainer's evaluation scores of the same
batch are bit-identical; the retrieval and scoring stages' contracts; model_unavailable; budget overruns."""

from __future__ import annotations

import numpy as np

from engines.ranker import score_matrix
from gpu_core import replay_log
from gpu_core.device import to_host
from online.api import _ctx, _store_replay
from online.candidates import Fallback, Source
from online.replay import rescore
from online.schemas import FeedRequest, SearchRequest


def _rank(svc, req, kind="feed", query=""):
    ctx = _ctx(req, kind, query, False, svc.state.settings)
    return ctx, svc.pipeline.rank(ctx)


def test_serving_replay_and_training_evaluation_score_bit_identically(app_client, users):
    from batch.train import evaluate, evaluate_model, weights

    svc = app_client.app.state.services
    state = svc.state
    ctx, res = _rank(svc, FeedRequest(user_id=users[3], limit=20))
    assert res.batch is not None and ctx.model is state.models.get("production")
    served = to_host(res.batch.score)
    _store_replay(state, ctx, res.batch)
    rec = replay_log.load(state.redis, ctx.request_id)
    assert rec.matrix_ok() and np.array_equal(rec.X, to_host(res.batch.X))
    # replay: the recorded batch through the serving stages
    again = rescore(svc.pipeline, ctx.request_id, rec, ctx.model)
    assert np.array_equal(to_host(again.score), served)
    assert again.final_ids.tolist() == res.batch.final_ids.tolist()
    # training evaluation: the trainer's weights and scoring function on the same matrix
    trained = np.asarray(score_matrix(ctx.model, rec.X, weights()).final)
    assert np.array_equal(trained, served)
    ds = type("Rows", (), {"X": rec.X, "label_click": (np.arange(len(rec.X)) % 3 == 0).astype(np.float32),
                           "label_conv": np.zeros(len(rec.X), np.float32),
                           "request": np.zeros(len(rec.X), np.int64)})()
    assert evaluate_model(ctx.model, ds, 20) == evaluate(served, ds, 20)


def test_model_unavailable_ranks_by_popularity_and_says_so(app_client, users):
    state = app_client.app.state.services.state
    models = state.models.models
    state.models.models = {}
    try:
        body = app_client.post("/v1/feed", json={"user_id": users[0], "limit": 20}).json()
    finally:
        state.models.models = models
    assert Fallback.MODEL_UNAVAILABLE in body["fallbacks_used"] and body["model_version"] == "none"
    organic = [it for it in body["items"] if not it["sponsored"]]
    pop = {int(i): float(p) for i, p in zip(state.mirror.ids, to_host(state.mirror.cols["popularity"]), strict=True)}
    assert [it["score"] for it in organic] == [pop[it["product_id"]] for it in organic]


def test_retrieval_stage_names_the_path_of_each_candidate(app_client, users, query_word):
    svc = app_client.app.state.services
    ctx = _ctx(SearchRequest(user_id=users[0], query=query_word), "search", query_word, False, svc.state.settings)
    batch = svc.pipeline.run(ctx, None, stop="retrieval")
    src = to_host(batch.source)
    hits = set(svc.state.indexes.keyword.search(query_word, 1000)[0].tolist())
    cand = svc.state.mirror.ids[to_host(batch.idx)]
    assert (src == Source.KEYWORD).any() and set(cand[src == Source.KEYWORD].tolist()) <= hits
    assert batch.n <= svc.state.settings.n_candidates and len(set(cand.tolist())) == batch.n
    # an unknown user's feed: no user vector, the region's popular listings
    ctx = _ctx(FeedRequest(user_id=10**9), "feed", "", False, svc.state.settings)
    batch = svc.pipeline.run(ctx, None, stop="retrieval")
    assert ctx.fallbacks == [Fallback.COLD_START] and (to_host(batch.source) == Source.POPULAR).all()


def test_scoring_stage_scores_with_the_pinned_model_and_records_it(app_client, users):
    from online.state import load_model_dir

    svc = app_client.app.state.services
    state = svc.state
    prod = state.models.get("production")
    other = load_model_dir(state.registry.download(prod.ref), prod.ref, state.be)  # a distinct object
    ctx = _ctx(FeedRequest(user_id=users[1]), "feed", "", False, state.settings)
    batch = svc.pipeline.run(ctx, None, stop="stock")
    assert batch.X is None and batch.cols is not None
    ctx.pinned_model = other
    batch = svc.pipeline.run(ctx, batch, start="scoring", stop="scoring")
    assert ctx.model is other and batch.X.shape[0] == batch.n
    assert np.isfinite(to_host(batch.score)).all()  # every candidate left alive was scored


def test_a_stage_over_its_budget_is_named_in_the_response(app_client, users, monkeypatch):
    svc = app_client.app.state.services
    monkeypatch.setattr(svc.pipeline.stage("rerank"), "budget_ms", 0.0)
    monkeypatch.setattr(svc.pipeline.stage("polish"), "budget_ms", float("inf"))
    body = app_client.post("/v1/feed", json={"user_id": users[0]}).json()
    assert body["budget_overruns_ms"]["rerank"] == body["timings_ms"]["rerank"]
    assert "polish" not in body["budget_overruns_ms"]
