"""Fraud service: ``POST /v1/fraud-score`` {listing_id} -> {score, reasons[]}, on demand.

A listing is a new one taken in by ``POST /v1/listings`` (Redis hash ``jk:listing:{id}``) or a product
of the live snapshot (the product mirror). Signals and their combination: :mod:`engines.fraud` (the same
code the nightly batch runs). The duplicate-image signal uses the vision service's verdict stored at intake
(``duplicate_of``); without the vision service it is skipped and a note says so.
"""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from engines.fraud import diversion_flags, fraud_scores, reasons, trust_from_inputs
from gpu_core.clock import now_ms
from gpu_core.errors import JaikodError
from gpu_core.feature_store import read_seller
from gpu_core.moderation import decode_hash, listing_key
from gpu_core.schema import CATEGORIES, CONTEXT_DAILY
from online.schemas import Id
from online.wiring import Services, Svc


class ListingNotFound(JaikodError):
    http_status = 404


class FraudRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    listing_id: Id


class FraudService:
    def __init__(self, state, vision_available: bool):
        self.state = state
        self.vision_available = vision_available

    def _avg_prices(self) -> np.ndarray:
        row = self.state.context_row
        if row is None:
            return np.zeros(len(CATEGORIES), dtype=np.float32)
        return np.asarray(CONTEXT_DAILY.unpack(np.asarray(row)[None, :])["avg_category_price_history"][0])

    def listing(self, listing_id: int) -> dict:
        """The facts the score needs: seller_id, price_thb, category code, text, duplicate_of, has_image."""
        r = self.state.redis
        raw = r.hgetall(listing_key(listing_id))
        if raw:
            h = decode_hash(raw)
            cat = h.get("category", "")
            return {"source": "intake", "seller_id": int(h.get("seller_id", -1)),
                    "price_thb": float(h.get("price_thb", "nan")),
                    "category": CATEGORIES.index(cat) if cat in CATEGORIES else -1,
                    "text": f"{h.get('title', '')}\n{h.get('description', '')}",
                    "duplicate_of": h.get("duplicate_of") or None, "has_image": h.get("has_image") == "1",
                    "image_checked": h.get("image_checked") == "1"}
        mirror = self.state.mirror
        if mirror is None:
            raise ListingNotFound(f"listing {listing_id} is unknown (no snapshot loaded)", field="listing_id")
        pos = int(mirror.index_of(np.array([listing_id], dtype=np.int64))[0])
        if pos < 0:
            raise ListingNotFound(f"listing {listing_id} is unknown", field="listing_id")
        from gpu_core.device import to_host

        return {"source": "snapshot", "seller_id": int(mirror.seller[pos]),
                "price_thb": float(to_host(mirror.cols["price_thb"][pos])),
                "category": int(to_host(mirror.cols["category"][pos])), "text": "", "duplicate_of": None,
                "has_image": False, "image_checked": False}

    def seller_inputs(self, seller_id: int) -> tuple[float, bool, list[str]]:
        rec = read_seller(self.state.redis, seller_id)
        if rec is None:
            trust = float(trust_from_inputs([False], [0], [0.0], [False])[0])
            return trust, False, [f"seller {seller_id} has no trust record; scored as a new unverified seller"]
        trust = float(trust_from_inputs([rec.verified_id], [rec.reports], [rec.age_days(now_ms())], [rec.banned])[0])
        return trust, rec.banned, []

    def score(self, listing_id: int) -> dict:
        li = self.listing(listing_id)
        notes: list[str] = []
        trust, banned, n = self.seller_inputs(li["seller_id"])
        notes += n
        avg = self._avg_prices()
        cat = li["category"]
        ratio = li["price_thb"] / max(float(avg[cat]), 1.0) if 0 <= cat < len(avg) and avg[cat] > 0 else float("nan")
        if not np.isfinite(ratio):
            notes.append("price signal skipped: no category average price in the snapshot")
        contact, payment, kinds = diversion_flags([li["text"]])
        if li["source"] == "snapshot":
            notes.append("listing text is not held online; its diversion check runs in the nightly batch")
        duplicate = None
        if li["image_checked"]:
            duplicate = np.array([li["duplicate_of"] is not None])
        elif li["has_image"] and not self.vision_available:
            notes.append("duplicate-image signal skipped: vision service not available")
        elif not li["has_image"]:
            notes.append("duplicate-image signal skipped: listing has no image")
        else:
            notes.append("duplicate-image signal skipped: image not analysed")
        res = fraud_scores(np.array([trust]), np.array([banned]), np.array([ratio]), contact, payment, duplicate)
        out = {"listing_id": listing_id, "score": round(float(res.score[0]), 4),
               "reasons": reasons(res, 0, trust=trust, banned=banned, price_ratio=ratio, diversion_kinds=kinds[0],
                                  duplicate_of=li["duplicate_of"], notes=notes),
               "source": li["source"]}
        if li["source"] == "intake":
            self.state.redis.hset(listing_key(listing_id), "fraud_score", f"{out['score']:.4f}")
        return out


def fraud_router() -> APIRouter:
    router = APIRouter(tags=["fraud"])

    @router.post("/v1/fraud-score")
    def fraud_score(svc: Svc, req: FraudRequest) -> dict:
        """Fraud score in [0, 1] and the reasons behind it, for a new listing or a live product."""
        return fraud_service(svc).score(req.listing_id)

    return router


def fraud_service(svc: Services) -> FraudService:
    fs = svc.extras.get("fraud")
    vision = svc.vision is not None and svc.vision.loaded()
    if fs is None or fs.state is not svc.state or fs.vision_available != vision:
        fs = FraudService(svc.state, vision)
        svc.extras["fraud"] = fs
    return fs
