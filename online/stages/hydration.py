"""Stage 3, hydration: the per-candidate feature columns for every remaining candidate.

Product batch features come from the in-memory (on-device) mirror of the live snapshot; the
real-time product features come from Redis in ONE ``MGET`` for all candidates (the user's features
were read by the user stage). Sources merged here: the admin force-boost override sets
``is_boosted_now``; a search's own query gives the text-relevance columns (``TEXT_FEATURES``) from
:meth:`engines.search.index.SearchIndex.relevance` — the function the ETL calls for training rows —
over the query plan retrieval understood (or the same plan built here when retrieval did not run). A feature store slower than its budget
(100 ms; the Redis socket timeout) -> ``feature_store_slow``: no columns, and the scorer ranks by
generic popularity. Sold listings are left to the stock filter that follows.
"""

from __future__ import annotations

import numpy as np
import redis

from engines.realtime import product_realtime
from gpu_core.device import to_host
from gpu_core.feature_store import P_SLOTS, decode_bitfields
from online.candidates import CandidateBatch, Fallback, RequestContext


class HydrationStage:
    name = "hydration"
    budget_ms = 3.0

    def run(self, ctx: RequestContext, batch: CandidateBatch, state) -> CandidateBatch:
        if not ctx.feature_store_ok:
            return batch
        xp = state.be.xp
        m = state.mirror
        idx = to_host(batch.idx)
        # a call that could outlast the request's remaining budget is not made (one timeout per request at most)
        health, called = state.redis_health, False
        try:
            if ctx.remaining_s() < state.settings.feature_store_timeout_ms / 1000.0 or not health.available():
                raise redis.TimeoutError("feature store skipped (over budget or breaker open)")
            called = True
            blobs = state.redis.mget(m.rt_keys[idx].tolist()) if len(idx) else []
            health.ok()
        except redis.RedisError as exc:
            if called:
                health.failed(exc)
            ctx.fallback(Fallback.FEATURE_STORE_SLOW)
            ctx.feature_store_ok = False
            return batch
        rt = product_realtime(decode_bitfields(blobs, P_SLOTS), ctx.now_ms / 1000.0)
        cols = {k: xp.take(v, batch.idx, axis=0) for k, v in m.cols.items()}
        for k, v in rt.items():
            cols[k] = xp.asarray(v)
        boost = state.overrides.boost
        if len(boost):
            forced = np.isin(m.ids[idx], boost).astype(np.float32)
            cols["is_boosted_now"] = xp.maximum(cols["is_boosted_now"], xp.asarray(forced))
        index = state.indexes.keyword
        if ctx.query and index is not None:  # the search's own query (as in training rows)
            plan = ctx.query_plan if ctx.query_plan is not None else index.plan_recorded(ctx.query)
            for k, v in index.relevance(plan, m.ids[idx]).items():
                cols[k] = xp.asarray(v)
        batch.cols = cols
        return batch
