"""Nightly fraud scoring of every listing (fills PRODUCT_DAILY ``fraud_score`` at materialisation).

Signals (see :mod:`engines.fraud`): seller trust inputs (the product dimension's ``seller_trust_score``
and ``seller_banned``), price against the day's ``avg_category_price_history``, diversion attempts in the
title (and description when the lake has one), and duplicate images: listings whose drawn image has a
64-bit perceptual hash within ``phash_max_distance`` bits of another *seller's* listing image. The image
signal needs the vision engines and the lake's images; without them it is skipped (``notes`` says so).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from engines.fraud import FraudResult, diversion_flags, fraud_scores

log = logging.getLogger(__name__)


@dataclass
class BatchFraud:
    product_ids: np.ndarray
    result: FraudResult
    price_ratio: np.ndarray
    duplicate_of: np.ndarray  # int64 product id of the image it copies, -1 = none
    notes: list[str] = field(default_factory=list)

    @property
    def score(self) -> np.ndarray:
        return self.result.score


def price_ratios(price: np.ndarray, category: np.ndarray, avg_category_price: np.ndarray) -> np.ndarray:
    avg = np.asarray(avg_category_price, dtype=np.float64)[np.asarray(category, dtype=np.int64)]
    return (np.asarray(price, dtype=np.float64) / np.maximum(avg, 1.0)).astype(np.float32)


def image_duplicates(lake: Path | None, products: pd.DataFrame, max_distance: int | None = None
                     ) -> tuple[np.ndarray | None, np.ndarray, str | None]:
    """(duplicate bool [n] or None, duplicate_of ids, note). Only pairs of *different* sellers count."""
    n = len(products)
    dup_of = np.full(n, -1, dtype=np.int64)
    if lake is None:
        return None, dup_of, "duplicate-image signal skipped: no lake images"
    try:
        from engines.vision.config import get_vision_settings
        from engines.vision.imaging import decode_image, phash
    except ImportError as exc:
        return None, dup_of, f"duplicate-image signal skipped: vision engines unavailable ({exc.name})"
    from batch.lake import lake_path, read_table

    try:
        paths = read_table(lake, "products", ["product_id", "image_path"]).set_index("product_id")["image_path"]
    except Exception as exc:  # noqa: BLE001 - a lake without the column simply has no images
        return None, dup_of, f"duplicate-image signal skipped: {exc}"
    limit = get_vision_settings().phash_max_distance if max_distance is None else max_distance
    pids = products["product_id"].to_numpy(np.int64)
    sellers = products["seller_id"].to_numpy(np.int64)
    rows, hashes = [], []
    for i, pid in enumerate(pids):
        rel = paths.get(pid, "")
        f = lake_path(lake) / rel if rel else None
        if f is None or not f.is_file():
            continue
        try:
            hashes.append(phash(decode_image(f.read_bytes())))
            rows.append(i)
        except Exception:  # noqa: BLE001 - an unreadable image is not evidence of fraud
            continue
    if not rows:
        return None, dup_of, "duplicate-image signal skipped: no listing images in the lake"
    h = np.array(hashes, dtype=np.uint64)
    idx = np.array(rows)
    for a in range(len(idx)):
        dist = np.bitwise_count(h ^ h[a])
        cand = np.flatnonzero((dist <= limit) & (sellers[idx] != sellers[idx[a]]))
        if len(cand):
            dup_of[idx[a]] = pids[idx[cand[0]]]
    return dup_of >= 0, dup_of, None


_DUP_CACHE: dict[tuple, tuple] = {}


@lru_cache(maxsize=500_000)
def _kinds(text: str) -> tuple[bool, bool]:
    contact, payment, _ = diversion_flags([text])
    return bool(contact[0]), bool(payment[0])


def _diversion(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    flags = [_kinds(t) for t in texts]
    return np.array([f[0] for f in flags], dtype=bool), np.array([f[1] for f in flags], dtype=bool)


def _duplicates_cached(lake: Path | None, products: pd.DataFrame):
    """Image hashes do not change between the days of one job: one pass per lake and product table."""
    pids = products["product_id"].to_numpy(np.int64)
    key = (str(lake), len(pids), int(pids.sum()), int(products["seller_id"].to_numpy(np.int64).sum()))
    if key not in _DUP_CACHE:
        _DUP_CACHE.clear()
        _DUP_CACHE[key] = image_duplicates(lake, products)
    return _DUP_CACHE[key]


def score_products(products: pd.DataFrame, avg_category_price: np.ndarray, lake: Path | None = None,
                   texts: list[str] | None = None) -> BatchFraud:
    """Fraud scores for a product table with columns product_id, seller_id, category (code), price_thb,
    seller_trust_score, seller_banned, title (the product dimension of the ETL)."""
    ratio = price_ratios(products["price_thb"].to_numpy(), products["category"].to_numpy(), avg_category_price)
    texts = texts if texts is not None else products["title"].astype(str).tolist()
    contact, payment = _diversion(texts)
    duplicate, dup_of, note = _duplicates_cached(lake, products)
    res = fraud_scores(products["seller_trust_score"].to_numpy(np.float32),
                       products["seller_banned"].to_numpy(bool), ratio, contact, payment, duplicate)
    notes = [note] if note else []
    log.info("fraud scored %d listings (%d >= 0.8)", len(products), int((res.score >= 0.8).sum()))
    return BatchFraud(products["product_id"].to_numpy(np.int64), res, ratio, dup_of, notes)
