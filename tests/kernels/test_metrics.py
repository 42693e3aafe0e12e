from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import ndcg_score

from kernels.metrics import (
    bin_counts,
    dcg_at_k,
    ndcg_at_k,
    ndcg_per_group,
    psi,
    psi_from_counts,
    quantile_edges,
)


def test_dcg_hand_computed(xp):
    rel = xp.asarray([3, 2, 3, 0, 1, 2])
    full = 3 + 2 / math.log2(3) + 3 / 2 + 0 + 1 / math.log2(6) + 2 / math.log2(7)
    assert float(dcg_at_k(rel, None)) == pytest.approx(full, rel=1e-12)
    assert float(dcg_at_k(rel, 2)) == pytest.approx(3 + 2 / math.log2(3), rel=1e-12)
    rows = np.asarray(dcg_at_k(xp.asarray([[1, 0], [0, 1]]), 2))
    np.testing.assert_allclose(rows, [1.0, 1 / math.log2(3)])


def _sklearn_mean(scores, labels, gid, k, skip_zero=False):
    vals = []
    for g in np.unique(gid):
        sel = gid == g
        if skip_zero and not labels[sel].any():
            continue
        vals.append(ndcg_score(labels[sel][None, :], scores[sel][None, :], k=k))
    return float(np.mean(vals))


def _random_groups(rng, n_groups, ties):
    sizes = rng.integers(2, 25, size=n_groups)
    gid = np.repeat(rng.choice(10_000, size=n_groups, replace=False), sizes)
    perm = rng.permutation(len(gid))
    gid = gid[perm]
    n = len(gid)
    scores = rng.integers(0, 5, size=n).astype(np.float64) if ties else rng.random(n)
    labels = rng.integers(0, 4, size=n) * (rng.random(n) < 0.5)
    return scores, labels, gid


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_groups=st.integers(1, 60), k=st.integers(1, 30))
def test_ndcg_matches_sklearn_no_ties(xp, seed, n_groups, k):
    scores, labels, gid = _random_groups(np.random.default_rng(seed), n_groups, ties=False)
    got = ndcg_at_k(xp.asarray(scores), xp.asarray(labels), xp.asarray(gid), k)
    assert got == pytest.approx(_sklearn_mean(scores, labels, gid, k), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_ndcg_matches_sklearn_with_ties(xp, seed):
    scores, labels, gid = _random_groups(np.random.default_rng(100 + seed), 40, ties=True)
    for k in (1, 3, 10, None):
        got = ndcg_at_k(xp.asarray(scores), xp.asarray(labels), xp.asarray(gid), k)
        assert got == pytest.approx(_sklearn_mean(scores, labels, gid, k), rel=1e-10, abs=1e-12)


def test_ndcg_offsets_equal_ids_and_all_zero_groups(xp):
    rng = np.random.default_rng(7)
    sizes = np.array([5, 3, 8, 4])
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    gid = np.repeat(np.arange(4), sizes)
    scores = rng.random(offsets[-1])
    labels = rng.integers(1, 3, size=offsets[-1])
    labels[gid == 2] = 0  # one query without any relevant item
    by_ids = ndcg_at_k(xp.asarray(scores), xp.asarray(labels), xp.asarray(gid), 5)
    by_off = ndcg_at_k(xp.asarray(scores), xp.asarray(labels), xp.asarray(offsets), 5, offsets=True)
    assert by_ids == pytest.approx(by_off, rel=1e-14)
    assert by_ids == pytest.approx(_sklearn_mean(scores, labels, gid, 5), rel=1e-12)
    skipped = ndcg_at_k(xp.asarray(scores), xp.asarray(labels), xp.asarray(gid), 5, ignore_all_zero=True)
    assert skipped == pytest.approx(_sklearn_mean(scores, labels, gid, 5, skip_zero=True), rel=1e-12)
    assert skipped == pytest.approx(by_ids * 4 / 3, rel=1e-12)
    keys, per, has_rel = ndcg_per_group(xp.asarray(scores), xp.asarray(labels), xp.asarray(gid), 5)
    np.testing.assert_array_equal(np.asarray(keys), [0, 1, 2, 3])
    np.testing.assert_array_equal(np.asarray(has_rel), [True, True, False, True])
    assert float(np.asarray(per)[2]) == 0.0


def test_ndcg_perfect_and_reversed(xp):
    labels = xp.asarray([3, 2, 1, 0])
    gid = xp.asarray([0, 0, 0, 0])
    assert ndcg_at_k(xp.asarray([4.0, 3.0, 2.0, 1.0]), labels, gid, 4) == pytest.approx(1.0)
    assert ndcg_at_k(xp.asarray([1.0, 2.0, 3.0, 4.0]), labels, gid, 4) < 0.7
    assert math.isnan(ndcg_at_k(xp.asarray([1.0]), xp.asarray([0]), xp.asarray([0]), 3, ignore_all_zero=True))


def test_psi_from_counts_hand_computed(xp):
    e, a = [50, 30, 20], [30, 30, 40]
    p, q = [0.5, 0.3, 0.2], [0.3, 0.3, 0.4]
    ref = sum((qi - pi) * math.log(qi / pi) for pi, qi in zip(p, q, strict=True))
    assert psi_from_counts(xp.asarray(e), xp.asarray(a)) == pytest.approx(ref, rel=1e-12)
    assert psi_from_counts(xp.asarray(e), xp.asarray(e)) == 0.0
    # an empty bin is floored at eps, so the index stays finite
    with_empty = psi_from_counts(xp.asarray([10, 0]), xp.asarray([5, 5]), eps=1e-4)
    ref_empty = (0.5 - 1.0) * math.log(0.5 / 1.0) + (0.5 - 1e-4) * math.log(0.5 / 1e-4)
    assert with_empty == pytest.approx(ref_empty, rel=1e-12)


def test_psi_quantile_bins_hand_computed(xp):
    expected = xp.asarray([float(v) for v in range(1, 11)])  # median 5.5 -> bins (-inf, 5.5], (5.5, inf)
    actual = xp.asarray([1.0, 2.0, 3.0, 8.0, 9.0, 10.0, 10.0, 10.0])
    np.testing.assert_allclose(np.asarray(quantile_edges(expected, 2)), [5.5])
    np.testing.assert_array_equal(np.asarray(bin_counts(actual, quantile_edges(expected, 2))), [3, 5])
    ref = (3 / 8 - 0.5) * math.log((3 / 8) / 0.5) + (5 / 8 - 0.5) * math.log((5 / 8) / 0.5)
    assert psi(expected, actual, bins=2) == pytest.approx(ref, rel=1e-12)


def test_psi_edges_match_numpy_quantiles_and_detect_shift(xp):
    rng = np.random.default_rng(5)
    ref = rng.normal(size=5000)
    np.testing.assert_allclose(
        np.asarray(quantile_edges(xp.asarray(ref), 10)), np.quantile(ref, np.arange(1, 10) / 10), rtol=1e-12
    )
    counts = np.asarray(bin_counts(xp.asarray(ref), quantile_edges(xp.asarray(ref), 10)))
    assert counts.sum() == 5000 and (counts == 500).all()
    same = psi(xp.asarray(ref), xp.asarray(rng.normal(size=5000)))
    shifted = psi(xp.asarray(ref), xp.asarray(rng.normal(0.5, 1.0, size=5000)))
    assert same < 0.02 < 0.1 < shifted


def test_psi_repeated_values_give_fewer_bins(xp):
    ref = xp.asarray([0.0] * 80 + [1.0] * 20)
    edges = np.asarray(quantile_edges(ref, 10))
    assert len(edges) < 9 and len(np.unique(edges)) == len(edges)
    assert psi(ref, ref) == 0.0


def test_psi_of_a_distribution_with_itself_is_zero_and_samples_of_one_stay_low():
    """The continuous-training trigger's PSI (quantile bins of the reference) never fires on no drift."""
    rng = np.random.default_rng(0)
    for x in (rng.normal(size=50_000), rng.exponential(size=50_000), np.r_[np.zeros(30_000), rng.random(20_000)],
              rng.integers(0, 3, 50_000).astype(float)):
        assert psi(x, x, bins=10, xp=np) == 0.0
        y = rng.permutation(x)
        assert psi(y[:25_000], y[25_000:], bins=10, xp=np) < 0.01  # two halves of one sample
    shifted = rng.normal(0.7, 1.0, 50_000)
    assert psi(rng.normal(size=50_000), shifted, bins=10, xp=np) > 0.2
