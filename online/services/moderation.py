"""Moderation admin API (``/v1/admin/moderation/...``, behind ``X-Admin-Token``) and the admin console
page (``GET /admin``: plain HTML + a little JS; the token is typed into the page and sent as a header).

Routes:

* ``GET  /v1/admin/moderation/queue``             open and claimed entries with the listing's facts
* ``POST /v1/admin/moderation/claim``             {moderator, count} -> entries now claimed by the moderator
* ``POST /v1/admin/moderation/{entry_id}/approve`` {moderator}
* ``POST /v1/admin/moderation/{entry_id}/reject``  {moderator, reason} (reason required)
* ``GET  /v1/admin/moderation/labels``            latest decisions
* ``GET  /v1/admin/listings/{id}/image``          the listing's uploaded image
* ``GET  /v1/admin/status``                       model status (registry aliases, readiness) and canary

Each decision is stored once (see :mod:`gpu_core.moderation`): in Redis (labels stream + hash) and in
the lake's Parquet labels table for the next training run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field

from gpu_core.errors import ConfigError
from gpu_core.ids import ID_MAX, ID_MIN
from gpu_core.moderation import (
    DecisionConflict,
    ModerationQueue,
    ReviewBacklog,
    decode_hash,
    image_key,
    listing_key,
    write_label_parquet,
)
from online.errors import error_body
from online.wiring import Admin, services

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent.parent / "static"


class ClaimRequest(BaseModel):
    moderator: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    count: int = Field(1, ge=1, le=100)


class DecisionRequest(BaseModel):
    moderator: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    reason: str = Field("", max_length=500)


def _queue(request: Request) -> ModerationQueue:
    svc = services(request)
    state = svc.state
    q = svc.extras.get("moderation_queue")
    if q is None or q.r is not state.redis:
        q = ModerationQueue(state.redis, claim_timeout_ms=state.settings.moderation_claim_timeout_s * 1000)
        svc.extras["moderation_queue"] = q
    return q


def _listing(r, listing_id: str) -> dict | None:
    raw = r.hgetall(listing_key(listing_id)) if listing_id else {}
    if not raw:
        return None
    h = decode_hash(raw)
    return {"title": h.get("title", ""), "description": h.get("description", ""),
            "price_thb": float(h.get("price_thb", 0) or 0), "category": h.get("category", ""),
            "seller_id": h.get("seller_id"), "status": h.get("status"), "has_image": h.get("has_image") == "1",
            "fraud_score": float(h["fraud_score"]) if h.get("fraud_score") else None,
            "image_url": f"/v1/admin/listings/{listing_id}/image" if h.get("has_image") == "1" else None}


def _with_listing(r, items) -> list[dict]:
    return [{**i.as_dict(), "listing": _listing(r, i.listing_id)} for i in items]


def moderation_router() -> APIRouter:
    router = APIRouter(tags=["admin"])

    @router.get("/admin", response_class=HTMLResponse, include_in_schema=False)
    def admin_console() -> HTMLResponse:
        """The admin console (no data without the admin token, which the page asks for)."""
        return HTMLResponse((STATIC / "admin.html").read_text(encoding="utf-8"),
                            headers={"Cache-Control": "no-store"})

    @router.get("/v1/admin/moderation/queue")
    def queue(request: Request, _: Admin, limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> dict:
        q = _queue(request)
        r = services(request).state.redis
        return {"items": _with_listing(r, q.items(limit=limit)), "depth": q.depth(),
                "review_backlog": ReviewBacklog(r).depth()}

    @router.post("/v1/admin/moderation/claim")
    def claim(request: Request, req: ClaimRequest, _: Admin) -> dict:
        q = _queue(request)
        return {"items": _with_listing(services(request).state.redis, q.claim(req.moderator, req.count))}

    def _decide(request: Request, entry_id: str, decision: str, req: DecisionRequest):
        q = _queue(request)
        try:
            label = q.decide(entry_id, decision, req.moderator, req.reason)
        except DecisionConflict as exc:
            return JSONResponse(error_body("conflict", f"entry {entry_id}: {exc}", "entry_id"), status_code=409)
        except Exception as exc:  # redis errors on a malformed id
            if "Invalid stream ID" in str(exc):
                raise ConfigError("entry_id is not a stream id", field="entry_id") from None
            raise
        try:
            write_label_parquet(services(request).state.settings.lake_dir, [label])
            label["lake"] = True
        except OSError as exc:  # Redis holds the label; `jaikod batch review` exports it later
            log.warning("label not written to the lake yet: %s", type(exc).__name__)
            label["lake"] = False
        log.info("moderation decision", extra={"entry_id": entry_id, "decision": decision})
        return label

    @router.post("/v1/admin/moderation/{entry_id}/approve")
    def approve(request: Request, entry_id: str, req: DecisionRequest, _: Admin):
        return _decide(request, entry_id, "approve", req)

    @router.post("/v1/admin/moderation/{entry_id}/reject")
    def reject(request: Request, entry_id: str, req: DecisionRequest, _: Admin):
        if not req.reason.strip():
            raise ConfigError("a reason is required to reject", field="reason")
        return _decide(request, entry_id, "reject", req)

    @router.get("/v1/admin/moderation/labels")
    def labels(request: Request, _: Admin, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> dict:
        return {"labels": _queue(request).labels(limit)}

    @router.get("/v1/admin/listings/{listing_id}/image")
    def listing_image(request: Request, listing_id: Annotated[int, PathParam(ge=ID_MIN, le=ID_MAX)], _: Admin):
        raw = services(request).state.redis.get(image_key(listing_id))
        if raw is None:
            return JSONResponse(error_body("not_found", f"listing {listing_id} has no image"), status_code=404)
        media = "image/png" if raw[:4] == b"\x89PNG" else "image/jpeg" if raw[:2] == b"\xff\xd8" else \
            "application/octet-stream"
        return Response(raw, media_type=media, headers={"Cache-Control": "no-store"})

    @router.get("/v1/admin/status")
    def status(request: Request, _: Admin) -> dict:
        from online.api import process_reports

        svc = services(request)
        state = svc.state
        models = {}
        for alias, m in state.models.models.items():
            models[alias] = {"version": m.label, "metrics": (m.ref.metrics if m.ref else {})}
        text = svc.text().model_version if svc.text is not None and svc.text.loaded() else None
        canary_body = {"configured": False, "status": "not configured"}
        if svc.canary is not None and state.registry is not None:
            try:
                from online.canary import canary_status

                canary_body = {"configured": True, **canary_status(state.redis, state.registry)}
            except Exception as exc:  # noqa: BLE001 - the status page must render
                canary_body = {"configured": True, "status": f"unavailable: {type(exc).__name__}"}
        return {"ready": state.ready(), "models": models, "model_error": state.models.error,
                "model_source": state.models.source, "model_refused": state.models.refused or None,
                "index_refused": state.indexes.refused,
                "snapshot_version": state.mirror.version if state.mirror else None, "text_model": text,
                "canary": canary_body, **process_reports(svc), "moderation_depth": _queue(request).depth(),
                "review_backlog": ReviewBacklog(state.redis).depth()}

    return router
