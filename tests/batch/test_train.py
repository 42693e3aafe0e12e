"""Training and evaluation: NDCG@k parity with scikit-learn through ``batch.train.evaluate``, the
model beats popularity on the tiny world's holdout, and a worse model is never promoted."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import ndcg_score

from batch.dataset import TrainingSet
from batch.train import TrainConfig, evaluate, run_evaluate, run_train
from gpu_core.registry import PRODUCTION, RANKER, STAGING, Registry


def _training_set(rng: np.random.Generator, sizes: list[int]) -> TrainingSet:
    n = sum(sizes)
    group = np.repeat(np.arange(len(sizes)), sizes)
    click = (rng.random(n) < 0.3).astype(np.float32)
    conv = (click * (rng.random(n) < 0.4)).astype(np.float32)
    zeros = np.zeros(n, np.float32)
    return TrainingSet(np.zeros((n, 1), np.float32), click, conv, group, zeros, zeros, zeros,
                       pd.DataFrame({"request_id": group}))


def _sklearn_mean_ndcg(scores: np.ndarray, ds: TrainingSet, k: int) -> float:
    rel = ds.label_click + ds.label_conv
    vals = []
    for g in np.unique(ds.request):
        m = ds.request == g
        if rel[m].sum() > 0:  # requests without any positive are left out (the evaluation's rule)
            vals.append(ndcg_score(rel[m][None, :], scores[m][None, :], k=k))
    return float(np.mean(vals))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [1, 5, 20])
def test_evaluate_equals_sklearn_ndcg(seed, k):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, 40, size=rng.integers(3, 25)).tolist()
    ds = _training_set(rng, sizes)
    # shuffle rows so requests are interleaved, as after a concat of days
    perm = rng.permutation(len(ds))
    ds = TrainingSet(ds.X[perm], ds.label_click[perm], ds.label_conv[perm], ds.request[perm],
                     ds.popularity[perm], ds.seller_trust[perm], ds.boosted[perm], ds.rows.iloc[perm])
    scores = rng.normal(size=len(ds)).astype(np.float32)
    assert evaluate(scores, ds, k) == pytest.approx(_sklearn_mean_ndcg(scores, ds, k), rel=1e-5, abs=1e-6)


def test_evaluate_perfect_and_reversed_ranking():
    rng = np.random.default_rng(1)
    ds = _training_set(rng, [10, 12, 7])
    rel = ds.label_click + ds.label_conv
    assert evaluate(rel + 1e-3 * rng.random(len(ds)), ds, 20) == pytest.approx(1.0)
    assert evaluate(-rel, ds, 20) < 1.0


def test_model_beats_popularity_on_tiny_holdout(world_env):
    train = world_env.nightly["train"]
    assert train["holdout_rows"] > 0 and train["train_rows"] > train["holdout_rows"]
    assert 0.0 < train["ndcg_popularity"] < train["ndcg_model"] <= 1.0
    assert train["promoted_to"] == PRODUCTION and train["version"] is not None
    ev = run_evaluate(world_env.lake, alias=PRODUCTION)
    assert ev["model"] == f"{RANKER}/{train['version']}"
    assert ev["rows"] == train["holdout_rows"]
    assert ev["ndcg@20"] == pytest.approx(train["ndcg_model"], abs=1e-6)
    assert ev["ndcg@20 popularity"] == pytest.approx(train["ndcg_popularity"], abs=1e-6)
    assert ev["ndcg@20"] > ev["ndcg@20 popularity"]


def test_worse_model_is_not_promoted(world_env):
    registry = Registry()
    staging_before = registry.get(RANKER, STAGING)
    prod_before = registry.get(RANKER, PRODUCTION)
    assert staging_before is not None and prod_before is not None
    crippled = TrainConfig(n_rounds=1, max_depth=1, early_stopping_rounds=1, eta=0.01)
    res = run_train(world_env.lake, cfg=crippled, registry=registry)
    assert res.ndcg_production is not None
    assert res.ndcg_model <= res.ndcg_production
    assert res.version is None and res.promoted_to is None
    assert "not registered" in res.reason
    assert res.run_id  # still logged to MLflow
    after = Registry()
    assert after.get(RANKER, STAGING).version == staging_before.version
    assert after.get(RANKER, PRODUCTION).version == prod_before.version
    run = after.client.get_run(res.run_id)
    assert run.data.metrics["ndcg20"] == pytest.approx(res.ndcg_model)


def test_continuous_rule_staging_within_tolerance_rejected_beyond(world_env, tmp_path, monkeypatch):
    """The continuous retrain's rule (``continuous_not_worse_tolerance``, 2 %) on a registry of its own: the
    nightly's production model registered there; a retrain with the nightly's configuration on the same days
    (the same model, so not better) goes to ``staging`` for the canary; a crippled one, worse by more than
    2 %, is not registered and says why. Production never moves."""
    from gpu_core.settings import get_settings, reset_settings

    prod_dir = Registry().download(Registry().require(RANKER, PRODUCTION))
    monkeypatch.setenv("JAIKOD_HOME", str(tmp_path / "home"))  # its own MLflow registry; the lake is passed
    reset_settings()
    registry = Registry()
    assert registry.versions(RANKER) == [] and str(tmp_path) in registry.tracking_uri
    with registry.mlflow.start_run(experiment_id=registry.experiment("jaikod-ranker")) as run:
        registry.mlflow.log_artifacts(str(prod_dir), artifact_path="ranker")
    prod = registry.register_dir(RANKER, run.info.run_id, "ranker").version
    registry.set_alias(RANKER, PRODUCTION, prod)
    tol = get_settings().continuous_not_worse_tolerance
    assert tol == 0.02

    same = run_train(world_env.lake, registry=registry, not_worse_tolerance=tol)
    assert same.ndcg_model == pytest.approx(same.ndcg_production, rel=1e-9)  # not better: the strict rule refuses it
    assert same.promoted_to == STAGING and same.version not in (None, prod)
    assert "not worse than production" in same.reason and "within 2%" in same.reason
    assert registry.aliases(RANKER) == {PRODUCTION: int(prod), STAGING: int(same.version)}

    crippled = TrainConfig(n_rounds=1, max_depth=1, early_stopping_rounds=1, eta=0.01)
    worse = run_train(world_env.lake, cfg=crippled, registry=registry, not_worse_tolerance=tol)
    assert worse.ndcg_model < worse.ndcg_production * (1 - tol)
    assert worse.version is None and worse.promoted_to is None
    assert worse.reason == (f"not registered: NDCG@20 {worse.ndcg_model:.4f} < production "
                            f"{worse.ndcg_production:.4f} - 2%")
    assert registry.aliases(RANKER) == {PRODUCTION: int(prod), STAGING: int(same.version)}  # nothing moved
    assert len(registry.versions(RANKER)) == 2


def test_monotone_text_variant_never_lowers_a_prediction_as_relevance_rises(world_env, monkeypatch):
    """``TrainConfig(monotone_text=True)`` (issue 11's alternative to relevance tiers): raising any text-relevance
    feature of a holdout row never lowers its pCTR or pCVR; the holdout metrics split feed and search requests."""
    import json

    from batch.train import fit_rankers, holdout_metrics, monotone_text_constraints
    from gpu_core.settings import reset_settings
    from kernels.features import MODEL_FEATURES, TEXT_FEATURES, feature_index

    monkeypatch.setenv("JAIKOD_TRAIN_DAYS", "7")  # a week of rows is enough to check the constraint (faster)
    reset_settings()
    fitted = fit_rankers(world_env.lake, cfg=TrainConfig(monotone_text=True, n_rounds=20))
    assert len(fitted.train_days) == 7
    cons = json.loads(fitted.ctr.save_config())["learner"]["gradient_booster"]["tree_train_param"]
    assert cons["monotone_constraints"] == monotone_text_constraints()
    assert monotone_text_constraints().count("1") == len(TEXT_FEATURES) and len(TEXT_FEATURES) < len(MODEL_FEATURES)
    X = fitted.test.X[:400].copy()
    base_ctr, base_cvr = fitted.model.predict(X)
    for name in TEXT_FEATURES:
        up = X.copy()
        up[:, feature_index(name)] += np.float32(1.0)
        ctr, cvr = fitted.model.predict(up)
        assert (ctr >= base_ctr - 1e-6).all() and (cvr >= base_cvr - 1e-6).all(), name
    m = holdout_metrics(fitted.model, fitted.test)
    assert m["rows_feed"] + m["rows_search"] == m["rows_all"] == len(fitted.test)
    assert 0.0 < m["ndcg20_feed"] <= 1.0 and 0.5 < m["auc_click_all"] <= 1.0


def test_split_live_day_holds_out_the_latest_requests_whole():
    """The continuous retrain's split: the latest 30 % of the live day's requests (by their first impression)
    are the holdout, no request is cut in two, and every other row (earlier days too) trains."""
    from batch.train import split_live_day
    from gpu_core.errors import ConfigError

    rng = np.random.default_rng(0)
    sizes = [3] * 4 + [2] * 10  # 4 requests on the day before, 10 on the live day
    ds = _training_set(rng, sizes)
    req = ds.rows["request_id"].to_numpy()
    order = rng.permutation(10)  # live requests arrive in a shuffled order of their ids
    start = {4 + i: 1_000 + 100 * int(order[i]) for i in range(10)}
    ds.rows["_day"] = np.where(req < 4, "2026-12-01", "2026-12-02")
    ds.rows["ts_ms"] = [start.get(int(g), 0) + (j % 2) * 150 for j, g in enumerate(req)]  # 2nd row later
    train, test = split_live_day(ds, dt.date(2026, 12, 2), 0.3)
    held = sorted(set(test.rows["request_id"]))
    assert held == sorted(g for g, t in start.items() if t >= 1_700)  # the 3 latest of 10
    assert len(test) == 6 and len(train) == len(ds) - 6
    assert (train.rows["_day"] == "2026-12-01").sum() == 12  # the earlier day trains whole
    assert not set(held) & set(train.rows["request_id"])  # no request in both
    assert set(np.unique(test.request)) == set(held)  # group ids kept
    with pytest.raises(ConfigError):
        split_live_day(ds, dt.date(2026, 12, 2), 1.0)


def test_fit_on_the_live_day_trains_on_its_earlier_part(world_env, monkeypatch):
    """``holdout_share``: the last day's earlier requests join the training set, its latest ones are the
    holdout, and early stopping validates on the last full day before it."""
    from batch.train import fit_rankers
    from gpu_core.settings import reset_settings

    monkeypatch.setenv("JAIKOD_TRAIN_DAYS", "3")
    reset_settings()
    last = max(dt.date.fromisoformat(p.name.split("=", 1)[1]) for p in (world_env.lake / "events").glob("date=*"))
    whole = fit_rankers(world_env.lake, last, TrainConfig(n_rounds=5))
    split = fit_rankers(world_env.lake, last, TrainConfig(n_rounds=5), holdout_share=0.3)
    day = last.isoformat()
    assert (whole.train.rows["_day"] != day).all() and (whole.test.rows["_day"] == day).all()
    on_day = split.train.rows["_day"] == day
    assert on_day.any() and (split.test.rows["_day"] == day).all()
    assert len(split.train) + len(split.test) == len(whole.train) + len(whole.test)
    n_req = whole.test.rows["request_id"].nunique()
    assert split.test.rows["request_id"].nunique() == round(n_req * 0.3)
    first = split.train.rows.loc[on_day].groupby("request_id")["ts_ms"].min()
    assert first.max() <= split.test.rows.groupby("request_id")["ts_ms"].min().min()  # the holdout is later
    assert split.train_days[-1] == last
