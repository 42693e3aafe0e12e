"""The feature schema, as code, written once and used by training and serving (the Feast idea).

Three entities (User, Product, Context). Each :class:`Feature` has an owner entity, a dtype, a
default, a freshness (``daily`` batch or ``realtime`` < 1 s) and its source. Feature views group
the features of one entity and freshness; they are what the stores read and write.

The model does not consume raw features directly: its input matrix is a table of name ->
expression over these raw columns, :mod:`kernels.features` (``MODEL_FEATURES``,
``assemble_matrix``), called by the batch trainer (one row per impression, point-in-time features)
and by the online scorer (one row per candidate), so training/serving skew is testable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

# ----------------------------------------------------------------------------------------------
# Vocabularies (codes are the index; 0-based, stable: append only)
CATEGORIES: tuple[str, ...] = (
    "fashion",
    "electronics",
    "mobile_phones",
    "home_garden",
    "baby_kids",
    "sports",
    "books_hobbies",
    "vehicles_parts",
    "beauty",
    "pets",
    "collectibles",
    "furniture",
)
AGE_GROUPS: tuple[str, ...] = ("18-24", "25-34", "35-44", "45-54", "55+")
GENDERS: tuple[str, ...] = ("female", "male", "other")
DEVICE_TYPES: tuple[str, ...] = ("android", "ios", "web")
CONDITION_GRADES: tuple[str, ...] = ("for_parts", "fair", "good", "like_new", "new")  # ordinal 0..4
EVENT_TYPES: tuple[str, ...] = ("impression", "click", "add_to_cart", "order")
EMBEDDING_DIM = 64
TOP_CATEGORIES = 3  # top_categories_30d keeps the 3 most-clicked categories (-1 = none)


def code_of(vocab: tuple[str, ...], values, default: int = -1) -> np.ndarray:
    """Vectorised string -> code lookup (unknown -> ``default``)."""
    index = {v: i for i, v in enumerate(vocab)}
    return np.fromiter((index.get(v, default) for v in values), dtype=np.int32, count=len(values))


class Entity(StrEnum):
    USER = "user"
    PRODUCT = "product"
    CONTEXT = "context"


class Freshness(StrEnum):
    DAILY = "daily"  # batch, materialised nightly as a versioned snapshot
    REALTIME = "realtime"  # stream processor, visible < 1 s


@dataclass(frozen=True)
class Feature:
    name: str
    entity: Entity
    dtype: str  # float32 | int32 | str | int32[3] | float32[64] | float32[2]
    default: Any
    freshness: Freshness
    source: str
    ttl_s: int | None = None  # how long a value may be served; None = until the next snapshot

    @property
    def width(self) -> int:
        """Number of float32 slots the feature takes in a packed row (0 = not packed)."""
        if self.dtype == "str":
            return 0
        if "[" in self.dtype:
            return int(self.dtype.split("[")[1].rstrip("]"))
        return 1


D, R = Freshness.DAILY, Freshness.REALTIME
U, P, C = Entity.USER, Entity.PRODUCT, Entity.CONTEXT

# The seed's table is the minimum; extra columns (price, location, user vector) are marked.
FEATURES: tuple[Feature, ...] = (
    # ---- User
    Feature("age_group", U, "int32", -1, D, "users.age_group (code of AGE_GROUPS)"),
    Feature("gender", U, "int32", -1, D, "users.gender (code of GENDERS)"),
    Feature("lifetime_spend", U, "float32", 0.0, D, "sum of order price_thb before the day"),
    Feature("top_categories_30d", U, "int32[3]", -1, D, "3 most-clicked category codes, last 30 days"),
    Feature("user_embedding", U, "float32[64]", 0.0, D, "mean of product vectors the user clicked (extra)"),
    Feature("home_latlong", U, "float32[2]", 0.0, D, "users.home_lat/home_lon (extra)"),
    Feature("max_distance_km", U, "float32", 500.0, D, "users.max_distance_km (extra)"),
    Feature("session_clicks_last_5m", U, "int32", 0, R, "clicks by the user in the last 5 minutes", 300),
    Feature("current_search_query", U, "str", "", R, "last search query of the session", 1800),
    Feature("last_viewed_category", U, "int32", -1, R, "category code of the last clicked product", 1800),
    # ---- Product
    Feature("embedding_vector", P, "float32[64]", 0.0, D, "64-d vector from interactions or text"),
    Feature("quality_score", P, "float32", 0.5, D, "products.quality_score"),
    Feature("condition_grade", P, "int32", 2, D, "products.condition_grade (ordinal code)"),
    Feature("seller_trust_score", P, "float32", 0.5, D, "seller trust from verified ID, reports, age"),
    Feature("category", P, "int32", -1, D, "products.category code (extra)"),
    Feature("price_thb", P, "float32", 0.0, D, "products.price_thb (extra)"),
    Feature("latlong", P, "float32[2]", 0.0, D, "products.lat/lon (extra)"),
    Feature("popularity", P, "float32", 0.0, D, "clicks in the last 7 days (extra; popularity fallback)"),
    Feature("fraud_score", P, "float32", 0.0, D, "risk from price anomaly and seller trust (extra; re-rank)"),
    Feature("views_last_hour", P, "float32", 0.0, R, "clicks on the listing in the last hour", 3600),
    Feature("ctr_last_hour", P, "float32", 0.0, R, "smoothed clicks/impressions, last hour", 3600),
    Feature("is_boosted_now", P, "float32", 0.0, R, "listing boosted by the auto-boost or an admin"),
    Feature("stock_status", P, "float32", 1.0, R, "1 in stock, 0 sold"),
    # ---- Context
    Feature("holiday_calendar", C, "float32", 0.0, D, "1 on Thai public holidays"),
    Feature("avg_category_price_history", C, "float32[12]", 0.0, D, "median price per category, 30 d"),
    Feature("user_geo_latlong", C, "float32[2]", 0.0, R, "request lat/lon (falls back to home)"),
    Feature("time_of_day", C, "float32", 12.0, R, "hour of day in Asia/Bangkok, fractional"),
    Feature("device_type", C, "int32", -1, R, "code of DEVICE_TYPES"),
)
FEATURE_BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}


@dataclass(frozen=True)
class FeatureView:
    name: str
    entity: Entity
    freshness: Freshness
    features: tuple[Feature, ...]

    @property
    def packed(self) -> tuple[Feature, ...]:
        return tuple(f for f in self.features if f.width > 0)

    @property
    def width(self) -> int:
        return sum(f.width for f in self.packed)

    def slices(self) -> dict[str, slice]:
        """Where each packed feature sits in a float32 row of this view."""
        out, at = {}, 0
        for f in self.packed:
            out[f.name] = slice(at, at + f.width)
            at += f.width
        return out

    def pack(self, columns: Mapping[str, Any], n: int) -> np.ndarray:
        """Raw columns -> float32 [n, width] (missing columns take the default)."""
        out = np.empty((n, self.width), dtype=np.float32)
        for f, sl in zip(self.packed, self.slices().values(), strict=True):
            v = columns.get(f.name)
            if v is None:
                out[:, sl] = f.default
            else:
                out[:, sl] = np.asarray(v, dtype=np.float32).reshape(n, -1)
        return out

    def unpack(self, rows) -> dict[str, Any]:
        """float32 [n, width] -> raw columns (vectors stay 2-d, scalars 1-d)."""
        out = {}
        for f, sl in zip(self.packed, self.slices().values(), strict=True):
            out[f.name] = rows[:, sl] if f.width > 1 else rows[:, sl.start]
        return out


def _view(name: str, entity: Entity, freshness: Freshness) -> FeatureView:
    feats = tuple(f for f in FEATURES if f.entity == entity and f.freshness == freshness)
    return FeatureView(name, entity, freshness, feats)


USER_DAILY = _view("user_daily", U, D)
USER_REALTIME = _view("user_realtime", U, R)
PRODUCT_DAILY = _view("product_daily", P, D)
PRODUCT_REALTIME = _view("product_realtime", P, R)
CONTEXT_DAILY = _view("context_daily", C, D)
CONTEXT_REALTIME = _view("context_realtime", C, R)
FEATURE_VIEWS: tuple[FeatureView, ...] = (
    USER_DAILY,
    USER_REALTIME,
    PRODUCT_DAILY,
    PRODUCT_REALTIME,
    CONTEXT_DAILY,
    CONTEXT_REALTIME,
)


def with_defaults(columns: Mapping[str, Any]) -> dict[str, Any]:
    """``columns`` plus the declared default of every numeric feature it lacks (a scalar, broadcast by the
    matrix assembly): for callers that hold only some columns, explicitly, never inside the assembly."""
    return {**{f.name: f.default for f in FEATURES if f.dtype != "str"}, **columns}
