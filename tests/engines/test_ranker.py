"""engines.ranker: the direct C predictor equals ``inplace_predict`` bit for bit; other inputs fall back."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb

from engines.ranker import Ranker, _dense_ok, predict_dense


@pytest.fixture(scope="module")
def boosters():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 7)).astype(np.float32)
    X[rng.random(X.shape) < 0.05] = np.nan  # missing values take the default branch on both paths
    y = (X[:, 0] + rng.normal(size=2000) > 0).astype(np.float32)
    out = []
    for seed in (1, 2):
        d = xgb.DMatrix(X, label=y)
        out.append(xgb.train({"objective": "binary:logistic", "max_depth": 5, "nthread": 1, "seed": seed}, d, 40))
    return out, X


@pytest.mark.parametrize("it", [(0, 0), (0, 17), (0, 40)])
def test_predict_dense_is_inplace_predict(boosters, it):
    (ctr, _), X = boosters
    for n in (1, 3, 1000, 2000):
        got = predict_dense(ctr, X[:n], it)
        want = ctr.inplace_predict(X[:n], iteration_range=it)
        assert got.dtype == np.float32 and got.shape == (n,)
        assert np.array_equal(got, want, equal_nan=True)
        assert got.tobytes() == np.asarray(want, np.float32).tobytes()


def test_result_is_a_copy(boosters):
    (ctr, _), X = boosters
    a = predict_dense(ctr, X[:10], (0, 0))
    kept = a.copy()
    predict_dense(ctr, X[10:20], (0, 0))  # reuses the booster's output buffer
    assert np.array_equal(a, kept)


def test_ranker_predict_paths_agree(boosters):
    (ctr, cvr), X = boosters
    model = Ranker(None, ctr, cvr, 25, 0)
    fast = model.predict(X)
    assert _dense_ok(X)
    for other in (X.astype(np.float64), np.asfortranarray(X), X[:, :]):  # fallbacks (and a C view)
        slow = model.predict(other)
        for a, b in zip(fast, slow, strict=True):
            assert np.array_equal(a, b, equal_nan=True)
    assert not _dense_ok(X.astype(np.float64)) and not _dense_ok(np.asfortranarray(X)) and not _dense_ok(X[:0])
    p_ctr, p_cvr = model.predict(X)
    assert np.array_equal(p_ctr, ctr.inplace_predict(X, iteration_range=(0, 25)))
    assert np.array_equal(p_cvr, cvr.inplace_predict(X, iteration_range=(0, 0)))
