"""HTTP routes of the ranking service (``/v1``) and its operational endpoints."""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any

import numpy as np
import orjson
import redis
from fastapi import APIRouter, BackgroundTasks, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gpu_core import ops, replay_log
from gpu_core.clock import new_request_id, now_ms
from gpu_core.device import to_host
from gpu_core.errors import ConfigError
from gpu_core.feature_store import OverrideKeys, read_seller
from gpu_core.ids import ID_MAX, ID_MIN, ids_only
from gpu_core.schema import CATEGORIES, DEVICE_TYPES
from kernels.trust import seller_trust
from online import replay
from online.candidates import RequestContext
from online.edge import Overloaded, shed_if_queued
from online.errors import error_body
from online.schemas import FeedRequest, OverrideRequest, RankResponse, SearchRequest
from online.state import Overrides
from online.wiring import Admin, Services, Svc

log = logging.getLogger("jaikod.online")
router = APIRouter()


def _ctx(req: FeedRequest, kind: str, query: str, explain_: bool, settings,
         arrived_s: float | None = None) -> RequestContext:
    """The request's context; its deadline counts from the request's arrival at the edge (queueing included)."""
    arrived_s = time.perf_counter() if arrived_s is None else arrived_s
    return RequestContext(
        request_id=new_request_id(), kind=kind, user_id=req.user_id, lat=req.lat, lon=req.lon,
        device_type=DEVICE_TYPES.index(req.device_type) if req.device_type else -1, limit=req.limit, query=query,
        now_ms=now_ms(), deadline_s=arrived_s + settings.request_budget_ms / 1000.0, explain=explain_)


def _rank(svc: Services, request: Request, req: FeedRequest, kind: str, query: str, explain_: bool,
          background: BackgroundTasks) -> Response:
    state = svc.state
    try:
        arrived_s = shed_if_queued(request.scope, state.settings)
    except Overloaded:
        svc.metrics.shed.labels("ranking", "queued").inc()
        raise
    ctx = _ctx(req, kind, query, explain_, state.settings, arrived_s)
    # the canary serves a sticky share of /v1/feed users with the staging model
    ctx.arm = svc.arm_for(ctx.user_id) if kind == "feed" else "production"
    result = svc.pipeline.rank(ctx)
    body = result.body()
    batch = result.batch
    if explain_ and batch is not None and batch.X is not None and ctx.model is not None:
        organic = [(i, int(pos)) for i, (pos, sp) in enumerate(zip(batch.final_pos, batch.sponsored, strict=True))
                   if not sp][:10]  # sponsored items sit in their slots by rule, not by score
        rows = to_host(batch.X)[[pos for _, pos in organic]]
        ex = ctx.model.explain(rows)  # the model that scored this request, even after a hot swap
        body["explanations"] = [{"product_id": int(batch.final_ids[i]), "position": i + 1, **{
            k: v for k, v in e.items() if k != "all_contributions"}} for (i, _), e in zip(organic, ex, strict=True)]
        background.add_task(_log_explanations, ctx.request_id, ctx.model_version, body["explanations"])
    svc.metrics.observe(kind, body, ctx.removed_by_reason())
    sampled = batch is not None and batch.X is not None and _sampled(state.settings.replay_sample_rate, ctx.request_id)
    body["replay_sampled"] = sampled  # kept in the replay log: `jaikod replay <request_id>` works for it
    if sampled:
        background.add_task(_store_replay, state, ctx, batch)
    if state.settings.log_requests:
        log.info(orjson.dumps({"event": "ranked", "request_id": ctx.request_id, "kind": kind,
                               "model_version": ctx.model_version, "fallbacks": ctx.fallbacks,
                               "total_ms": round(ctx.timings_ms.get("total", 0.0), 3)}).decode())
    return Response(orjson.dumps(body), media_type="application/json")


def _sampled(rate: float, request_id: str) -> bool:
    return rate >= 1.0 or (rate > 0 and int(request_id[:8], 16) / 0xFFFFFFFF < rate)


def _store_replay(state, ctx, batch) -> None:
    try:
        rec = replay.record_of(ctx, batch, state.mirror.ids, state.settings.digest())
        replay_log.write(state.redis.pipeline(transaction=False), ctx.request_id, rec,
                         state.settings.replay_ttl_s).execute()
    except Exception as exc:  # the log never breaks serving
        log.warning("replay log write failed: %s", exc)


def _log_explanations(request_id: str, model_version: str, explanations: list[dict]) -> None:
    log.info(orjson.dumps({"event": "explanations", "request_id": request_id, "model_version": model_version,
                           "explanations": explanations}).decode())


@router.post("/v1/feed", response_model=RankResponse, tags=["ranking"])
def feed(svc: Svc, request: Request, req: FeedRequest, background: BackgroundTasks,
         explain_: Annotated[bool, Query(alias="explain")] = False):
    """"For You" feed: the stages over up to 1,000 candidates, top ``limit``. ``?explain=true`` adds TreeSHAP
    for the top 10 organic items, the path that retrieved each item and the candidates each stage removed."""
    return _rank(svc, request, req, "feed", "", explain_, background)


@router.post("/v1/search", response_model=RankResponse, tags=["ranking"])
def search(svc: Svc, request: Request, req: SearchRequest, background: BackgroundTasks,
           explain_: Annotated[bool, Query(alias="explain")] = False):
    """Search: keyword retrieval for ``query`` (the understood query in ``query_understanding``), then the same
    stages. Nothing matches -> ``no_match``, no items; every match beyond the user's distance -> the radius is
    widened (``widened_radius``, ``widened_radius_km``); every match removed by the hard rules (banned, sold)
    -> ``matches_filtered``, no items."""
    return _rank(svc, request, req, "search", req.query, explain_, background)


@router.get("/v1/sellers/{seller_id}/trust", tags=["ranking"])
def seller_trust_score(svc: Svc, seller_id: Annotated[int, Path(ge=ID_MIN, le=ID_MAX)]):
    """Seller trust score with its audit breakdown ("+10 verified ID", "-5 reported")."""
    rec = read_seller(svc.state.redis, seller_id)
    if rec is None:
        return JSONResponse(error_body("not_found", f"seller {seller_id} is unknown", "seller_id"), 404)
    verified, reports, banned = rec.verified_id, rec.reports, rec.banned
    age_days = rec.age_days(now_ms())
    score, parts = seller_trust(np.array([verified]), np.array([reports]), np.array([age_days]), np.array([banned]),
                                xp=np)
    labels = {"base": "base score", "verified_id": "verified ID" if verified else "no verified ID",
              "reports": f"reported {reports} time(s)", "account_age": f"account {int(age_days)} days old",
              "banned": "banned seller"}
    breakdown = [{"rule": k, "points": float(v[0]), "reason": f"{float(v[0]):+g} {labels[k]}"}
                 for k, v in parts.items() if float(v[0]) != 0 or k == "base"]
    return {"seller_id": seller_id, "trust_score": round(float(score[0]), 4), "breakdown": breakdown}


# ---- admin overrides -------------------------------------------------------------------------------
@router.get("/v1/admin/overrides", tags=["admin"])
def get_overrides(svc: Svc, _: Admin):
    r = svc.state.redis
    ints = lambda key: sorted(ids_only(r.smembers(key))[0])  # noqa: E731
    return {"boosted_products": ints(OverrideKeys.BOOST),
            "banned_categories": [CATEGORIES[c] for c in ints(OverrideKeys.BANNED_CATEGORIES) if c < len(CATEGORIES)],
            "banned_sellers": ints(OverrideKeys.BANNED_SELLERS),
            "sponsored_products": len(ints(OverrideKeys.SPONSORED)),
            "version": int(r.get(OverrideKeys.VERSION) or 0)}


class UnknownId(ConfigError):
    http_status = 404


def _known_listing(svc: Services, product_id: int) -> bool:
    """A listing the ranking can serve: one of the live snapshot's listings (force-boost and sponsored
    inventory act on candidates, and only those can become candidates)."""
    m = svc.state.mirror
    return m is not None and int(m.index_of(np.asarray([product_id], np.int64))[0]) >= 0


@router.post("/v1/admin/overrides", tags=["admin"])
def post_override(svc: Svc, req: OverrideRequest, _: Admin):
    """Global overrides, applied from the next request: force-boost a listing, ban a category or seller,
    add/remove sponsored inventory."""
    r = svc.state.redis
    a = req.action
    if a in ("boost", "unboost", "sponsor", "unsponsor"):
        if req.product_id is None:
            raise ConfigError(f"product_id is required for {a}", field="product_id")
        if a in ("boost", "sponsor") and not _known_listing(svc, req.product_id):
            raise UnknownId(f"listing {req.product_id} is not in the live snapshot", field="product_id")
        key = OverrideKeys.BOOST if a.endswith("boost") else OverrideKeys.SPONSORED
        Overrides.change(r, "srem" if a.startswith("un") else "sadd", key, req.product_id)
    elif a in ("ban_category", "unban_category"):
        if req.category not in CATEGORIES:
            raise ConfigError(f"category must be one of {', '.join(CATEGORIES)}", field="category")
        Overrides.change(r, "srem" if a.startswith("un") else "sadd", OverrideKeys.BANNED_CATEGORIES,
                         CATEGORIES.index(req.category))
    else:
        if req.seller_id is None:
            raise ConfigError(f"seller_id is required for {a}", field="seller_id")
        if a == "ban_seller" and read_seller(r, req.seller_id) is None:
            raise UnknownId(f"seller {req.seller_id} is unknown", field="seller_id")
        Overrides.change(r, "srem" if a.startswith("un") else "sadd", OverrideKeys.BANNED_SELLERS, req.seller_id)
    return {"ok": True, "action": a, "version": int(r.get(OverrideKeys.VERSION) or 0)}


class PrometheusUnavailable(ConfigError):
    http_status = 503


@router.get("/v1/admin/prometheus/{kind}", tags=["admin"])
def prometheus_query(svc: Svc, _: Admin, kind: str, query: Annotated[str, Query(max_length=2000)],
                     start: float | None = None, end: float | None = None, step: float | None = None):
    """The admin console's charts: a PromQL ``query`` (``kind`` = ``query`` | ``query_range``) forwarded
    to the deployment's Prometheus (``settings.prometheus_url``), its JSON answer returned as is."""
    import httpx

    if kind not in ("query", "query_range"):
        raise ConfigError("kind must be query or query_range", field="kind")
    base = svc.settings.prometheus_url
    if not base:
        raise PrometheusUnavailable("no Prometheus configured (settings.prometheus_url)", field="prometheus_url")
    params: dict[str, Any] = {"query": query}
    if kind == "query_range":
        now = time.time()
        params.update(start=start or now - 900, end=end or now, step=step or 15)
    try:
        resp = httpx.get(f"{base.rstrip('/')}/api/v1/{kind}", params=params, timeout=5.0)
    except httpx.HTTPError as exc:
        raise PrometheusUnavailable(f"Prometheus at {base} does not answer ({type(exc).__name__})",
                                    field="prometheus_url") from None
    if resp.status_code in (400, 422):  # a PromQL mistake is the caller's: name the field
        try:
            msg = resp.json().get("error", "bad query")
        except ValueError:
            msg = "bad query"
        raise ConfigError(f"Prometheus rejected the query: {msg}", field="query")
    return Response(resp.content, status_code=resp.status_code if resp.status_code < 500 else 502,
                    media_type="application/json")


# ---- operations ------------------------------------------------------------------------------------
@router.get("/healthz", tags=["ops"])
def healthz() -> dict[str, Any]:
    return {"status": "ok"}


def process_reports(svc: Services) -> dict[str, Any]:
    """The stream consumer(s) and the scheduler, from their reports in Redis (:mod:`gpu_core.ops`)."""
    r = svc.state.redis
    out: dict[str, Any] = {}
    try:
        try:
            lag = svc.event_bus().lag() if svc.event_bus is not None else {}
        except Exception as exc:  # noqa: BLE001 - the bus (Kafka) may be away; the report still renders
            lag = {"error": type(exc).__name__}
        out["stream"] = ops.stream_report(r, lag)
        out["scheduler"] = ops.scheduler_report(r)
    except redis.RedisError as exc:
        out["error"] = f"redis: {type(exc).__name__}"
    return out


@router.get("/readyz", tags=["ops"])
def readyz(svc: Svc):
    """Ready when Redis, the production model, the snapshot and the indexes are there (and, with
    ``ready_requires_stream``, a stream processor is attached); reports the stream consumer (attached,
    lag, last applied) and the scheduler (each job's last run, result and next run)."""
    state = svc.state
    checks = state.ready()
    procs = process_reports(svc)
    if state.settings.ready_requires_stream:
        checks["stream_consumer"] = bool(procs.get("stream", {}).get("attached"))
    body = {"ready": all(checks.values()), "checks": checks, **procs,
            "model_version": (m.label if (m := state.models.get("production")) else None),
            "snapshot_version": state.mirror.version if state.mirror else None,
            "registry": "unavailable" if state.models.unavailable else "ok",
            "model_error": state.models.error, "index_error": state.indexes.error,
            "model_source": state.models.source, "model_refused": state.models.refused or None,
            "index_refused": state.indexes.refused}
    for name, report in svc.readiness.items():
        body[name] = report()  # which model answers each AI service (e.g. text: heads or rules only)
    return JSONResponse(body, status_code=200 if body["ready"] else 503)


@router.get("/metrics", tags=["ops"])
def metrics(svc: Svc) -> Response:
    return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)
