"""The kernels on cupy (a CUDA GPU) give the numpy answers. Skipped, with the reason, without a GPU."""

from __future__ import annotations

import numpy as np
import pytest

from gpu_core.device import gpu_probe

_OK, _WHY = gpu_probe()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not _OK, reason=f"no usable GPU: {_WHY}")]


@pytest.fixture(scope="module")
def cp():
    return pytest.importorskip("cupy")


def _host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def test_filters_and_distance_on_gpu(cp):
    from kernels.filters import banned_seller_mask, distance_mask

    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(5, 20, 5000), rng.uniform(97, 106, 5000)
    sellers, banned = rng.integers(0, 1000, 5000), np.unique(rng.integers(0, 1000, 50))
    keep_np, d_np = distance_mask(13.75, 100.5, lat, lon, 500.0)
    keep_cp, d_cp = distance_mask(13.75, 100.5, cp.asarray(lat), cp.asarray(lon), 500.0)
    assert isinstance(d_cp, cp.ndarray)
    np.testing.assert_allclose(_host(d_cp), d_np, rtol=1e-12)
    np.testing.assert_array_equal(_host(keep_cp), keep_np)
    np.testing.assert_array_equal(
        _host(banned_seller_mask(cp.asarray(sellers), cp.asarray(banned))),
        banned_seller_mask(sellers, banned),
    )


def test_scoring_rerank_slots_on_gpu(cp):
    from kernels.rerank import seller_run_limit
    from kernels.scoring import final_score, top_k_indices
    from kernels.slots import inject_slots

    rng = np.random.default_rng(1)
    n = 1000
    cols = [rng.random(n).astype(np.float32) for _ in range(3)] + [rng.random(n) < 0.1]
    s_np = final_score(*cols, 0.5, 0.3, 0.2, 0.1)
    s_cp = final_score(*(cp.asarray(c) for c in cols), 0.5, 0.3, 0.2, 0.1)
    np.testing.assert_allclose(_host(s_cp), s_np, rtol=1e-6)
    mask = rng.random(n) < 0.7
    top_np = top_k_indices(s_np, 200, mask=mask)
    top_cp = top_k_indices(cp.asarray(s_np), 200, mask=cp.asarray(mask))
    np.testing.assert_array_equal(_host(top_cp), top_np)
    seller = rng.integers(0, 5, n)
    np.testing.assert_array_equal(
        _host(seller_run_limit(top_cp, cp.asarray(seller))), seller_run_limit(top_np, seller)
    )
    ids_np, f_np = inject_slots(top_np, np.asarray([top_np[30], 99999]))
    ids_cp, f_cp = inject_slots(top_cp, cp.asarray([int(top_np[30]), 99999]))
    np.testing.assert_array_equal(_host(ids_cp), ids_np)
    np.testing.assert_array_equal(_host(f_cp), f_np)


def test_metrics_and_windows_on_gpu(cp):
    from kernels.metrics import ndcg_at_k, psi
    from kernels.windows import sort_events, window_count_sorted

    rng = np.random.default_rng(2)
    n = 20_000
    gid, scores, labels = rng.integers(0, 800, n), rng.random(n), rng.integers(0, 3, n)
    assert ndcg_at_k(cp.asarray(scores), cp.asarray(labels), cp.asarray(gid), 10) == pytest.approx(
        ndcg_at_k(scores, labels, gid, 10), rel=1e-12
    )
    a, b = rng.normal(size=n), rng.normal(0.2, size=n)
    assert psi(cp.asarray(a), cp.asarray(b)) == pytest.approx(psi(a, b), rel=1e-9)
    ent, ts = rng.integers(0, 100, n), rng.uniform(0, 86_400, n)
    q_ent, q_t = rng.integers(0, 100, 2000), rng.uniform(0, 86_400, 2000)
    ref = window_count_sorted(sort_events(ent, ts), q_ent, q_t, 300.0, 12)
    got = window_count_sorted(
        sort_events(cp.asarray(ent), cp.asarray(ts)), cp.asarray(q_ent), cp.asarray(q_t), 300.0, 12
    )
    np.testing.assert_array_equal(_host(got), ref)
