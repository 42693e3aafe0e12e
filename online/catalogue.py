"""The live catalogue: what a listing *is* (title, price, category, image, seller, place), for feed and
search items, ``GET /v1/listings/{id}`` and the auto-reply's listing facts.

Two sources, one lookup (:func:`listing_record`):

* the world's catalogue, the lake's ``products/`` table (columns of :data:`gpu_core.lake` ``products``),
  read once per service start (about 0.3 s for 100k listings) into sorted arrays; its images are
  ``<lake>/images/{id}.png``;
* listings taken in by ``POST /v1/listings`` (the ``jk:listing:{id}`` hash of :mod:`gpu_core.moderation`,
  ids from 1,000,000,000 up, never colliding with the catalogue's). Once ``live`` they are appended to the
  catalogue (:meth:`Catalogue.with_listings`) with the product row :func:`live_product_rows` builds, so
  feed and search items carry their title, price and place (``online.state.ServiceState.sync_live``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from gpu_core.lake import filesystem, lake_path
from gpu_core.moderation import decode_hash, listing_key
from gpu_core.schema import CATEGORIES
from kernels.geo import haversine_km

log = logging.getLogger(__name__)
COLUMNS = ("product_id", "seller_id", "title", "category", "price_thb", "condition_grade", "lat", "lon",
           "in_stock", "image_path")


def image_url(listing_id: int) -> str:
    return f"/v1/listings/{int(listing_id)}/image"


@dataclass(frozen=True)
class Catalogue:
    lake: Path
    ids: np.ndarray  # int64, sorted
    seller: np.ndarray
    title: np.ndarray  # object
    category: np.ndarray  # object (category names)
    price: np.ndarray  # float64
    condition: np.ndarray  # object
    lat: np.ndarray
    lon: np.ndarray
    in_stock: np.ndarray  # bool
    has_image: np.ndarray  # bool

    @classmethod
    def load(cls, lake: Path) -> Catalogue | None:
        """The lake's products table, or None (logged) when the service runs without a lake."""
        lake = lake_path(lake)  # a folder or s3://bucket/prefix
        path = lake / "products"
        try:
            fs, where = filesystem(path)
            t = pq.read_table(where, columns=list(COLUMNS), filesystem=fs)
        except (OSError, ValueError) as exc:
            log.warning("catalogue not loaded from %s: %s", path, exc)
            return None
        d = {c: t.column(c).to_numpy(zero_copy_only=False) for c in COLUMNS}
        order = np.argsort(d["product_id"], kind="stable")
        cat = d["category"][order]
        if cat.dtype.kind in "iu":
            cat = np.array([CATEGORIES[int(c)] for c in cat], dtype=object)
        img = np.array([bool(x) for x in d["image_path"][order]])
        return cls(lake, d["product_id"][order].astype(np.int64), d["seller_id"][order].astype(np.int64),
                   d["title"][order], cat, d["price_thb"][order].astype(np.float64),
                   d["condition_grade"][order].astype(str).astype(object), d["lat"][order].astype(np.float64),
                   d["lon"][order].astype(np.float64), d["in_stock"][order].astype(bool), img)

    def with_listings(self, recs: list[dict[str, Any]], latlong: np.ndarray) -> Catalogue:
        """This catalogue plus intake listings ``recs`` (:func:`intake_record`; ids above the highest held,
        ids held already skipped) at ``latlong`` [n, 2]."""
        top = int(self.ids[-1]) if len(self.ids) else -1
        keep = [i for i, r in enumerate(recs) if int(r["listing_id"]) > top]
        if not keep:
            return self
        rs = [recs[i] for i in keep]

        def cat(old: np.ndarray, new: list, dtype=None) -> np.ndarray:
            return np.concatenate([old, np.array(new, dtype=dtype if dtype is not None else old.dtype)])

        return Catalogue(self.lake, cat(self.ids, [r["listing_id"] for r in rs]),
                         cat(self.seller, [r["seller_id"] for r in rs]), cat(self.title, [r["title"] for r in rs]),
                         cat(self.category, [r["category"] for r in rs]), cat(self.price, [r["price_thb"] for r in rs]),
                         cat(self.condition, [r.get("condition_grade") or "" for r in rs]),
                         cat(self.lat, [float(latlong[i, 0]) for i in keep]),
                         cat(self.lon, [float(latlong[i, 1]) for i in keep]),
                         cat(self.in_stock, [True] * len(rs)),
                         cat(self.has_image, [r.get("image_url") is not None for r in rs]))

    def positions(self, pids: np.ndarray) -> np.ndarray:
        """Row of each id, -1 where the catalogue has none."""
        pids = np.asarray(pids, np.int64)
        if not len(self.ids):
            return np.full(len(pids), -1, np.int64)
        pos = np.clip(np.searchsorted(self.ids, pids), 0, len(self.ids) - 1)
        return np.where(self.ids[pos] == pids, pos, -1)

    def has(self, pid: int) -> bool:
        return bool(self.positions(np.array([pid]))[0] >= 0)

    def record(self, pid: int) -> dict[str, Any] | None:
        j = int(self.positions(np.array([pid]))[0])
        if j < 0:
            return None
        return {"listing_id": int(pid), "source": "catalogue",
                "status": "live" if self.in_stock[j] else "sold", "seller_id": int(self.seller[j]),
                "title": str(self.title[j]), "price_thb": round(float(self.price[j]), 2),
                "category": str(self.category[j]), "condition_grade": str(self.condition[j]),
                "lat": round(float(self.lat[j]), 5), "lon": round(float(self.lon[j]), 5),
                "image_url": image_url(pid) if self.has_image[j] else None}

    def image_path(self, pid: int) -> Path | None:
        j = int(self.positions(np.array([pid]))[0])
        if j < 0 or not self.has_image[j]:
            return None
        p = self.lake / "images" / f"{int(pid)}.png"
        return p if p.is_file() else None

    def decorate(self, items: list[dict[str, Any]], geo: tuple[float, float] | None) -> None:
        """Add title, price_thb, category, image_url and distance_km (None without the user's place) to
        ranked items in place."""
        if not items:
            return
        pids = np.array([it["product_id"] for it in items], np.int64)
        pos = self.positions(pids)
        ok = pos >= 0
        dist = None
        if geo is not None and ok.any():
            p = np.where(ok, pos, 0)
            dist = haversine_km(float(geo[0]), float(geo[1]), self.lat[p], self.lon[p], xp=np)
        for i, it in enumerate(items):
            j = int(pos[i])
            if j < 0:
                it.update(title=None, price_thb=None, category=None, image_url=None, distance_km=None)
                continue
            it.update(title=str(self.title[j]), price_thb=round(float(self.price[j]), 2),
                      category=str(self.category[j]), image_url=image_url(pids[i]) if self.has_image[j] else None,
                      distance_km=None if dist is None else round(float(dist[i]), 2))


def intake_record(r: Any, listing_id: int) -> dict[str, Any] | None:
    raw = r.hgetall(listing_key(listing_id))
    return intake_fields(raw, listing_id) if raw else None


def intake_fields(raw: dict, listing_id: int) -> dict[str, Any]:
    """An intake listing's record from its raw ``jk:listing:{id}`` hash."""
    h = decode_hash(raw)
    return {"listing_id": int(listing_id), "source": "intake", "status": h.get("status"),
            "seller_id": int(h.get("seller_id", -1)), "title": h.get("title"),
            "price_thb": float(h.get("price_thb", 0)), "category": h.get("category"),
            "condition_grade": h.get("condition_grade"),
            "lat": float(h["lat"]) if h.get("lat") else None, "lon": float(h["lon"]) if h.get("lon") else None,
            "image_url": image_url(listing_id) if h.get("has_image") == "1" else None,
            "safety_score": float(h["safety_score"]) if h.get("safety_score") else None,
            "fraud_score": float(h["fraud_score"]) if h.get("fraud_score") else None,
            "moderation": h.get("moderation")}


def listing_record(r: Any, catalogue: Catalogue | None, listing_id: int) -> dict[str, Any] | None:
    """A listing from intake or the catalogue (None: unknown)."""
    rec = intake_record(r, listing_id)
    if rec is None and catalogue is not None:
        rec = catalogue.record(listing_id)
    return rec


def live_product_rows(recs: list[dict[str, Any]], mirror: Any, space: Any) -> dict[str, np.ndarray]:
    """Product features of intake listings ``recs`` for the product mirror: the listing's own fields
    (category, price, place, fraud score), its title's cold-start vector in the snapshot's embedding space
    (:class:`engines.embeddings.TitleSpace`, as the nightly embeds a listing without clicks; zeros without
    one), the seller's trust as the snapshot scores the seller's other listings, and the schema's defaults
    for the rest (quality, condition, popularity 0). Place: the listing's lat/lon, else where the seller's
    catalogue listings are, else none (the schema default; the distance filter then drops it from feeds).

    Returns ``rows`` (PRODUCT_DAILY packed, float32 [n, width]), ``seller`` (int64), ``region`` (int32),
    ``latlong`` (float64 [n, 2], NaN where unknown)."""
    from gpu_core.geo import region_of
    from gpu_core.schema import FEATURE_BY_NAME, PRODUCT_DAILY

    n = len(recs)
    seller = np.array([int(r["seller_id"]) for r in recs], np.int64)
    host = {k: np.asarray(v.get() if hasattr(v, "get") else v) for k, v in mirror.cols.items()
            if k in ("seller_trust_score", "latlong")}
    trust = np.full(n, FEATURE_BY_NAME["seller_trust_score"].default, np.float32)
    latlong = np.full((n, 2), np.nan)
    for i, r in enumerate(recs):
        own = np.flatnonzero(mirror.seller == seller[i])
        if len(own):
            trust[i] = host["seller_trust_score"][own[0]]
        if r.get("lat") is not None and r.get("lon") is not None:
            latlong[i] = (r["lat"], r["lon"])
        elif len(own):
            latlong[i] = host["latlong"][own[0]]
    known = ~np.isnan(latlong[:, 0])
    titles = [str(r.get("title") or "") for r in recs]
    emb = space.embed(titles) if space is not None else None
    cols = {
        "embedding_vector": emb, "seller_trust_score": trust,
        "category": np.array([CATEGORIES.index(r["category"]) if r.get("category") in CATEGORIES else -1
                              for r in recs], np.float32),
        "price_thb": np.array([float(r.get("price_thb") or 0.0) for r in recs], np.float32),
        "latlong": np.where(known[:, None], latlong, FEATURE_BY_NAME["latlong"].default).astype(np.float32),
        "fraud_score": np.array([float(r.get("fraud_score") or 0.0) for r in recs], np.float32),
    }
    rows = PRODUCT_DAILY.pack({k: v for k, v in cols.items() if v is not None}, n)
    region = np.where(known, region_of(np.nan_to_num(latlong[:, 0]), np.nan_to_num(latlong[:, 1])), 0).astype(np.int32)
    return {"rows": rows, "seller": seller, "region": region, "latlong": latlong}
