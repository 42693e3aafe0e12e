"""Listing intake: ``POST /v1/listings``.

The listing is stored (``jk:listing:{id}``), then analysed:

* **text** (the language service) within ``listing_text_timeout_ms``. If the service is down or slower,
  the listing is accepted at once with status ``pending_review`` and put on the post-hoc review backlog
  (``jk:listings:review``), which ``jaikod batch review`` works through.
* **image** (the vision service), when the vision service can be loaded; otherwise the response notes
  that the image was not analysed.

``safety_score = min(text, image)``; below ``safety_threshold`` (0.4) the listing goes to the moderation
queue (status ``in_review``), else it is ``live``: announced with :func:`gpu_core.feature_store.mark_live`, it
joins every API worker's product mirror, vector and keyword index from that worker's next request
(:meth:`online.state.ServiceState.sync_live`), as does a listing made live later by the review backlog or a
moderator's approval. The fraud score is computed on demand and stored.
Listing text is never logged.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated

import orjson
from fastapi import APIRouter, Path
from pydantic import BaseModel, Field, field_validator

from gpu_core.clock import now_ms
from gpu_core.errors import JaikodError
from gpu_core.feature_store import mark_live
from gpu_core.ids import ID_MAX, ID_MIN
from gpu_core.lake import LakePath
from gpu_core.moderation import (
    ModerationQueue,
    ReviewBacklog,
    image_key,
    listing_key,
    new_listing_id,
    text_flags,
)
from gpu_core.schema import CATEGORIES
from online.schemas import Id
from online.services.fraud import fraud_service
from online.wiring import Services, Svc

log = logging.getLogger(__name__)
MAX_IMAGE_BYTES = 8 * 1024 * 1024
_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="listing-text")


class ListingInputError(JaikodError):
    http_status = 422


class ListingRequest(BaseModel):
    seller_id: Id
    title: str = Field(min_length=1, max_length=300)
    description: str = Field("", max_length=4500)
    price_thb: float = Field(gt=0, lt=1e9)
    category: str
    image_base64: str | None = None
    lat: float | None = Field(None, ge=-90, le=90, description="where the item is (default: the seller's place)")
    lon: float | None = Field(None, ge=-180, le=180)

    @field_validator("category")
    @classmethod
    def _category(cls, v: str) -> str:
        if v not in CATEGORIES:
            raise ValueError(f"category must be one of {', '.join(CATEGORIES)}")
        return v


# ---- the vision service, when it can be had ---------------------------------------------------------
def get_vision(svc: Services):
    """The vision service, or None when it cannot be loaded (models/heads missing); a failed load is
    retried after a minute, not on every request."""
    if svc.vision is None:
        return None
    try:
        return svc.vision.get_or_none()
    except Exception as exc:  # noqa: BLE001 - models/heads missing (RegistryError), a broken model file
        log.warning("vision service unavailable for listing intake: %s", type(exc).__name__)
        return None


async def _analyze_text(svc: Services, text: str, timeout_s: float) -> tuple[dict | None, str | None]:
    """(analysis, None) or (None, why it was deferred)."""
    loop = asyncio.get_running_loop()

    def run() -> dict:
        return svc.text().analyze(text, "listing")

    try:
        return await asyncio.wait_for(loop.run_in_executor(_pool, run), timeout_s), None
    except TimeoutError:
        return None, f"text service slower than {timeout_s * 1000:.0f} ms"
    except Exception as exc:  # the language service is down: accept, review later
        return None, f"text service unavailable ({type(exc).__name__})"


def _decode_image(b64: str) -> bytes:
    try:
        raw = base64.b64decode(b64.split(",", 1)[1] if b64.startswith("data:") else b64, validate=True)
    except (binascii.Error, ValueError):
        raise ListingInputError("image_base64 is not valid base64", field="image_base64") from None
    if len(raw) > MAX_IMAGE_BYTES:
        raise ListingInputError(f"image larger than {MAX_IMAGE_BYTES} bytes", field="image_base64")
    return raw


async def _analyze_image(svc: Services, raw: bytes, listing_id: int) -> tuple[dict | None, str | None]:
    vision = get_vision(svc)
    if vision is None:
        return None, "image not analysed: vision service not available"
    try:
        from engines.vision.imaging import decode_image

        image = decode_image(raw, field="image_base64")
    except JaikodError as exc:
        raise ListingInputError(exc.message, field="image_base64") from None
    try:
        return await vision.analyze(image, str(listing_id)), None
    except Exception as exc:  # noqa: BLE001 - the listing is still taken in
        log.warning("image analysis failed: %s", type(exc).__name__)
        return None, f"image not analysed: {type(exc).__name__}"


def listings_router() -> APIRouter:
    router = APIRouter(tags=["listings"])

    @router.post("/v1/listings", status_code=201)
    async def create_listing(svc: Svc, req: ListingRequest) -> dict:
        """Take in a listing: text + image analysis, moderation queue when unsafe, fraud score."""
        state = svc.state
        s = state.settings
        r = state.redis
        raw_image = _decode_image(req.image_base64) if req.image_base64 else None
        lid = new_listing_id(r)
        r.hset(listing_key(lid), mapping={
            "listing_id": lid, "seller_id": req.seller_id, "title": req.title, "description": req.description,
            "price_thb": f"{req.price_thb:.2f}", "category": req.category, "status": "processing",
            "has_image": int(raw_image is not None), "created_ms": now_ms(),
            **({"lat": req.lat, "lon": req.lon} if req.lat is not None and req.lon is not None else {})})
        if raw_image is not None:
            r.set(image_key(lid), raw_image)

        text = f"{req.title}\n{req.description}".strip()
        analysis, deferred = await _analyze_text(svc, text, s.listing_text_timeout_ms / 1000.0)
        image, image_note = (await _analyze_image(svc, raw_image, lid)) if raw_image is not None else (None, None)

        scores, flags, kinds = [], [], []
        if analysis is not None:
            scores.append(float(analysis["safety_score"]))
            tf = text_flags(analysis)
            flags += tf
            if float(analysis["safety_score"]) < s.safety_threshold:
                kinds.append("text")
        image_queued = False
        if image is not None:
            scores.append(float(image["safety_score"]))
            flags += [{"kind": "image", "label": f["label"], "score": float(f["score"])}
                      for f in image.get("safety_flags", [])]
            if float(image["safety_score"]) < s.safety_threshold:
                image_queued = bool(image.get("moderation_queued"))  # the vision service queued it already
                if not image_queued:
                    kinds.append("image")
            dup = image.get("duplicate_of")
            r.hset(listing_key(lid), mapping={"image_checked": 1,
                                              "duplicate_of": dup["listing_id"] if dup else ""})
        safety = min(scores) if scores else None
        entry_id = None
        if kinds:
            entry_id = ModerationQueue(r).enqueue(lid, "+".join(kinds), min(scores), flags)
            status = "in_review"
        elif image_queued:
            status = "in_review"
        elif deferred is not None:
            status = "pending_review"
        else:
            status = "live"
        review_id = ReviewBacklog(r).add(lid, deferred) if deferred is not None else None
        mapping = {"status": status, "flags": orjson.dumps(flags).decode(),
                   "text_checked": int(analysis is not None)}
        if safety is not None:
            mapping["safety_score"] = f"{safety:.4f}"
        r.hset(listing_key(lid), mapping=mapping)
        fraud = fraud_service(svc).score(lid)
        if status == "live":
            mark_live(r, lid)  # product row + both indexes in every worker from its next request
        log.info("listing taken in", extra={"listing_id": lid, "status": status, "deferred": deferred is not None})
        return {
            "listing_id": lid, "status": status,
            "safety_score": None if safety is None else round(safety, 4),
            "text": analysis, "image": image,
            "moderation": {"queued": bool(kinds) or image_queued, "entry_id": entry_id, "flags": flags},
            "review": {"deferred": deferred is not None, "reason": deferred, "backlog_id": review_id},
            "notes": [n for n in (image_note,) if n],
            "fraud": {"score": fraud["score"], "reasons": fraud["reasons"]},
        }

    @router.get("/v1/listings/{listing_id}")
    def get_listing(svc: Svc, listing_id: Annotated[int, Path(ge=ID_MIN, le=ID_MAX)]) -> dict:
        """A listing, from intake (``POST /v1/listings``) or the catalogue, with its current status."""
        from online.catalogue import listing_record
        from online.services.fraud import ListingNotFound

        rec = listing_record(svc.state.redis, svc.state.catalogue, listing_id)
        if rec is None:
            raise ListingNotFound(f"listing {listing_id} is unknown", field="listing_id")
        return rec

    @router.get("/v1/listings/{listing_id}/image")
    def get_listing_image(svc: Svc, listing_id: Annotated[int, Path(ge=ID_MIN, le=ID_MAX)]):
        """The listing's photo: the catalogue's image, or an intake listing's once it is live."""
        from fastapi.responses import FileResponse, Response

        from online.catalogue import intake_record
        from online.services.fraud import ListingNotFound

        state = svc.state
        rec = intake_record(state.redis, listing_id)
        if rec is not None:
            raw = state.redis.get(image_key(listing_id)) if rec["status"] == "live" else None
            if raw is None:
                raise ListingNotFound(f"listing {listing_id} has no public image", field="listing_id")
            media = "image/png" if raw[:4] == b"\x89PNG" else "image/jpeg"
            return Response(raw, media_type=media)
        path = state.catalogue.image_path(listing_id) if state.catalogue is not None else None
        if path is None:
            raise ListingNotFound(f"listing {listing_id} has no image", field="listing_id")
        if isinstance(path, LakePath):  # the lake on object storage: the object's bytes
            return Response(path.read_bytes(), media_type="image/png")
        return FileResponse(path, media_type="image/png")

    return router
