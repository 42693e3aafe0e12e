from __future__ import annotations

import numpy as np
import pytest

from kernels.scoring import final_score, top_k_indices


def test_final_score_formula(xp):
    rng = np.random.default_rng(0)
    ctr, cvr, trust = (rng.random(50).astype(np.float32) for _ in range(3))
    boosted = rng.random(50) < 0.3
    got = final_score(
        xp.asarray(ctr), xp.asarray(cvr), xp.asarray(trust), xp.asarray(boosted), 0.5, 0.3, 0.2, 0.15
    )
    assert got.dtype == xp.float32
    ref = ctr * 0.5 + cvr * 0.3 + trust * 0.2 + boosted.astype(np.float32) * 0.15
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-6)
    # the boost moves exactly the boosted items
    plain = final_score(
        xp.asarray(ctr), xp.asarray(cvr), xp.asarray(trust), xp.asarray(boosted), 0.5, 0.3, 0.2, 0.0
    )
    diff = np.asarray(got) - np.asarray(plain)
    np.testing.assert_allclose(diff[boosted], 0.15, rtol=1e-5)
    np.testing.assert_array_equal(diff[~boosted], 0.0)


def _ref_top_k(scores, k, mask):
    idx = np.flatnonzero(mask)
    order = np.lexsort((idx, -scores[idx]))  # by -score, then index
    return idx[order][:k]


@pytest.mark.parametrize("k", [0, 1, 5, 40, 500])
def test_top_k_matches_reference_with_ties(xp, k):
    rng = np.random.default_rng(k)
    scores = rng.integers(0, 8, size=200).astype(np.float64)  # many ties
    mask = rng.random(200) < 0.6
    got = np.asarray(top_k_indices(xp.asarray(scores), k, mask=xp.asarray(mask)))
    np.testing.assert_array_equal(got, _ref_top_k(scores, k, mask))
    got_all = np.asarray(top_k_indices(xp.asarray(scores), k))
    np.testing.assert_array_equal(got_all, _ref_top_k(scores, k, np.ones(200, bool)))


def test_top_k_small_cases(xp):
    s = xp.asarray([0.1, 0.9, 0.5, 0.9])
    np.testing.assert_array_equal(np.asarray(top_k_indices(s, 3)), [1, 3, 2])
    np.testing.assert_array_equal(
        np.asarray(top_k_indices(s, 3, mask=xp.asarray([1, 0, 1, 1]) > 0)), [3, 2, 0]
    )
    assert np.asarray(top_k_indices(s, 3, mask=xp.zeros(4, dtype=xp.bool))).shape == (0,)
