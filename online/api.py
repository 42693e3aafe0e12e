"""HTTP routes of the ranking service (``/v1``) and its operational endpoints."""

from __future__ import annotations

import logging
import secrets
import time
from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import APIRouter, BackgroundTasks, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gpu_core.clock import new_request_id, now_ms
from gpu_core.device import to_host
from gpu_core.errors import ConfigError, JaikodError
from gpu_core.schema import CATEGORIES, DEVICE_TYPES, MODEL_FEATURES
from kernels.trust import seller_trust
from online import replay
from online.candidates import RequestContext
from online.errors import error_body
from online.schemas import FeedRequest, OverrideRequest, RankResponse, SearchRequest
from online.stages.scoring import explain
from online.state import Overrides

log = logging.getLogger("jaikod.online")
router = APIRouter()


class AdminAuthError(JaikodError):
    http_status = 403


def _ctx(req: FeedRequest, kind: str, query: str, explain_: bool, state) -> RequestContext:
    s = state.settings
    return RequestContext(
        request_id=new_request_id(), kind=kind, user_id=req.user_id, lat=req.lat, lon=req.lon,
        device_type=DEVICE_TYPES.index(req.device_type) if req.device_type else -1, limit=req.limit, query=query,
        now_ms=now_ms(), deadline_s=time.perf_counter() + s.request_budget_ms / 1000.0, explain=explain_)


def _rank(request: Request, req: FeedRequest, kind: str, query: str, explain_: bool,
          background: BackgroundTasks) -> JSONResponse:
    app = request.app
    state = app.state.jaikod
    ctx = _ctx(req, kind, query, explain_, state)
    # the canary serves a sticky share of /v1/feed users with the staging model
    ctx.arm = app.state.arm_for(ctx.user_id) if kind == "feed" and hasattr(app.state, "arm_for") else "production"
    result = app.state.pipeline.rank(ctx)
    body = result.body()
    batch = result.batch
    if explain_ and batch is not None and batch.X is not None:
        model = state.models.get(ctx.arm) or state.models.get("production")
        organic = [(i, int(pos)) for i, (pos, sp) in enumerate(zip(batch.final_pos, batch.sponsored, strict=True))
                   if pos >= 0 and not sp][:10]  # sponsored items sit in their slots by rule, not by score
        rows = to_host(batch.X)[[pos for _, pos in organic]]
        ex = explain(model, rows, MODEL_FEATURES)
        body["explanations"] = [{"product_id": int(batch.final_ids[i]), "position": i + 1, **{
            k: v for k, v in e.items() if k != "all_contributions"}} for (i, _), e in zip(organic, ex, strict=True)]
        background.add_task(_log_explanations, ctx.request_id, ctx.model_version, body["explanations"])
    app.state.metrics.observe(kind, body, ctx.removed)
    if batch is not None and batch.X is not None and _sampled(state.settings.replay_sample_rate, ctx.request_id):
        ids = state.mirror.ids[to_host(batch.idx)]
        background.add_task(_store_replay, state, ctx, batch, ids)
    if state.settings.log_requests:
        log.info(orjson.dumps({"event": "ranked", "request_id": ctx.request_id, "kind": kind,
                               "model_version": ctx.model_version, "fallbacks": ctx.fallbacks,
                               "total_ms": round(ctx.timings_ms.get("total", 0.0), 3)}).decode())
    return Response(orjson.dumps(body), media_type="application/json")


def _sampled(rate: float, request_id: str) -> bool:
    return rate >= 1.0 or (rate > 0 and int(request_id[:8], 16) / 0xFFFFFFFF < rate)


def _store_replay(state, ctx, batch, ids) -> None:
    try:
        key = replay.KEY.format(ctx.request_id)
        state.redis.pipeline(transaction=False).hset(key, mapping=replay.record(ctx, batch, ids, state.settings.digest())) \
            .expire(key, state.settings.replay_ttl_s).execute()
    except Exception as exc:  # the log never breaks serving
        log.warning("replay log write failed: %s", exc)


def _log_explanations(request_id: str, model_version: str, explanations: list[dict]) -> None:
    log.info(orjson.dumps({"event": "explanations", "request_id": request_id, "model_version": model_version,
                           "explanations": explanations}).decode())


@router.post("/v1/feed", response_model=RankResponse, tags=["ranking"])
def feed(request: Request, req: FeedRequest, background: BackgroundTasks,
         explain_: Annotated[bool, Query(alias="explain")] = False):
    """"For You" feed: the six stages over up to 1,000 candidates, top ``limit``."""
    return _rank(request, req, "feed", "", explain_, background)


@router.post("/v1/search", response_model=RankResponse, tags=["ranking"])
def search(request: Request, req: SearchRequest, background: BackgroundTasks,
           explain_: Annotated[bool, Query(alias="explain")] = False):
    """Search: keyword + vector retrieval for ``query``, then the same stages."""
    return _rank(request, req, "search", req.query, explain_, background)


@router.get("/v1/sellers/{seller_id}/trust", tags=["ranking"])
def seller_trust_score(request: Request, seller_id: int):
    """Seller trust score with its audit breakdown ("+10 verified ID", "-5 reported")."""
    state = request.app.state.jaikod
    if seller_id < 0:
        raise ConfigError("seller_id must be >= 0", field="seller_id")
    raw = state.redis.hgetall(f"jk:seller:{seller_id}")
    if not raw:
        return JSONResponse(error_body("not_found", f"seller {seller_id} is unknown", "seller_id"), 404)
    d = {k.decode(): v.decode() for k, v in raw.items()}
    verified = d.get("verified_id") == "1"
    reports = int(d.get("reports", 0))
    age_days = max(0.0, (now_ms() - int(d.get("joined_ms", now_ms()))) / 86_400_000)
    banned = d.get("banned") == "1"
    score, parts = seller_trust(np.array([verified]), np.array([reports]), np.array([age_days]), np.array([banned]),
                                xp=np)
    labels = {"base": "base score", "verified_id": "verified ID" if verified else "no verified ID",
              "reports": f"reported {reports} time(s)", "account_age": f"account {int(age_days)} days old",
              "banned": "banned seller"}
    breakdown = [{"rule": k, "points": float(v[0]), "reason": f"{float(v[0]):+g} {labels[k]}"}
                 for k, v in parts.items() if float(v[0]) != 0 or k == "base"]
    return {"seller_id": seller_id, "trust_score": round(float(score[0]), 4), "breakdown": breakdown}


# ---- admin overrides -------------------------------------------------------------------------------
def _check_admin(request: Request, token: str | None) -> None:
    expected = request.app.state.jaikod.settings.admin_token
    if not expected or not token or not secrets.compare_digest(token, expected):
        raise AdminAuthError("admin token missing or wrong (header X-Admin-Token)", field="X-Admin-Token")


@router.get("/v1/admin/overrides", tags=["admin"])
def get_overrides(request: Request, x_admin_token: Annotated[str | None, Header()] = None):
    _check_admin(request, x_admin_token)
    r = request.app.state.jaikod.redis
    ints = lambda key: sorted(int(x) for x in r.smembers(key))  # noqa: E731
    return {"boosted_products": ints(Overrides.BOOST),
            "banned_categories": [CATEGORIES[c] for c in ints(Overrides.BANNED_CATEGORIES)],
            "banned_sellers": ints(Overrides.BANNED_SELLERS), "sponsored_products": len(ints(Overrides.SPONSORED)),
            "version": int(r.get(Overrides.VERSION) or 0)}


@router.post("/v1/admin/overrides", tags=["admin"])
def post_override(request: Request, req: OverrideRequest, x_admin_token: Annotated[str | None, Header()] = None):
    """Global overrides, applied from the next request: force-boost a listing, ban a category or seller,
    add/remove sponsored inventory."""
    _check_admin(request, x_admin_token)
    r = request.app.state.jaikod.redis
    a = req.action
    if a in ("boost", "unboost", "sponsor", "unsponsor"):
        if req.product_id is None:
            raise ConfigError(f"product_id is required for {a}", field="product_id")
        key = Overrides.BOOST if a.endswith("boost") else Overrides.SPONSORED
        Overrides.change(r, "srem" if a.startswith("un") else "sadd", key, req.product_id)
    elif a in ("ban_category", "unban_category"):
        if req.category not in CATEGORIES:
            raise ConfigError(f"category must be one of {', '.join(CATEGORIES)}", field="category")
        Overrides.change(r, "srem" if a.startswith("un") else "sadd", Overrides.BANNED_CATEGORIES,
                         CATEGORIES.index(req.category))
    else:
        if req.seller_id is None:
            raise ConfigError(f"seller_id is required for {a}", field="seller_id")
        Overrides.change(r, "srem" if a.startswith("un") else "sadd", Overrides.BANNED_SELLERS, req.seller_id)
    return {"ok": True, "action": a, "version": int(r.get(Overrides.VERSION) or 0)}


# ---- operations ------------------------------------------------------------------------------------
@router.get("/healthz", tags=["ops"])
def healthz() -> dict[str, Any]:
    return {"status": "ok"}


@router.get("/readyz", tags=["ops"])
def readyz(request: Request):
    state = request.app.state.jaikod
    checks = state.ready()
    body = {"ready": all(checks.values()), "checks": checks,
            "model_version": (m.label if (m := state.models.get("production")) else None),
            "snapshot_version": state.mirror.version if state.mirror else None,
            "model_error": state.models.error, "index_error": state.indexes.error}
    for name, report in request.app.state.readiness_reports.items():
        body[name] = report()  # which model answers each AI service (e.g. text: heads or rules only)
    return JSONResponse(body, status_code=200 if body["ready"] else 503)


@router.get("/metrics", tags=["ops"])
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
