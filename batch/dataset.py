"""Daily feature views and model input matrices, from the offline feature tables.

:func:`daily_views` gives, for one day, the raw columns of the USER_DAILY, PRODUCT_DAILY and
CONTEXT_DAILY views. The materialiser packs exactly these into Redis; the trainer joins them to the
impressions of that day and calls :func:`kernels.features.assemble_matrix` — the same function the
online scorer calls — so offline and online vectors are equal for the same entity and time.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from batch.embeddings import USER_VECTOR_DAYS, read_clicks, read_product_vectors, user_vectors
from batch.etl import features_dir, index_of, read_partition
from batch.fraud import score_products
from batch.lake import read_parquet
from gpu_core.errors import LakeError
from gpu_core.schema import CATEGORIES, FEATURE_BY_NAME, TOP_CATEGORIES
from kernels.features import TEXT_FEATURES, assemble_matrix


@dataclass
class DailyViews:
    day: dt.date
    user_ids: np.ndarray
    user: dict[str, np.ndarray]
    product_ids: np.ndarray
    product: dict[str, np.ndarray]
    context: dict[str, np.ndarray]
    product_seller: np.ndarray
    product_region: np.ndarray
    product_extra: pd.DataFrame  # title, in_stock, seller_banned (for indexes and filters)


def read_dims(lake: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    dims = features_dir(lake) / "dims"
    if not (dims / "products.parquet").exists():
        raise LakeError(f"missing {dims}: run `jaikod batch etl` first", field="lake")
    return read_parquet(dims / "products.parquet"), read_parquet(dims / "users.parquet")


def daily_views(lake: Path, day: dt.date, dims: tuple[pd.DataFrame, pd.DataFrame] | None = None,
                vectors: tuple[np.ndarray, np.ndarray] | None = None) -> DailyViews:
    products, users = dims if dims is not None else read_dims(lake)
    vec_ids, vecs = vectors if vectors is not None else read_product_vectors(lake)
    ud = read_partition(lake, "user_daily", day).sort_values("user_id", ignore_index=True)
    pd_ = read_partition(lake, "product_daily", day).sort_values("product_id", ignore_index=True)
    ctx = read_partition(lake, "context_daily", day)
    pids = products["product_id"].to_numpy()
    if not np.array_equal(pd_["product_id"].to_numpy(), pids):
        raise LakeError(f"product_daily/date={day} does not match the product dimension; re-run etl",
                        field="product_daily")
    vi = index_of(vec_ids, pids)
    emb = np.zeros((len(pids), vecs.shape[1]), dtype=np.float32)
    emb[vi >= 0] = vecs[vi[vi >= 0]]
    window = [day - dt.timedelta(days=k) for k in range(1, USER_VECTOR_DAYS + 1)]
    uids = ud["user_id"].to_numpy()
    uvec = user_vectors(read_clicks(lake, window), uids, pids, emb)
    user = {
        "age_group": ud["age_group"].to_numpy(np.float32),
        "gender": ud["gender"].to_numpy(np.float32),
        "lifetime_spend": ud["lifetime_spend"].to_numpy(np.float32),
        "top_categories_30d": ud[[f"top_cat_{k}" for k in range(TOP_CATEGORIES)]].to_numpy(np.int32),
        "user_embedding": uvec,
        "home_latlong": ud[["home_lat", "home_lon"]].to_numpy(np.float32),
        "max_distance_km": ud["max_distance_km"].to_numpy(np.float32),
    }
    product = {
        "embedding_vector": emb,
        "quality_score": products["quality_score"].to_numpy(np.float32),
        "condition_grade": products["condition_grade"].to_numpy(np.float32),
        "seller_trust_score": (pd_ if "seller_trust_score" in pd_ else products)["seller_trust_score"].to_numpy(
            np.float32),  # as of the day
        "category": products["category"].to_numpy(np.int32),
        "price_thb": products["price_thb"].to_numpy(np.float32),
        "latlong": products[["lat", "lon"]].to_numpy(np.float32),
        "popularity": pd_["popularity"].to_numpy(np.float32),
    }
    avg_prices = ctx[[f"avg_price_{c}" for c in range(len(CATEGORIES))]].to_numpy(np.float32)[0]
    product["fraud_score"] = score_products(products, avg_prices, lake).score  # batch fraud scoring
    context = {
        "holiday_calendar": np.float32(ctx["holiday_calendar"].iloc[0]),
        "avg_category_price_history": ctx[[f"avg_price_{c}" for c in range(len(CATEGORIES))]].to_numpy(
            np.float32)[0],
    }
    return DailyViews(day, uids, user, pids, product, context, products["seller_id"].to_numpy(np.int64),
                      products["region"].to_numpy(np.int32),
                      products[["product_id", "title", "in_stock", "seller_banned", "category", "lat", "lon"]])


@dataclass
class TrainingSet:
    X: np.ndarray
    label_click: np.ndarray
    label_conv: np.ndarray
    request: np.ndarray  # group id per row
    popularity: np.ndarray
    seller_trust: np.ndarray
    boosted: np.ndarray
    rows: pd.DataFrame

    def __len__(self) -> int:
        return len(self.label_click)

    def subset(self, mask: np.ndarray) -> TrainingSet:
        """The rows where ``mask`` is true (request group ids kept)."""
        return TrainingSet(self.X[mask], self.label_click[mask], self.label_conv[mask], self.request[mask],
                           self.popularity[mask], self.seller_trust[mask], self.boosted[mask],
                           self.rows[mask].reset_index(drop=True))


def row_columns(rows: pd.DataFrame, views: DailyViews) -> dict[str, np.ndarray]:
    """Raw feature columns (ASSEMBLY_INPUTS) for training rows of ``views.day``."""
    ui = index_of(views.user_ids, rows["user_id"].to_numpy(np.int64))
    pi = index_of(views.product_ids, rows["product_id"].to_numpy(np.int64))
    if (pi < 0).any():
        bad = int(rows["product_id"].to_numpy()[pi < 0][0])
        raise LakeError(f"training rows of {views.day} reference unknown product_id {bad}", field="product_id")
    cols: dict[str, np.ndarray] = {k: v[pi] for k, v in views.product.items()}
    uok = ui >= 0
    uix = np.where(uok, ui, 0)
    for k, v in views.user.items():
        col = v[uix].copy()
        col[~uok] = FEATURE_BY_NAME[k].default  # an unknown user gets the schema defaults, as online
        cols[k] = col
    cols["user_geo_latlong"] = cols.pop("home_latlong")
    cols["holiday_calendar"] = np.full(len(rows), views.context["holiday_calendar"], dtype=np.float32)
    cols["avg_category_price_history"] = views.context["avg_category_price_history"]
    for k in ("views_last_hour", "ctr_last_hour", "session_clicks_last_5m", "last_viewed_category",
              *TEXT_FEATURES, "device_type", "time_of_day"):
        cols[k] = rows[k].to_numpy()
    cols["is_boosted_now"] = np.zeros(len(rows), dtype=np.float32)
    return cols


def training_set(lake: Path, days: list[dt.date]) -> TrainingSet:
    dims = read_dims(lake)
    vectors = read_product_vectors(lake)
    parts = []
    for d in days:
        try:
            rows = read_partition(lake, "training", d)
        except LakeError:
            continue
        views = daily_views(lake, d, dims, vectors)
        cols = row_columns(rows, views)
        parts.append((rows.assign(_day=d.isoformat()), assemble_matrix(cols, xp=np), cols["popularity"],
                      cols["seller_trust_score"]))
    if not parts:
        raise LakeError(f"no training rows for {days[0]}..{days[-1]} under {features_dir(lake) / 'training'}",
                        field="training")
    rows = pd.concat([p[0] for p in parts], ignore_index=True)
    group = pd.factorize(rows["request_id"])[0].astype(np.int64)
    return TrainingSet(np.concatenate([p[1] for p in parts]), rows["label_click"].to_numpy(np.float32),
                       rows["label_conv"].to_numpy(np.float32), group,
                       np.concatenate([p[2] for p in parts]), np.concatenate([p[3] for p in parts]),
                       np.zeros(len(rows), np.float32), rows)
