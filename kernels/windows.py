"""Windowed event counters shared by the offline ETL (point-in-time) and the online stream processor.

The window. With bucket width ``w`` seconds and ``B`` buckets, ``bucket_of(ts) = floor(ts / w)`` and
the window at time ``t`` (epoch seconds, float) holds the events with

    bucket_of(ts) >= bucket_of(t) - (B - 1)   and   ts < t,

i.e. ``[bucket_start(t) - (B-1)*w, t)`` with ``bucket_start(t) = floor(t/w)*w`` (stated with bucket
ids so that the offline and online forms agree bit for bit even where ``ts/w`` rounds). It covers
the current, partial bucket plus ``B-1`` whole ones (``w=300, B=12``: between 55 and 60 minutes).

Offline (:func:`window_count_sorted`): events sorted by (entity, ts); every query row gets its
count with searchsorted over entities plus a vectorised bisection over timestamps: exact
point-in-time counts for millions of rows, nothing at or after ``t`` leaks in.

Online (:func:`ring_update`, :func:`ring_window_sum`): per entity a ring of ``B`` (bucket id, count)
slots. The ring sum at ``now`` counts every *processed* event whose bucket lies in the window. The
only difference from the offline count: an event with ``ts < now`` that the stream processor has not
processed yet is missing online (and an event stamped in the current bucket but at/after ``now``
would be counted online if it had been processed early). When every event with ``ts < now`` -- and
none later -- has been applied, the two are equal (tested).

    >>> keys = sort_events(entity, ts)
    >>> n_views_1h = window_count_sorted(keys, row_entity, row_ts, width=300, n_buckets=12)
"""

from __future__ import annotations

import math
from typing import Any

from kernels._xp import get_xp

EMPTY_BUCKET = -(2**62)  # bucket id of a never-written ring slot (never inside any window)


def bucket_of(ts: Any, width: float, xp: Any = None) -> Any:
    """Bucket id ``floor(ts / width)`` as int64."""
    xp = get_xp(ts, xp=xp)
    ts = xp.asarray(ts)
    if not xp.isdtype(ts.dtype, "real floating"):
        ts = xp.astype(ts, xp.float64)
    return xp.astype(xp.floor(ts / width), xp.int64)


def sort_events(entity: Any, ts: Any, xp: Any = None) -> tuple[Any, Any]:
    """``(entity_sorted, ts_sorted)``: events ordered by (entity, ts) (two stable argsorts)."""
    xp = get_xp(entity, ts, xp=xp)
    entity = xp.reshape(xp.asarray(entity), (-1,))
    ts = xp.reshape(xp.asarray(ts), (-1,))
    o = xp.argsort(ts, stable=True)
    o = xp.take(o, xp.argsort(xp.take(entity, o), stable=True))
    return xp.take(entity, o), xp.take(ts, o)


def _bisect(pred_true_below: Any, lo: Any, hi: Any, n_steps: int, xp: Any) -> Any:
    """Vectorised lower-bound bisection: first index in ``[lo, hi)`` where the predicate is False.

    ``pred_true_below(idx)`` must be monotone (True then False) inside every ``[lo, hi)`` range.
    """
    for _ in range(n_steps):
        active = lo < hi
        mid = (lo + hi) // 2
        ok = xp.logical_and(active, pred_true_below(xp.clip(mid, 0, None)))
        lo = xp.where(ok, mid + 1, lo)
        hi = xp.where(xp.logical_and(active, xp.logical_not(ok)), mid, hi)
    return lo


def window_count_sorted(
    sorted_keys: tuple[Any, Any], entity: Any, t: Any, width: float, n_buckets: int, xp: Any = None
) -> Any:
    """Events of the same entity inside the window at ``t`` (see module doc), one count per query.

    ``sorted_keys = (event_entity, event_ts)`` sorted by (entity, ts), e.g. from :func:`sort_events`.
    ``entity`` and ``t`` are the query rows (broadcast together). Returns int64 counts.
    O((N + Q) log N): ``searchsorted`` finds each entity's slice, then a bisection of at most
    ``ceil(log2(longest slice + 1))`` vectorised steps finds the window's two ends inside it.
    """
    ev_entity, ev_ts = sorted_keys
    xp = get_xp(ev_entity, ev_ts, entity, t, xp=xp)
    ev_entity = xp.reshape(xp.asarray(ev_entity), (-1,))
    ev_ts = xp.astype(xp.reshape(xp.asarray(ev_ts), (-1,)), xp.float64)
    entity = xp.asarray(entity)
    t = xp.astype(xp.asarray(t), xp.float64)
    entity, t = xp.broadcast_arrays(xp.astype(entity, ev_entity.dtype), t)
    shape = entity.shape
    q_ent = xp.reshape(entity, (-1,))
    q_t = xp.reshape(t, (-1,))
    n_ev = ev_entity.shape[0]
    if n_ev == 0 or q_ent.shape[0] == 0:
        return xp.zeros(shape, dtype=xp.int64)

    lo = xp.astype(xp.searchsorted(ev_entity, q_ent, side="left"), xp.int64)
    hi = xp.astype(xp.searchsorted(ev_entity, q_ent, side="right"), xp.int64)
    longest = int(xp.max(hi - lo))
    if longest == 0:
        return xp.zeros(shape, dtype=xp.int64)
    steps = int(math.ceil(math.log2(longest + 1))) + 1
    first_bucket = bucket_of(q_t, width, xp=xp) - (n_buckets - 1)
    ev_bucket = bucket_of(ev_ts, width, xp=xp)
    last = n_ev - 1
    # start: first event with bucket >= first_bucket; end: first event with ts >= t
    start = _bisect(lambda i: xp.take(ev_bucket, xp.clip(i, 0, last)) < first_bucket, lo, hi, steps, xp)
    end = _bisect(lambda i: xp.take(ev_ts, xp.clip(i, 0, last)) < q_t, lo, hi, steps, xp)
    return xp.reshape(xp.clip(end - start, 0, None), shape)


def ring_init(n_entities: int, n_buckets: int, count_dtype: Any = None, xp: Any = None) -> tuple[Any, Any]:
    """Empty rings: ``(bucket_ids [n, B] int64 = EMPTY_BUCKET, counts [n, B] zeros)``."""
    xp = get_xp(xp=xp)
    dtype = xp.int64 if count_dtype is None else count_dtype
    ids = xp.full((n_entities, n_buckets), EMPTY_BUCKET, dtype=xp.int64)
    return ids, xp.zeros((n_entities, n_buckets), dtype=dtype)


def ring_update(bucket_ids: Any, counts: Any, bucket: Any, inc: Any = 1, xp: Any = None) -> tuple[Any, Any]:
    """Add ``inc`` to the ring slot of ``bucket`` and return new ``(bucket_ids, counts)`` (pure).

    Slot = ``bucket % B``. A slot holding an older bucket id is reset before adding; a slot holding a
    *newer* bucket id means the event is at least ``B`` buckets late, outside every future window, so
    it is dropped (rings unchanged). Works for one entity (``[B]`` rings, scalar bucket) or a batch
    of distinct entities (``[n, B]`` rings, ``bucket``/``inc`` of shape ``[n]``); several events of
    one entity in a batch must be aggregated per (entity, bucket) first.
    """
    xp = get_xp(bucket_ids, counts, bucket, inc, xp=xp)
    bucket_ids = xp.asarray(bucket_ids)
    counts = xp.asarray(counts)
    n_b = bucket_ids.shape[-1]
    bucket = xp.astype(xp.asarray(bucket), xp.int64)[..., None]
    inc = xp.astype(xp.asarray(inc), counts.dtype)[..., None]
    slot = bucket % n_b
    at_slot = xp.arange(n_b, dtype=xp.int64) == slot
    stored = bucket_ids
    late = xp.any(xp.logical_and(at_slot, stored > bucket), axis=-1, keepdims=True)
    hit = xp.logical_and(at_slot, xp.logical_not(late))
    reset = xp.logical_and(hit, stored != bucket)
    new_counts = xp.where(reset, xp.zeros_like(counts), counts)
    new_counts = xp.where(hit, new_counts + inc, new_counts)
    new_ids = xp.where(hit, xp.broadcast_to(bucket, stored.shape), stored)
    return new_ids, new_counts


def ring_window_sum(bucket_ids: Any, counts: Any, now: Any, width: float, xp: Any = None) -> Any:
    """Sum of ring counts whose bucket id lies in ``[bucket_of(now) - (B-1), bucket_of(now)]``.

    ``bucket_ids``/``counts``: ``[..., B]``; ``now``: scalar or broadcastable to ``[...]``.
    """
    xp = get_xp(bucket_ids, counts, now, xp=xp)
    bucket_ids = xp.asarray(bucket_ids)
    counts = xp.asarray(counts)
    n_b = bucket_ids.shape[-1]
    cur = bucket_of(now, width, xp=xp)[..., None]
    inside = xp.logical_and(bucket_ids >= cur - (n_b - 1), bucket_ids <= cur)
    return xp.sum(xp.where(inside, counts, xp.zeros_like(counts)), axis=-1)


def smoothed_ctr(
    clicks: Any, impressions: Any, prior: float = 0.05, strength: float = 20.0, xp: Any = None
) -> Any:
    """Bayesian-smoothed CTR ``(clicks + prior*strength) / (impressions + strength)`` (float64).

    Equals ``prior`` with no impressions and tends to ``clicks/impressions`` as impressions grow.
    """
    xp = get_xp(clicks, impressions, xp=xp)
    c = xp.astype(xp.asarray(clicks), xp.float64)
    i = xp.astype(xp.asarray(impressions), xp.float64)
    return (c + prior * strength) / (i + strength)
