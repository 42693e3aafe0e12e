"""Stage 3, hydration: user + product + context features for every remaining candidate.

Product batch features come from the in-memory (on-device) mirror of the live snapshot; the
real-time product features come from Redis in ONE ``MGET`` for all candidates (the user's features
were read in the request's first round trip). A feature store slower than its budget (100 ms; the
Redis socket timeout) -> the ``feature_store_slow`` fallback: candidates are ranked by generic
popularity instead of the model. Listings sold in real time are dropped here.
"""

from __future__ import annotations

import numpy as np

from gpu_core.device import to_host
from gpu_core.feature_store import OnlineStore
from online.candidates import CandidateBatch, RequestContext


class HydrationStage:
    name = "hydration"
    budget_ms = 3.0

    def run(self, ctx: RequestContext, batch: CandidateBatch, state) -> CandidateBatch:
        xp = state.be.xp
        m = state.mirror
        idx = to_host(batch.idx)
        ids = m.ids[idx]
        if "feature_store_slow" in ctx.fallbacks:
            batch.X = None
            return batch
        try:
            blobs = state.redis.mget(m.rt_keys[idx].tolist()) if len(ids) else []
        except Exception:
            ctx.fallback("feature_store_slow")
            batch.X = None
            return batch
        rt = OnlineStore.decode_product_rt(blobs, ctx.now_ms / 1000.0)
        cols = {k: xp.take(v, batch.idx, axis=0) for k, v in m.cols.items()}
        for k, v in rt.items():
            cols[k] = xp.asarray(v)
        boosted = np.isin(ids, state.overrides.boost) if len(state.overrides.boost) else None
        if boosted is not None:
            cols["is_boosted_now"] = xp.maximum(cols["is_boosted_now"], xp.asarray(boosted.astype(np.float32)))
        batch.keep(cols["stock_status"] > 0, "sold", ctx)
        cols.update(ctx.user_columns)
        if ctx.query and state.indexes.keyword is not None:  # the search's own query (as in training rows)
            cols["text_match"] = xp.asarray(state.indexes.keyword.text_match(ctx.query, ids))
        batch.cols = cols
        return batch
