"""``?explain=true``: TreeSHAP contributions of the top 10, checked against xgboost and the raw margin."""

from __future__ import annotations

import numpy as np
import xgboost as xgb

from gpu_core import replay_log
from kernels.features import MODEL_FEATURES


def test_explain_top10_contributions_sum_to_margin(app_client, users, monkeypatch):
    state = app_client.app.state.services.state
    monkeypatch.setattr(state.settings, "replay_sample_rate", 1.0)  # keep the served matrix to check against
    # behaviour, not latency: a loaded CI machine must not turn this request into the deadline fallback
    monkeypatch.setattr(state.settings, "request_budget_ms", 60_000.0)
    r = app_client.post("/v1/feed?explain=true", json={"user_id": users[0], "limit": 20})
    assert r.status_code == 200, r.text
    body = r.json()
    ex = body["explanations"]
    organic = [it for it in body["items"] if not it["sponsored"]]
    assert [e["product_id"] for e in ex] == [it["product_id"] for it in organic[:10]]
    assert [e["position"] for e in ex] == [it["position"] for it in organic[:10]]
    rec = replay_log.load(state.redis, body["request_id"])
    model = state.models.get("production")
    it = (0, model.best_ctr) if model.best_ctr > 0 else (0, 0)
    rows = []
    for e in ex:
        j = int(np.flatnonzero(rec.candidate_ids == e["product_id"])[0])
        rows.append(rec.X[j])
    rows = np.stack(rows)
    d = xgb.DMatrix(rows, feature_names=list(MODEL_FEATURES))
    contribs = model.ctr.predict(d, pred_contribs=True, iteration_range=it)
    margin = model.ctr.inplace_predict(rows, iteration_range=it, predict_type="margin")
    for e, c, m in zip(ex, contribs, margin, strict=True):
        # the response's contributions are xgboost's, by feature name, the largest |value| first
        for name, v in e["contributions"].items():
            assert np.isclose(v, c[MODEL_FEATURES.index(name)], rtol=1e-5, atol=1e-6)
        vals = list(e["contributions"].values())
        assert vals == sorted(vals, key=lambda v: -abs(v))
        assert min(abs(v) for v in vals) >= np.sort(np.abs(c[:-1]))[-len(vals)] - 1e-6
        assert np.isclose(e["bias"], c[-1], atol=1e-6)
        assert np.isclose(e["margin"], m, rtol=1e-5, atol=1e-5)
    # all contributions + bias = raw margin, for every explained row
    full = model.explain(rows)
    for f, m in zip(full, margin, strict=True):
        assert set(f["all_contributions"]) == set(MODEL_FEATURES)
        assert np.isclose(sum(f["all_contributions"].values()) + f["bias"], m, rtol=1e-4, atol=1e-4)
    # and the margin is the model's pCTR (sigmoid) the service scored with
    np.testing.assert_allclose(1 / (1 + np.exp(-margin)), model.ctr.inplace_predict(rows, iteration_range=it),
                               rtol=1e-5)


def test_no_explanations_without_the_flag(app_client, users):
    body = app_client.post("/v1/feed", json={"user_id": users[0]}).json()
    assert body.get("explanations") is None


def test_explanations_name_each_stage_removal_and_the_retrieval_path(app_client, users):
    body = app_client.post("/v1/feed?explain=true", json={"user_id": users[0], "limit": 20}).json()
    assert {it["retrieved_by"] for it in body["items"]} <= {"keyword", "vector", "popular"}
    removed = body["removed"]  # stage -> reason -> candidates removed
    assert set(removed) <= {"filters", "stock", "rerank"}
    for stage, reasons in removed.items():
        assert reasons and all(n > 0 for n in reasons.values()), (stage, reasons)
    plain = app_client.post("/v1/feed", json={"user_id": users[0], "limit": 20}).json()
    assert "removed" not in plain and "retrieved_by" not in plain["items"][0]
