"""Skew check on served traffic: the replay log's matrices against the batch side's features for the
same users, listings and times — equal when nothing is skewed, and a real skew is named."""

from __future__ import annotations

import datetime as dt
import time

import numpy as np
import pytest
import redis


@pytest.fixture()
def served_requests(world_env, redis_server, monkeypatch):
    """Requests ranked in-process at a fixed time of the serving day, logged like the API logs them."""
    from gpu_core.device import backend
    from gpu_core.feature_store import OnlineStore
    from gpu_core.registry import Registry
    from gpu_core.settings import get_settings, reset_settings
    from online.api import _store_replay
    from online.candidates import RequestContext
    from online.pipeline import RankingPipeline
    from online.state import ServiceState

    monkeypatch.setenv("JAIKOD_REPLAY_SAMPLE_RATE", "1")
    reset_settings()
    state = ServiceState(get_settings(), backend(), Registry())
    state.startup()
    day = dt.date.fromisoformat(OnlineStore(state.redis).current_version()[:10])  # the snapshot's serving day
    t_ms = int(dt.datetime(day.year, day.month, day.day, 3, tzinfo=dt.UTC).timestamp() * 1000)
    pipe = RankingPipeline(state)
    users = [int(k.decode().rsplit(":", 1)[1]) for k in
             list(state.redis.scan_iter(match=f"jk:s:{state.mirror.version}:u:*", count=1000))[:4]]
    kw = state.indexes.keyword
    words = [w for w in sorted(kw.bm25.vocab_dict) if len(w) > 2 and w.isalpha()  # title words, no condition
             and not kw.plan(w).parsed.condition_only]
    word = max(words, key=lambda w: len(kw.search(w, 2000)[0]))  # the most frequent: near listings match it
    ids = []

    def rank(user, query="", unknown=False):
        ctx = RequestContext(f"skewtest{len(ids):04d}" + "0" * 20, "search" if query else "feed",
                             10**9 + user if unknown else user, None, None, 1, 20, query, t_ms,
                             time.perf_counter() + 10)
        res = pipe.rank(ctx)
        assert res.batch is not None and res.batch.X is not None and len(res.batch.X), ctx.fallbacks
        _store_replay(state, ctx, res.batch)
        ids.append(ctx.request_id)
        return ctx

    for u in users[:3]:
        rank(u)
    rank(users[3], query=word)
    rank(7, unknown=True)  # a cold-start user
    yield state, ids, t_ms, rank
    state.stop()
    world_env.restore(redis_server)


def test_served_features_equal_offline(world_env, served_requests):
    from batch.skew import skew_report

    state, ids, _, _ = served_requests
    report = skew_report(world_env.lake, redis.Redis.from_url(world_env.redis_url))
    assert report.requests == len(ids) and report.rows > 100
    assert report.skewed == {}, report.as_rows()


def test_a_real_skew_is_named(world_env, served_requests):
    """A click the real-time store has but the lake never got (an event that skipped the archive):
    the listing's served views/CTR differ from the offline ones, and the report names exactly those."""
    from batch.skew import skew_report
    from gpu_core.feature_store import OnlineStore
    from gpu_core.replay_log import load

    state, ids, t_ms, rank = served_requests
    r = redis.Redis.from_url(world_env.redis_url)
    first = load(r, ids[0])
    victim = int(first.candidate_ids[first.alive][0])
    cat = int(state.mirror.cols["category"][int(np.searchsorted(state.mirror.ids, victim))])
    OnlineStore(r).apply_event("not-in-the-lake", "click", t_ms - 600_000, 999_999, victim, cat)
    for k in ids:  # only the request served after the event is compared
        r.delete(f"jk:replay:{k}")
    rank(first.user_id)
    report = skew_report(world_env.lake, r)
    assert report.requests == 1
    assert set(report.skewed) == {"views_last_hour", "ctr_last_hour"}, report.as_rows()
    assert report.mismatched_rows["views_last_hour"] == 1 and report.max_abs_diff["views_last_hour"] == 1.0
