"""Real-data LTR check: our NDCG equals sklearn's, our ranker beats XGBoost defaults and reaches 0.779."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from batch.ltr_check import GOAL_NDCG10, load_ltr_dir, ndcg_report, ndcg_sklearn, run_ltr_check
from batch.ranker import (
    RankerBag,
    RankerConfig,
    ndcg_linear,
    predict_ranker,
    query_folds,
    split_queries,
    train_ranker,
)
from gpu_core.errors import ConfigError

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ltr-yahoo-sample"
pytestmark = pytest.mark.skipif(not (DATA / "rank.train").is_file(), reason=f"no LTR sample at {DATA}")


@pytest.fixture(scope="module")
def data():
    return load_ltr_dir(DATA)


@pytest.fixture(scope="module")
def result():
    return run_ltr_check(DATA, RankerConfig(device="cpu", nthread=1))


def test_loader_aligns_features_and_queries(data):
    assert data["X_train"].shape[1] == data["X_test"].shape[1]
    assert data["X_train"].shape[0] == data["qid_train"].shape[0] == 3005
    assert np.unique(data["qid_train"]).size == 201 and np.unique(data["qid_test"]).size == 50


@pytest.mark.parametrize("k", [1, 3, 5, 10])
def test_ndcg_equals_sklearn_on_real_labels(data, k):
    y, q = data["y_test"], data["qid_test"]
    rng = np.random.default_rng(k)
    # coarse scores produce many ties: sklearn averages over tied documents, so must we
    for scores in (rng.integers(0, 3, y.shape[0]).astype(float), rng.normal(size=y.shape[0]), y + 0.0):
        ref = ndcg_sklearn(scores, y, q, k)
        assert ndcg_linear(scores, y, q, k) == pytest.approx(ref, abs=1e-12)
        assert ndcg_report(scores, y, q, (k,))[f"ndcg@{k}"] == pytest.approx(ref, abs=1e-6)
    assert ndcg_linear(y, y, q, k) == pytest.approx(1.0)


def test_ndcg_skips_all_zero_queries():
    scores = np.array([0.9, 0.1, 0.5, 0.2])
    labels = np.array([0.0, 0.0, 1.0, 0.0])
    qid = np.array([0, 0, 1, 1])
    assert ndcg_linear(scores, labels, qid, 10) == pytest.approx(1.0)
    assert ndcg_sklearn(scores, labels, qid, 10) == pytest.approx(1.0)


def test_ours_beats_defaults_and_reaches_goal(result):
    ours, base = result["models"]["ours"], result["models"]["xgboost_defaults"]
    assert ours["ndcg@10"] >= GOAL_NDCG10, result
    assert ours["ndcg@10"] > base["ndcg@10"], result
    assert result["meets_goal"] and result["beats_xgboost_defaults"]
    assert set(ours) >= {"ndcg@1", "ndcg@3", "ndcg@5", "ndcg@10", "seconds", "trees"}
    assert result["reference"]["lightgbm_lambdarank"]["ndcg@10"] == 0.779


def test_validation_split_uses_training_queries_only(data):
    qtr, qte = data["qid_train"], data["qid_test"]
    tr, va = split_queries(qtr, 0.2, seed=0)
    assert not (tr & va).any() and (tr | va).all()
    assert set(np.unique(qtr[va])).isdisjoint(np.unique(qtr[tr]))  # whole queries on one side
    assert np.unique(qtr[va]).size == round(0.2 * np.unique(qtr).size)
    # the trained bag's early-stopping rows are exactly the training rows, split by training query
    cfg = RankerConfig(device="cpu", nthread=1, n_rounds=5, early_stopping_rounds=2)
    bag = train_ranker(data["X_train"], data["y_train"], qid=qtr + 10_000, config=cfg)
    val_qids = [set(json.loads(b.attr("validation_qids"))) for b in bag.boosters]
    assert set().union(*val_qids) == set(np.unique(qtr) + 10_000)
    assert sum(len(v) for v in val_qids) == np.unique(qtr).size  # disjoint folds
    assert sum(int(b.attr("validation_rows")) for b in bag.boosters) == qtr.shape[0] != qte.shape[0]


def test_split_is_deterministic_by_seed(data):
    q = data["qid_train"]
    a = split_queries(q, 0.2, seed=3)[1]
    assert np.array_equal(a, split_queries(q, 0.2, seed=3)[1])
    assert not np.array_equal(a, split_queries(q, 0.2, seed=4)[1])


def test_bag_folds_partition_the_training_queries(data):
    q = data["qid_train"]
    folds = query_folds(q, 5, seed=0)
    assert np.array_equal(np.sum(folds, axis=0), np.ones(q.shape[0]))  # each row in exactly one fold
    for va in folds:
        assert set(np.unique(q[va])).isdisjoint(np.unique(q[~va]))
    assert all(np.array_equal(a, b) for a, b in zip(folds, query_folds(q, 5, seed=0), strict=True))


def test_training_is_deterministic_for_a_seed(data):
    cfg = RankerConfig(device="cpu", nthread=1, n_rounds=15, early_stopping_rounds=5, n_bags=2)
    Xtr, ytr, qtr = data["X_train"], data["y_train"], data["qid_train"]
    model = train_ranker(Xtr, ytr, qid=qtr, config=cfg)
    assert isinstance(model, RankerBag) and len(model.boosters) == cfg.n_bags
    p1 = predict_ranker(model, data["X_test"])
    p2 = predict_ranker(train_ranker(Xtr, ytr, qid=qtr, config=cfg), data["X_test"])
    assert np.array_equal(p1, p2)


def test_group_sizes_and_qid_give_the_same_model(data):
    cfg = RankerConfig(device="cpu", nthread=1, n_rounds=20, early_stopping_rounds=5, n_bags=1)
    Xtr, ytr, qtr = data["X_train"], data["y_train"], data["qid_train"]
    sizes = np.bincount(qtr)
    a = predict_ranker(train_ranker(Xtr, ytr, qid=qtr, config=cfg), data["X_test"])
    b = predict_ranker(train_ranker(Xtr, ytr, group_sizes=sizes, config=cfg), data["X_test"])
    assert np.array_equal(a, b)


def test_bad_inputs_raise_config_error(data):
    with pytest.raises(ConfigError):
        RankerConfig(device="cpu", validation_fraction=1.5)
    with pytest.raises(ConfigError):
        train_ranker(data["X_train"], data["y_train"], group_sizes=[1, 2], config=RankerConfig(device="cpu"))
