"""Stage 0, the user: round trip 1 to the feature store (snapshot pointer, overrides version, the user's
daily row and real-time state) and the per-request feature columns (user + context) every candidate
shares. The snapshot pointer moving makes the service follow it (product mirror, indexes). A feature
store slower than its budget -> ``feature_store_slow``: schema defaults for the user, and no more
feature-store calls in this request (``ctx.feature_store_ok`` is False)."""

from __future__ import annotations

import numpy as np
import redis

from engines.realtime import user_realtime
from gpu_core.calendar import time_of_day
from gpu_core.feature_store import snap_key, unpack_rows
from gpu_core.schema import CONTEXT_DAILY, USER_DAILY
from online.candidates import Fallback, RequestContext, UserState


class UserStage:
    name = "user"
    budget_ms = 2.0

    def run(self, ctx: RequestContext, batch, state):
        health = state.redis_health
        timeout_s = state.settings.feature_store_timeout_ms / 1000.0
        # skip Redis while its breaker is open, or when a timeout would outlast the request's budget
        skip = not health.available() or (state.mirror is not None and ctx.remaining_s() < timeout_s)
        try:
            if skip:
                raise health.error() if health.kind == "down" else redis.TimeoutError("over budget")
            self.load(ctx, state)
            health.ok()
        except (redis.TimeoutError, TimeoutError) as exc:
            if not skip:
                health.failed(exc)
            if state.mirror is None:
                raise
            self.degraded(ctx, state)
        except (redis.RedisError, ConnectionError, OSError) as exc:
            if not skip:
                health.failed(exc)
            raise
        return batch

    def load(self, ctx: RequestContext, state) -> None:
        mirror = state.mirror
        version = mirror.version if mirror is not None else None
        step = state.store.parse_user_step(state.store.user_step(ctx.user_id, version).execute())
        pointer, user_blob = step["pointer"], step["user_row"]
        if pointer != version or mirror is None:
            mirror = state.ensure_snapshot(pointer)
            user_blob = state.redis.get(snap_key(mirror.version, "u", ctx.user_id))
        ctx.snapshot_version = mirror.version
        state.overrides.sync(state.redis, step["overrides_version"])
        state.request_live_sync(step["live_version"])  # intake listings that went live: from a next request
        rows, found = unpack_rows([user_blob], USER_DAILY)
        features = {k: v[0] for k, v in USER_DAILY.unpack(rows).items()}
        known = bool(found[0])
        features.update(user_realtime(step["user_rt"], step["query"], ctx.now_ms / 1000.0))
        if ctx.lat is not None and ctx.lon is not None:
            geo = (ctx.lat, ctx.lon)
        elif known:
            geo = tuple(float(x) for x in features["home_latlong"])
        else:
            geo = None
        max_km = float(features["max_distance_km"]) if known else state.settings.max_distance_km
        ctx.user = UserState(features, known, geo, max_km, self.columns(ctx, state, features, geo))

    def degraded(self, ctx: RequestContext, state) -> None:
        """The feature store is over budget: schema defaults for the user, no more feature-store calls."""
        ctx.fallback(Fallback.FEATURE_STORE_SLOW)
        ctx.feature_store_ok = False
        ctx.snapshot_version = state.mirror.version
        rows, _ = unpack_rows([None], USER_DAILY)
        features = {k: v[0] for k, v in USER_DAILY.unpack(rows).items()}
        features.update(user_realtime(None, "", ctx.now_ms / 1000.0))
        geo = (ctx.lat, ctx.lon) if ctx.lat is not None and ctx.lon is not None else None
        ctx.user = UserState(features, False, geo, state.settings.max_distance_km,
                             self.columns(ctx, state, features, geo))

    @staticmethod
    def columns(ctx: RequestContext, state, u: dict, geo) -> dict:
        """The per-request (broadcast) assembly inputs: user daily + real-time, context."""
        ctx_row = state.context_row
        cd = CONTEXT_DAILY.unpack(ctx_row.reshape(1, -1)) if ctx_row is not None else {}
        if geo is None:
            geo = (float(u["home_latlong"][0]), float(u["home_latlong"][1]))
        cols = {
            "age_group": np.float32(u["age_group"]), "gender": np.float32(u["gender"]),
            "lifetime_spend": np.float32(u["lifetime_spend"]),
            "top_categories_30d": np.asarray(u["top_categories_30d"], dtype=np.int32),
            "user_embedding": np.asarray(u["user_embedding"], dtype=np.float32),
            "last_viewed_category": np.int32(u["last_viewed_category"]),
            "session_clicks_last_5m": np.float32(u["session_clicks_last_5m"]),
            "user_geo_latlong": np.asarray(geo, dtype=np.float32),
            "device_type": np.float32(ctx.device_type if ctx.device_type >= 0 else -1),
            "time_of_day": np.float32(time_of_day(ctx.now_ms)),
            "holiday_calendar": np.float32(cd["holiday_calendar"][0]) if cd else np.float32(0),
            "avg_category_price_history": cd["avg_category_price_history"][0] if cd else np.zeros(12, np.float32),
        }
        xp = state.be.xp
        return cols if xp is np else {k: xp.asarray(v) for k, v in cols.items()}

