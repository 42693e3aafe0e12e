"""Ranking and drift metrics: DCG/NDCG@k (vectorised over query groups) and PSI.

>>> ndcg_at_k(scores, labels, query_ids, k=10)             # mean NDCG@10 over queries
>>> ndcg_at_k(scores, labels, offsets, k=10, offsets=True)  # groups given as CSR offsets
>>> psi(train_feature, live_feature, bins=10)
"""

from __future__ import annotations

import math
from typing import Any

from kernels._xp import get_xp


def _discount(rank: Any, k: int | None, xp: Any) -> Any:
    """``1/log2(rank+2)`` for 0-based ranks below ``k``, else 0 (float64)."""
    r = xp.astype(rank, xp.float64)
    d = 1.0 / xp.log2(r + 2.0)
    if k is not None:
        d = xp.where(r < k, d, xp.zeros_like(d))
    return d


def dcg_at_k(relevance_sorted: Any, k: int | None, xp: Any = None) -> Any:
    """DCG@k with linear gain, ``sum_{i<k} rel_i / log2(i+2)``, over the last axis.

    ``relevance_sorted`` holds the graded relevance in ranked order (best first); a 2-D input gives
    one DCG per row. Returns float64.
    """
    xp = get_xp(relevance_sorted, xp=xp)
    rel = xp.astype(xp.asarray(relevance_sorted), xp.float64)
    n = rel.shape[-1]
    d = _discount(xp.arange(n), k, xp)
    return xp.sum(rel * d, axis=-1)


def _segment_sums(values: Any, starts: Any, n: int, xp: Any) -> Any:
    """Sums of ``values`` over consecutive segments beginning at ``starts`` (ascending, starts[0] == 0)."""
    cs = xp.cumulative_sum(values, include_initial=True)
    ends = xp.concat([starts[1:], xp.asarray([n], dtype=starts.dtype)])
    return xp.take(cs, ends) - xp.take(cs, starts)


def _starts(flags: Any, xp: Any) -> Any:
    return xp.astype(xp.nonzero(flags)[0], xp.int64)


def _new_run(a: Any, xp: Any) -> Any:
    """True where ``a[i] != a[i-1]`` (and at i=0)."""
    return xp.concat([xp.ones(1, dtype=xp.bool), a[1:] != a[:-1]])


def ndcg_per_group(
    scores: Any, labels: Any, groups: Any, k: int | None, *, offsets: bool = False, xp: Any = None
) -> tuple[Any, Any, Any]:
    """``(group_keys, ndcg, has_relevant)`` per query group, groups in ascending key order.

    Same definition as ``sklearn.metrics.ndcg_score`` (linear gain, ``ignore_ties=False``): items
    with equal scores inside a group share the average gain of their tie block, spread over the
    block's discounts. The ideal DCG sorts by label. A group without any positive label gets NDCG 0
    (sklearn's choice) and ``has_relevant = False``. A one-item group (which sklearn refuses) gets
    1.0 if its label is positive, else 0.

    ``groups``: a group id per item (any order, ids need not be contiguous), or, with
    ``offsets=True``, CSR offsets ``[0, e_1, ..., n]`` where group ``g`` is ``[o_g, o_{g+1})``
    (group keys are then ``0..G-1``; empty groups are dropped).

    Fully vectorised: two stable argsorts give the order by (group, -score); tie blocks and group
    sums come from cumulative sums. Labels must be non-negative.
    """
    xp = get_xp(scores, labels, groups, xp=xp)
    scores = xp.reshape(xp.asarray(scores), (-1,))
    labels = xp.astype(xp.reshape(xp.asarray(labels), (-1,)), xp.float64)
    n = scores.shape[0]
    groups = xp.reshape(xp.asarray(groups), (-1,))
    if offsets:
        groups = xp.searchsorted(xp.astype(groups, xp.int64), xp.arange(n, dtype=xp.int64), side="right") - 1
    if n == 0:
        empty = xp.zeros(0, dtype=xp.float64)
        return xp.zeros(0, dtype=groups.dtype), empty, xp.zeros(0, dtype=xp.bool)
    s = xp.astype(scores, xp.float64)

    def by_group_then(key: Any) -> Any:
        o = xp.argsort(-key, stable=True)
        return xp.take(o, xp.argsort(xp.take(groups, o), stable=True))

    # --- DCG in score order with tie averaging
    o = by_group_then(s)
    g = xp.take(groups, o)
    gs = xp.take(s, o)
    gl = xp.take(labels, o)
    g_start_flag = _new_run(g, xp)
    g_starts = _starts(g_start_flag, xp)
    group_id = xp.cumulative_sum(xp.astype(g_start_flag, xp.int64)) - 1  # 0..G-1 per sorted item
    pos = xp.arange(n, dtype=xp.int64)
    rank = pos - xp.take(g_starts, group_id)
    disc = _discount(rank, k, xp)
    tie_flag = xp.logical_or(g_start_flag, _new_run(gs, xp))
    t_starts = _starts(tie_flag, xp)
    tie_id = xp.cumulative_sum(xp.astype(tie_flag, xp.int64)) - 1
    t_len = xp.astype(xp.concat([t_starts[1:], xp.asarray([n], dtype=xp.int64)]) - t_starts, xp.float64)
    t_mean_disc = _segment_sums(disc, t_starts, n, xp) / t_len
    dcg = _segment_sums(gl * xp.take(t_mean_disc, tie_id), g_starts, n, xp)

    # --- ideal DCG: sort by label (ties irrelevant: equal labels have equal gains)
    oi = by_group_then(labels)
    il = xp.take(labels, oi)
    idcg = _segment_sums(il * disc, g_starts, n, xp)  # same group sizes/starts as above

    has_rel = idcg > 0
    safe = xp.where(has_rel, idcg, xp.ones_like(idcg))
    ndcg = xp.where(has_rel, dcg / safe, xp.zeros_like(dcg))
    return xp.take(g, g_starts), ndcg, has_rel


def ndcg_at_k(
    scores: Any,
    labels: Any,
    groups: Any,
    k: int | None,
    *,
    offsets: bool = False,
    ignore_all_zero: bool = False,
    xp: Any = None,
) -> float:
    """Mean NDCG@k over query groups (see :func:`ndcg_per_group` for the definition).

    ``ignore_all_zero=False`` (default) follows ``sklearn.metrics.ndcg_score``: groups whose labels
    are all zero count as 0 in the mean. ``ignore_all_zero=True`` leaves them out of the mean (the
    usual choice for offline evaluation of queries without any click); NaN when no group is left.
    """
    xp = get_xp(scores, labels, groups, xp=xp)
    _, ndcg, has_rel = ndcg_per_group(scores, labels, groups, k, offsets=offsets, xp=xp)
    if ignore_all_zero:
        ndcg = ndcg[has_rel]
    if ndcg.shape[0] == 0:
        return math.nan
    return float(xp.mean(ndcg))


def psi_from_counts(expected_counts: Any, actual_counts: Any, eps: float = 1e-4, xp: Any = None) -> float:
    """Population stability index from bin counts.

    ``PSI = sum_b (q_b - p_b) * ln(q_b / p_b)`` with ``p = expected/sum(expected)``,
    ``q = actual/sum(actual)``, both floored at ``eps`` so that empty bins stay finite.
    """
    xp = get_xp(expected_counts, actual_counts, xp=xp)
    e = xp.astype(xp.reshape(xp.asarray(expected_counts), (-1,)), xp.float64)
    a = xp.astype(xp.reshape(xp.asarray(actual_counts), (-1,)), xp.float64)
    p = xp.maximum(e / xp.maximum(xp.sum(e), xp.asarray(1.0, dtype=xp.float64)), xp.asarray(eps))
    q = xp.maximum(a / xp.maximum(xp.sum(a), xp.asarray(1.0, dtype=xp.float64)), xp.asarray(eps))
    return float(xp.sum((q - p) * xp.log(q / p)))


def quantile_edges(expected: Any, bins: int = 10, xp: Any = None) -> Any:
    """The ``bins - 1`` inner bin edges: quantiles ``j/bins`` of ``expected`` (numpy's "linear" method),
    duplicates removed (a heavily repeated value yields fewer, wider bins)."""
    xp = get_xp(expected, xp=xp)
    x = xp.sort(xp.astype(xp.reshape(xp.asarray(expected), (-1,)), xp.float64))
    n = x.shape[0]
    if n == 0 or bins < 2:
        return xp.zeros(0, dtype=xp.float64)
    h = xp.astype(xp.arange(1, bins, dtype=xp.int64), xp.float64) * ((n - 1) / bins)
    lo = xp.astype(xp.floor(h), xp.int64)
    hi = xp.clip(lo + 1, 0, n - 1)
    frac = h - xp.astype(lo, xp.float64)
    edges = xp.take(x, lo) + frac * (xp.take(x, hi) - xp.take(x, lo))
    return xp.unique_values(edges)


def bin_counts(values: Any, inner_edges: Any, xp: Any = None) -> Any:
    """Counts per bin ``(-inf, e_1], (e_1, e_2], ..., (e_last, +inf)`` (int64, ``len(edges)+1`` bins)."""
    xp = get_xp(values, inner_edges, xp=xp)
    x = xp.sort(xp.astype(xp.reshape(xp.asarray(values), (-1,)), xp.float64))
    edges = xp.astype(xp.asarray(inner_edges), xp.float64)
    n = x.shape[0]
    le = xp.astype(xp.searchsorted(x, edges, side="right"), xp.int64)  # items <= each edge
    cum = xp.concat([xp.zeros(1, dtype=xp.int64), le, xp.asarray([n], dtype=xp.int64)])
    return cum[1:] - cum[:-1]


def psi(expected: Any, actual: Any, bins: int = 10, eps: float = 1e-4, xp: Any = None) -> float:
    """Population stability index of ``actual`` against ``expected`` (1-D samples of one feature).

    Bins are the ``bins`` quantile bins of ``expected`` (inner edges from :func:`quantile_edges`,
    right-closed, open-ended at both sides so every value of ``actual`` falls in a bin), so each
    expected bin holds about ``1/bins`` of the reference. Values must be finite (drop NaN first).
    Conventional reading: < 0.1 stable, 0.1-0.2 moderate shift, > 0.2 significant shift.
    """
    xp = get_xp(expected, actual, xp=xp)
    edges = quantile_edges(expected, bins, xp=xp)
    return psi_from_counts(bin_counts(expected, edges, xp=xp), bin_counts(actual, edges, xp=xp), eps, xp=xp)
