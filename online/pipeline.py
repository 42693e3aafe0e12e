"""The ranking pipeline: one declaration of ordered stages and an executor that owns ordering,
timing, deadlines and fail-open fallbacks (X's product-mixer over one columnar batch).

Round trips to Redis per request: one for the user (snapshot pointer, user daily row, user
real-time state, overrides version), one ``MGET`` for the candidates' real-time features.

Named fallbacks (listed in every response's ``fallbacks_used``):
``vector_index_down`` / ``keyword_only`` (keyword search only), ``keyword_index_down``,
``popular_in_region`` (both retrieval paths failed or found nothing), ``cold_start`` (unknown user),
``feature_store_slow`` (hydration over budget -> popularity), ``model_unavailable`` (-> popularity),
``deadline_exceeded`` (-> "Trending Globally" cached in Redis), ``redis_down`` (-> in-process trending).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpu_core.device import to_host
from gpu_core.feature_store import OnlineStore, rt_user_key, snap_key, unpack_rows
from gpu_core.schema import CONTEXT_DAILY, MODEL_FEATURES, USER_DAILY
from online.candidates import CandidateBatch, RequestContext
from online.stages import (
    FilterStage,
    HydrationStage,
    PolishStage,
    RerankStage,
    RetrievalStage,
    ScoringStage,
)
from online.state import Overrides, ServiceState

log = logging.getLogger(__name__)

STAGES = (RetrievalStage(), FilterStage(), HydrationStage(), ScoringStage(), RerankStage(), PolishStage())


class DeadlineExceeded(Exception):
    pass


@dataclass
class RankedResponse:
    ctx: RequestContext
    items: list[dict[str, Any]]
    batch: CandidateBatch | None

    def body(self) -> dict[str, Any]:
        c = self.ctx
        out = {"request_id": c.request_id, "model_version": c.model_version, "items": self.items,
               "fallbacks_used": c.fallbacks, "timings_ms": {k: round(v, 3) for k, v in c.timings_ms.items()},
               "snapshot_version": c.snapshot_version}
        return out


class RankingPipeline:
    def __init__(self, state: ServiceState, stages=STAGES):
        self.state = state
        self.stages = stages

    # ---- the user step (round trip 1) -------------------------------------------------------------
    def load_user(self, ctx: RequestContext) -> None:
        st = self.state
        r = st.redis
        mirror = st.mirror
        version = mirror.version if mirror is not None else None
        pipe = r.pipeline(transaction=False)
        pipe.get("jk:snapshot:current")
        pipe.get(Overrides.VERSION)
        pipe.get(snap_key(version, "u", ctx.user_id) if version else "jk:none")
        pipe.get(rt_user_key(ctx.user_id))
        pipe.get(f"jk:rt:u:{ctx.user_id}:q")
        pointer, ov_version, user_blob, rt_blob, query = pipe.execute()
        pointer = pointer.decode() if pointer else None
        if pointer != version:
            mirror = st.ensure_snapshot(pointer)
            user_blob = r.get(snap_key(mirror.version, "u", ctx.user_id))
        elif mirror is None:
            mirror = st.ensure_snapshot(None)
        ctx.snapshot_version = mirror.version
        st.overrides.sync(r, int(ov_version or 0))
        rows, found = unpack_rows([user_blob], USER_DAILY)
        user = {k: v[0] for k, v in USER_DAILY.unpack(rows).items()}
        ctx.user_known = bool(found[0])
        user.update(OnlineStore.decode_user_rt(rt_blob, query, ctx.now_ms / 1000.0))
        ctx.user = user
        home = tuple(float(x) for x in user["home_latlong"])
        if ctx.lat is not None and ctx.lon is not None:
            ctx.geo = (ctx.lat, ctx.lon)
        elif ctx.user_known:
            ctx.geo = home
        ctx.max_distance_km = float(user["max_distance_km"]) if ctx.user_known else st.settings.max_distance_km
        self.user_columns(ctx)

    def degraded_user(self, ctx: RequestContext) -> None:
        """The feature store is over budget: no user features, no more Redis calls in this request."""
        ctx.fallback("feature_store_slow")
        ctx.snapshot_version = self.state.mirror.version
        rows, _ = unpack_rows([None], USER_DAILY)
        ctx.user = {k: v[0] for k, v in USER_DAILY.unpack(rows).items()}
        ctx.user.update(OnlineStore.decode_user_rt(None, None, ctx.now_ms / 1000.0))
        ctx.user_known = False
        ctx.geo = (ctx.lat, ctx.lon) if ctx.lat is not None and ctx.lon is not None else None
        ctx.max_distance_km = self.state.settings.max_distance_km
        self.user_columns(ctx)

    def user_columns(self, ctx: RequestContext) -> None:
        """The per-request (broadcast) columns: user daily + real-time, context."""
        u = ctx.user
        st = self.state
        ctx_row = st.context_row
        cd = CONTEXT_DAILY.unpack(ctx_row.reshape(1, -1)) if ctx_row is not None else {}
        hour = ((ctx.now_ms // 1000 + 7 * 3600) % 86400) / 3600.0
        geo = ctx.geo if ctx.geo is not None else (float(u["home_latlong"][0]), float(u["home_latlong"][1]))
        ctx.user_columns = {
            "age_group": np.float32(u["age_group"]), "gender": np.float32(u["gender"]),
            "lifetime_spend": np.float32(u["lifetime_spend"]),
            "top_categories_30d": np.asarray(u["top_categories_30d"], dtype=np.int32),
            "user_embedding": np.asarray(u["user_embedding"], dtype=np.float32),
            "last_viewed_category": np.int32(u["last_viewed_category"]),
            "session_clicks_last_5m": np.float32(u["session_clicks_last_5m"]),
            "user_geo_latlong": np.asarray(geo, dtype=np.float32),
            "device_type": np.float32(ctx.device_type if ctx.device_type >= 0 else -1),
            "time_of_day": np.float32(hour),
            "holiday_calendar": np.float32(cd["holiday_calendar"][0]) if cd else np.float32(0),
            "avg_category_price_history": cd["avg_category_price_history"][0] if cd else np.zeros(12, np.float32),
        }
        xp = st.be.xp
        if xp is not np:
            ctx.user_columns = {k: xp.asarray(v) for k, v in ctx.user_columns.items()}

    # ---- the executor ------------------------------------------------------------------------------
    def rank(self, ctx: RequestContext) -> RankedResponse:
        t_start = time.perf_counter()
        try:
            t0 = time.perf_counter()
            try:
                self.load_user(ctx)
            except Exception as exc:
                if not _is_timeout(exc) or self.state.mirror is None:
                    raise
                self.degraded_user(ctx)
            ctx.timings_ms["user"] = (time.perf_counter() - t0) * 1000
            batch = None
            for stage in self.stages:
                if time.perf_counter() > ctx.deadline_s:
                    raise DeadlineExceeded(stage.name)
                t0 = time.perf_counter()
                batch = stage.run(ctx, batch, self.state)
                ctx.timings_ms[stage.name] = (time.perf_counter() - t0) * 1000
            if time.perf_counter() > ctx.deadline_s:
                raise DeadlineExceeded("end")
            items = self.items(ctx, batch)
        except DeadlineExceeded:
            ctx.fallback("deadline_exceeded")
            batch, items = None, self.trending_items(ctx)
        except Exception as exc:
            if _is_redis_error(exc):
                ctx.fallback("redis_down")
                batch, items = None, self.local_trending_items(ctx)
            else:
                raise
        ctx.timings_ms["total"] = (time.perf_counter() - t_start) * 1000
        return RankedResponse(ctx, items, batch)

    def items(self, ctx: RequestContext, batch: CandidateBatch) -> list[dict[str, Any]]:
        m = self.state.mirror
        score = to_host(batch.score)
        out = []
        for i, (pid, sp, pos) in enumerate(zip(batch.final_ids, batch.sponsored, batch.final_pos, strict=True)):
            j = int(np.searchsorted(m.ids, pid))
            out.append({"product_id": int(pid), "seller_id": int(m.seller[j]), "position": i + 1,
                        "score": float(score[pos]) if pos >= 0 else 0.0, "sponsored": bool(sp)})
        return out

    def _list_items(self, ctx: RequestContext, ids: np.ndarray) -> list[dict[str, Any]]:
        m = self.state.mirror
        out = []
        for i, pid in enumerate(ids[: ctx.limit]):
            seller = -1
            if m is not None:
                j = int(np.searchsorted(m.ids, pid))
                if j < len(m.ids) and m.ids[j] == pid:
                    seller = int(m.seller[j])
            out.append({"product_id": int(pid), "seller_id": seller, "position": i + 1, "score": 0.0,
                        "sponsored": False})
        return out

    def trending_items(self, ctx: RequestContext) -> list[dict[str, Any]]:
        try:
            ids = self.state.store.trending()
        except Exception:
            ctx.fallback("redis_down")
            return self.local_trending_items(ctx)
        if not len(ids):
            return self.local_trending_items(ctx)
        return self._list_items(ctx, ids)

    def local_trending_items(self, ctx: RequestContext) -> list[dict[str, Any]]:
        m = self.state.mirror
        ids = m.trending if m is not None else np.empty(0, np.int64)
        return self._list_items(ctx, ids)

    @staticmethod
    def feature_names() -> tuple[str, ...]:
        return MODEL_FEATURES


def _is_timeout(exc: BaseException) -> bool:
    import redis

    return isinstance(exc, redis.TimeoutError | TimeoutError)


def _is_redis_error(exc: BaseException) -> bool:
    import redis

    return isinstance(exc, redis.RedisError | ConnectionError | TimeoutError)
