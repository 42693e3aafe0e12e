from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.windows import (
    EMPTY_BUCKET,
    bucket_of,
    ring_init,
    ring_update,
    ring_window_sum,
    smoothed_ctr,
    sort_events,
    window_count_sorted,
)


def _brute(ent, ts, q_ent, q_t, width, n_buckets):
    out = []
    for e, t in zip(q_ent, q_t, strict=True):
        first = np.floor(t / width) - (n_buckets - 1)
        out.append(int(np.sum((ent == e) & (np.floor(ts / width) >= first) & (ts < t))))
    return np.asarray(out)


def test_bucket_of(xp):
    np.testing.assert_array_equal(
        np.asarray(bucket_of(xp.asarray([0.0, 59.9, 60.0, 125.0, -0.5]), 60)), [0, 0, 1, 2, -1]
    )
    assert bucket_of(xp.asarray([1, 2]), 60).dtype == xp.int64


def test_window_definition_by_example(xp):
    # width 60 s, 3 buckets: at t=200 (bucket 3) the window is [60, 200)
    ts = xp.asarray([59.9, 60.0, 130.0, 199.9, 200.0, 250.0])
    ent = xp.asarray([1, 1, 1, 1, 1, 1])
    keys = sort_events(ent, ts)
    got = window_count_sorted(keys, xp.asarray([1, 2]), xp.asarray([200.0, 200.0]), 60, 3)
    np.testing.assert_array_equal(np.asarray(got), [3, 0])


@settings(max_examples=40, deadline=None)
@given(
    events=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 600)), max_size=150),
    queries=st.lists(st.tuples(st.integers(0, 5), st.integers(-50, 700)), min_size=1, max_size=40),
    width=st.sampled_from([1.0, 7.5, 60.0, 100.0]),
    n_buckets=st.integers(1, 8),
    jitter=st.booleans(),
)
def test_window_count_sorted_matches_brute_force(xp, events, queries, width, n_buckets, jitter):
    ent = np.asarray([e for e, _ in events], dtype=np.int64)
    ts = np.asarray([t for _, t in events], dtype=np.float64)  # integers: many exact boundary hits
    if jitter:
        ts = ts + np.random.default_rng(len(events)).random(len(ts)) * 0.999
    q_ent = np.asarray([e for e, _ in queries], dtype=np.int64)
    q_t = np.asarray([t for _, t in queries], dtype=np.float64)
    keys = sort_events(xp.asarray(ent), xp.asarray(ts))
    got = np.asarray(window_count_sorted(keys, xp.asarray(q_ent), xp.asarray(q_t), width, n_buckets))
    np.testing.assert_array_equal(got, _brute(ent, ts, q_ent, q_t, width, n_buckets))


def test_window_count_sorted_large_random(xp):
    rng = np.random.default_rng(0)
    ent = rng.integers(0, 50, size=20_000)
    ts = rng.uniform(0, 86_400, size=20_000)
    q_ent = rng.integers(0, 52, size=300)
    q_t = rng.uniform(0, 90_000, size=300)
    keys = sort_events(xp.asarray(ent), xp.asarray(ts))
    got = np.asarray(window_count_sorted(keys, xp.asarray(q_ent), xp.asarray(q_t), 300.0, 12))
    np.testing.assert_array_equal(got, _brute(ent, ts, q_ent, q_t, 300.0, 12))
    assert got.max() > 0


def test_ring_update_resets_and_drops_late_events(xp):
    ids, counts = ring_init(1, 4, xp=xp)
    ids, counts = ids[0, :], counts[0, :]
    assert int(ids[0]) == EMPTY_BUCKET
    ids, counts = ring_update(ids, counts, 10, 1)  # slot 2
    ids, counts = ring_update(ids, counts, 10, 2)
    ids, counts = ring_update(ids, counts, 11, 1)  # slot 3
    np.testing.assert_array_equal(np.asarray(counts), [0, 0, 3, 1])
    ids, counts = ring_update(ids, counts, 14, 5)  # slot 2 again: bucket 10 is overwritten
    np.testing.assert_array_equal(np.asarray(ids)[2:], [14, 11])
    np.testing.assert_array_equal(np.asarray(counts), [0, 0, 5, 1])
    ids2, counts2 = ring_update(ids, counts, 6, 9)  # slot 2 holds newer bucket 14: too late, dropped
    np.testing.assert_array_equal(np.asarray(counts2), np.asarray(counts))
    np.testing.assert_array_equal(np.asarray(ids2), np.asarray(ids))
    # window at bucket 14 with B=4 covers buckets 11..14
    assert int(ring_window_sum(ids, counts, 14 * 60.0 + 1, 60.0)) == 6
    assert int(ring_window_sum(ids, counts, 15 * 60.0, 60.0)) == 5  # bucket 11 left the window


def test_ring_update_batched_equals_single(xp):
    ids, counts = ring_init(3, 5, xp=xp)
    buckets = xp.asarray([7, 3, 12])
    incs = xp.asarray([1, 2, 3])
    b_ids, b_counts = ring_update(ids, counts, buckets, incs)
    for row in range(3):
        s_ids, s_counts = ring_update(ids[row, :], counts[row, :], buckets[row], incs[row])
        np.testing.assert_array_equal(np.asarray(b_ids)[row], np.asarray(s_ids))
        np.testing.assert_array_equal(np.asarray(b_counts)[row], np.asarray(s_counts))


@pytest.mark.parametrize("seed", range(4))
def test_ring_sum_equals_offline_count_when_all_processed(xp, seed):
    rng = np.random.default_rng(seed)
    width, n_buckets, n_ent = 60.0, 5, 4
    ent = rng.integers(0, n_ent, size=400)
    ts = np.round(rng.uniform(0, 3000, size=400), 1)
    keys = sort_events(xp.asarray(ent), xp.asarray(ts))
    ids, counts = ring_init(n_ent, n_buckets, xp=xp)
    ring = [(ids[e, :], counts[e, :]) for e in range(n_ent)]
    processed = np.zeros(len(ts), dtype=bool)
    for now in np.sort(rng.uniform(0, 3100, size=25)):
        # process, in arbitrary (shuffled) order, every event stamped before `now`
        todo = np.flatnonzero(~processed & (ts < now))
        for i in rng.permutation(todo):
            e = int(ent[i])
            b = bucket_of(xp.asarray(ts[i]), width)
            ring[e] = ring_update(ring[e][0], ring[e][1], b, 1)
        processed[todo] = True
        online = [int(ring_window_sum(ring[e][0], ring[e][1], now, width)) for e in range(n_ent)]
        offline = np.asarray(
            window_count_sorted(
                keys, xp.asarray(np.arange(n_ent)), xp.asarray(np.full(n_ent, now)), width, n_buckets
            )
        )
        np.testing.assert_array_equal(online, offline)


def test_smoothed_ctr(xp):
    got = np.asarray(smoothed_ctr(xp.asarray([0, 1, 500]), xp.asarray([0, 20, 1000])))
    np.testing.assert_allclose(got, [0.05, 2.0 / 40.0, 501.0 / 1020.0])
