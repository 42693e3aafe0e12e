"""The model's input matrix, as one table of name -> expression over raw feature columns.

The order of :data:`FEATURE_TABLE` *is* the column order of the matrix (:data:`MODEL_FEATURES`), so
training rows (the batch ETL, one row per impression) and serving rows (one per candidate) cannot
drift apart: both call :func:`assemble_matrix` with the raw columns the feature store holds.

    >>> X = assemble_matrix(columns, xp=numpy)   # float32 [n, len(MODEL_FEATURES)]

Per-row inputs have shape ``(n,)`` / ``(n, k)``; user and context inputs may also be given once per
request (shape ``()`` / ``(k,)``) and are broadcast over the rows (a view, no copy). Every input in
:data:`ASSEMBLY_INPUTS` must be present except those in :data:`OPTIONAL_INPUTS` (0 when absent):
a missing column is a :class:`KeyError` naming it, never a silent default.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kernels._xp import get_xp
from kernels.geo import haversine_km

TOP_CATEGORY_WEIGHTS = (1.0, 0.67, 0.33)  # affinity of the user's 1st / 2nd / 3rd top category
# Text relevance of a listing to the request's query (engines.search.index.SearchIndex.relevance computes
# them, for training rows and served candidates alike); 0 without a query (the feed).
TEXT_FEATURES: tuple[str, ...] = ("text_bm25", "text_coverage", "text_all_required", "text_phrase",
                                  "text_brand_match", "text_category_match", "text_condition_match")
OPTIONAL_INPUTS: dict[str, float] = dict.fromkeys(TEXT_FEATURES, 0.0)


class _Env:
    """Column access for the expressions: float32 columns, per-request scalars broadcast to n rows."""

    def __init__(self, cols: Mapping[str, Any], xp: Any):
        self.cols, self.xp = cols, xp
        self.category = xp.asarray(self._get("category"), dtype=xp.int32)
        self.n = self.category.shape[0]

    def _get(self, name: str) -> Any:
        v = self.cols.get(name)
        if v is None:
            if name not in OPTIONAL_INPUTS:
                raise KeyError(f"assemble_matrix: input column {name!r} is missing")
            v = OPTIONAL_INPUTS[name]
        return v

    def raw(self, name: str, dtype: Any = None) -> Any:
        return self.xp.asarray(self._get(name), dtype=dtype if dtype is not None else self.xp.float32)

    def row(self, name: str) -> Any:
        """A scalar-per-row column, broadcast when given once per request."""
        a = self.raw(name)
        return self.xp.broadcast_to(a, (self.n,)) if a.ndim == 0 else a


def _log1p_pos(v: Any, xp: Any) -> Any:
    return xp.log1p(xp.maximum(v, 0.0))


def _price_ratio(e: _Env) -> Any:
    xp, n = e.xp, e.n
    price = e.row("price_thb")
    avg = e.raw("avg_category_price_history")
    width = avg.shape[-1] if avg.ndim else 0
    cat = xp.clip(e.category, 0, max(width - 1, 0))
    if avg.ndim == 1:  # one history for the whole request
        cat_price = xp.take(avg, cat, axis=0) if width else xp.zeros((n,), dtype=xp.float32)
    else:  # per-row history [n, k]
        cat_price = xp.take_along_axis(avg, xp.reshape(cat, (n, 1)), axis=1)[:, 0]
    return xp.where(cat_price > 0, price / xp.maximum(cat_price, 1.0), 1.0)


def _category_affinity(e: _Env) -> Any:
    xp, n = e.xp, e.n
    top = e.raw("top_categories_30d", xp.int32)
    k = len(TOP_CATEGORY_WEIGHTS)
    top = xp.broadcast_to(top, (n, k)) if top.ndim == 1 else top
    weights = xp.asarray(TOP_CATEGORY_WEIGHTS, dtype=xp.float32)
    return xp.max(xp.where(top == xp.reshape(e.category, (n, 1)), weights, 0.0), axis=1)


def _last_viewed_match(e: _Env) -> Any:
    xp = e.xp
    last = e.raw("last_viewed_category", xp.int32)
    last = xp.broadcast_to(last, (e.n,)) if last.ndim == 0 else last
    return xp.astype(last == e.category, xp.float32)


def _user_item_similarity(e: _Env) -> Any:
    xp = e.xp
    item = e.raw("embedding_vector")
    user = e.raw("user_embedding")
    if item.ndim == 0:
        return xp.zeros((e.n,), dtype=xp.float32)
    # one user for the request is broadcast (a view, no copy); vecdot/vector_norm run the same
    # arithmetic whether the user column is per row (training) or once (serving): equal results
    user = xp.broadcast_to(user, item.shape)
    dot = xp.linalg.vecdot(item, user, axis=-1)
    norm = xp.linalg.vector_norm(item, axis=-1) * xp.linalg.vector_norm(user, axis=-1)
    return xp.where(norm > 0, dot / xp.maximum(norm, 1e-12), 0.0)


def _distance_km(e: _Env) -> Any:
    xp, n = e.xp, e.n
    item = e.raw("latlong")
    user = e.raw("user_geo_latlong")
    if user.ndim == 1:
        user = xp.broadcast_to(xp.reshape(user, (1, 2)), (n, 2))
    return haversine_km(user[:, 0], user[:, 1], item[:, 0], item[:, 1], xp=xp)


def _hour_angle(e: _Env) -> Any:
    return e.row("time_of_day") * (2.0 * math.pi / 24.0)


@dataclass(frozen=True)
class ModelFeature:
    name: str
    inputs: tuple[str, ...]
    expr: Callable[[_Env], Any]
    doc: str = ""


def _plain(name: str, doc: str = "") -> ModelFeature:
    return ModelFeature(name, (name,), lambda e: e.row(name), doc)


def _log(name: str, source: str, doc: str) -> ModelFeature:
    return ModelFeature(name, (source,), lambda e: _log1p_pos(e.row(source), e.xp), doc)


FEATURE_TABLE: tuple[ModelFeature, ...] = (
    _plain("quality_score"),
    _plain("condition_grade", "ordinal code of CONDITION_GRADES"),
    _plain("seller_trust_score"),
    _log("log_price", "price_thb", "log1p(price_thb)"),
    ModelFeature("price_ratio", ("price_thb", "category", "avg_category_price_history"), _price_ratio,
                 "price / median price of the category (1 without a history)"),
    ModelFeature("category", ("category",), lambda e: e.xp.astype(e.category, e.xp.float32)),
    _plain("views_last_hour"),
    _plain("ctr_last_hour"),
    _plain("is_boosted_now"),
    _log("log_popularity", "popularity", "log1p(clicks in the last 7 days)"),
    ModelFeature("category_affinity", ("category", "top_categories_30d"), _category_affinity,
                 "1.0 / 0.67 / 0.33 if the category is the user's 1st/2nd/3rd top category"),
    ModelFeature("last_viewed_match", ("category", "last_viewed_category"), _last_viewed_match),
    _plain("session_clicks_last_5m"),
    ModelFeature("user_item_similarity", ("embedding_vector", "user_embedding"), _user_item_similarity,
                 "cosine(user_embedding, embedding_vector)"),
    ModelFeature("distance_km", ("latlong", "user_geo_latlong"), _distance_km, "haversine, user to listing"),
    _plain("age_group"),
    _plain("gender"),
    _log("log_lifetime_spend", "lifetime_spend", "log1p(lifetime_spend)"),
    _plain("device_type"),
    ModelFeature("hour_sin", ("time_of_day",), lambda e: e.xp.sin(_hour_angle(e))),
    ModelFeature("hour_cos", ("time_of_day",), lambda e: e.xp.cos(_hour_angle(e))),
    ModelFeature("is_holiday", ("holiday_calendar",), lambda e: e.row("holiday_calendar")),
    _plain("text_bm25", "BM25 of the title field: per required/condition term, its best spelling"),
    _plain("text_coverage", "IDF-weighted share of the query's required terms the listing has"),
    _plain("text_all_required", "1 when every required term (any synonym) is in the title or category"),
    _plain("text_phrase", "1 when the query's required words appear together, in order, in the title"),
    _plain("text_brand_match", "share of the query's brands the title names"),
    _plain("text_category_match", "1 when the listing's category is one the query's words imply"),
    _plain("text_condition_match", "share of the query's condition words (มือสอง, like new) in the title"),
)
MODEL_FEATURES: tuple[str, ...] = tuple(f.name for f in FEATURE_TABLE)
N_MODEL_FEATURES = len(MODEL_FEATURES)
ASSEMBLY_INPUTS: tuple[str, ...] = tuple(dict.fromkeys(i for f in FEATURE_TABLE for i in f.inputs))


def feature_index(name: str) -> int:
    """Column of ``name`` in the model matrix."""
    return MODEL_FEATURES.index(name)


def assemble_matrix(cols: Mapping[str, Any], xp: Any = None) -> Any:
    """Raw feature columns -> model input matrix, float32 [n, N_MODEL_FEATURES] (row count = len(category))."""
    if xp is None:  # a namespace given (numpy, cupy, array_api_strict) is used as is: no wrapper cost
        xp = get_xp(*[v for v in cols.values() if hasattr(v, "shape")])
    e = _Env(cols, xp)
    out = []
    for f in FEATURE_TABLE:
        v = xp.asarray(f.expr(e))
        out.append(xp.astype(xp.broadcast_to(v, (e.n,)) if v.ndim == 0 else v, xp.float32))
    return xp.stack(out, axis=1)
