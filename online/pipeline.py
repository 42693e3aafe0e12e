"""The ranking pipeline: one declaration of ordered stages and an executor that owns ordering,
timing, the request deadline, the per-stage budgets and fail-open fallbacks (X's product-mixer over
one columnar batch).

Round trips to Redis per request: one for the user stage (snapshot pointer, user daily row, user
real-time state, overrides version), one ``MGET`` for the candidates' real-time features.

Every stage has a latency budget (``budget_ms``): a stage that spends more is named with its time in
the response's ``budget_overruns_ms`` (and counted in the metrics); the request's own deadline
(``request_budget_ms``) is checked between stages and ends the request with ``deadline_exceeded``.
The named fallbacks are the closed set :class:`~online.candidates.Fallback`.

Replay runs the same stage objects over a recorded batch (:meth:`RankingPipeline.run` with
``start="scoring"``), so a replayed ranking cannot come from a second copy of the serving logic.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis

from gpu_core.device import to_host
from online.candidates import CandidateBatch, Fallback, RequestContext, Source
from online.stages import (
    BoostedStage,
    FilterStage,
    HydrationStage,
    PolishStage,
    RerankStage,
    RetrievalStage,
    ScoringStage,
    Stage,
    StockFilterStage,
    UserStage,
)
from online.state import ServiceState

log = logging.getLogger(__name__)

STAGES: tuple[Stage, ...] = (UserStage(), RetrievalStage(), BoostedStage(), FilterStage(), HydrationStage(), StockFilterStage(),
                             ScoringStage(), RerankStage(), PolishStage())
SOURCE_NAMES = {int(s): s.name.lower() for s in Source}


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
               "budget_overruns_ms": {k: round(v, 3) for k, v in c.overruns_ms.items()},
               "snapshot_version": c.snapshot_version}
        if c.query_plan is not None:
            out["query_understanding"] = c.query_plan.body()
        if c.widened_radius_km is not None:
            out["widened_radius_km"] = round(c.widened_radius_km, 1)
        if c.explain:
            out["removed"] = c.removed
        return out


class RankingPipeline:
    def __init__(self, state: ServiceState, stages: tuple[Stage, ...] = STAGES):
        self.state = state
        self.stages = stages

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def run(self, ctx: RequestContext, batch: CandidateBatch | None = None, *, start: str | None = None,
            stop: str | None = None) -> CandidateBatch | None:
        """Run the stages (from ``start`` through ``stop``, default all) over ``batch``."""
        names = [s.name for s in self.stages]
        lo = names.index(start) if start else 0
        hi = names.index(stop) + 1 if stop else len(names)
        for stage in self.stages[lo:hi]:
            if time.perf_counter() > ctx.deadline_s:
                raise DeadlineExceeded(stage.name)
            ctx.stage = stage.name
            t0 = time.perf_counter()
            batch = stage.run(ctx, batch, self.state)
            ms = (time.perf_counter() - t0) * 1000
            ctx.timings_ms[stage.name] = ms
            if ms > stage.budget_ms:
                ctx.overruns_ms[stage.name] = ms
        ctx.stage = ""
        return batch

    def rank(self, ctx: RequestContext) -> RankedResponse:
        t_start = time.perf_counter()
        batch: CandidateBatch | None
        try:
            batch = self.run(ctx)
            if time.perf_counter() > ctx.deadline_s:
                raise DeadlineExceeded("end")
            items = self.items(ctx, batch)
        except DeadlineExceeded:
            ctx.fallback(Fallback.DEADLINE_EXCEEDED)
            batch, items = None, self.trending_items(ctx)
        except (redis.TimeoutError, TimeoutError):  # slow, not down (no snapshot to rank without Redis)
            ctx.fallback(Fallback.FEATURE_STORE_SLOW)
            batch, items = None, self.local_trending_items(ctx)
        except (redis.RedisError, ConnectionError, OSError):
            ctx.fallback(Fallback.REDIS_DOWN)
            batch, items = None, self.local_trending_items(ctx)
        ctx.timings_ms["total"] = (time.perf_counter() - t_start) * 1000
        return RankedResponse(ctx, items, batch)

    def warm_up(self) -> bool:
        """One search and one feed through every stage before the service says it is ready, so the first
        real request does not pay for dictionaries, tries, xgboost's first predict or numpy's first calls.
        True when both ran without a fallback-worthy error."""
        ok = True
        for kind, query in (("search", "ไอโฟน มือสอง"), ("search", "iphnoe"), ("feed", "")):
            ctx = RequestContext(request_id="warmup" + "0" * 26, kind=kind, user_id=0, lat=13.75, lon=100.5,
                                 device_type=0, limit=20, query=query, now_ms=int(time.time() * 1000),
                                 deadline_s=time.perf_counter() + 30.0)
            try:
                self.items(ctx, self.run(ctx))
            except Exception as exc:  # a cold service still serves; /readyz tells
                log.warning("warm-up %s failed: %s", kind, exc)
                ok = False
        self.state.warm = ok
        return ok

    def items(self, ctx: RequestContext, batch: CandidateBatch) -> list[dict[str, Any]]:
        m = self.state.mirror
        score = to_host(batch.score)
        source = to_host(batch.source) if ctx.explain else None
        sellers = m.seller[to_host(batch.idx)[batch.final_pos]] if len(batch.final_pos) else []
        out = []
        for i, (pid, sp, pos, seller) in enumerate(zip(batch.final_ids, batch.sponsored, batch.final_pos, sellers,
                                                       strict=True)):
            item = {"product_id": int(pid), "seller_id": int(seller), "position": i + 1,
                    "score": float(score[pos]), "sponsored": bool(sp)}
            if source is not None:
                item["retrieved_by"] = SOURCE_NAMES[int(source[pos])]
            out.append(item)
        self._decorate(ctx, out)
        return out

    def _decorate(self, ctx: RequestContext, items: list[dict[str, Any]]) -> None:
        """Title, price, category, image URL and distance of each item from the live catalogue."""
        cat = self.state.catalogue
        if cat is not None:
            cat.decorate(items, ctx.user.geo if ctx.user is not None else None)

    def _list_items(self, ctx: RequestContext, ids: np.ndarray) -> list[dict[str, Any]]:
        m = self.state.mirror
        out = []
        for i, pid in enumerate(ids[: ctx.limit]):
            seller = -1
            if m is not None:
                j = int(m.index_of(np.asarray([pid], dtype=np.int64))[0])
                if j >= 0:
                    seller = int(m.seller[j])
            out.append({"product_id": int(pid), "seller_id": seller, "position": i + 1, "score": 0.0,
                        "sponsored": False})
        self._decorate(ctx, out)
        return out

    def trending_items(self, ctx: RequestContext) -> list[dict[str, Any]]:
        health = self.state.redis_health
        if not ctx.feature_store_ok or not health.available():  # never a second Redis wait in one request
            return self.local_trending_items(ctx)
        try:
            ids = self.state.store.trending()
            health.ok()
        except redis.RedisError as exc:
            slow = health.failed(exc) == "slow"
            ctx.fallback(Fallback.FEATURE_STORE_SLOW if slow else Fallback.REDIS_DOWN)
            return self.local_trending_items(ctx)
        if not len(ids):
            return self.local_trending_items(ctx)
        return self._list_items(ctx, ids)

    def local_trending_items(self, ctx: RequestContext) -> list[dict[str, Any]]:
        m = self.state.mirror
        ids = m.trending if m is not None else np.empty(0, np.int64)
        return self._list_items(ctx, ids)
