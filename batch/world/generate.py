"""Deterministic synthetic marketplace world → the Parquet data lake, written through Dask.

Layout written under ``out`` (contract: ../shared/API.md)::

    users/part-*.parquet     sellers/part-*.parquet     products/part-*.parquet
    events/date=YYYY-MM-DD/part-NNN.parquet   (hive partitions, one file per day chunk)
    images/<product_id>.png  (products.image_path = "images/<product_id>.png", or "" when not drawn)
    _hidden/                 hidden preference model (tests / benchmarks only, never a public table)
    _world.json              the build's WorldSummary

Ids are contiguous 1-based int64 (``user_id = user index + 1``; same for sellers and products).
Times are UTC (``timestamp[ms, UTC]``); diurnal patterns follow Asia/Bangkok hours (UTC+7).
An event lies in the ``date=`` partition of the UTC day of the request it follows; a click sampled
hours after a late impression may carry a ``ts`` just past that day's end (rare: Bangkok night).

Events come from sessions (diurnal, more on weekends) of 1..8 requests, feed or search, each showing
20 listings ranked by a "legacy ranker" (popular, category-matched, local and random candidates,
noisy popularity order); clicks, add-to-carts and orders are sampled from :mod:`batch.world.hidden`.
Each (day, chunk) partition is generated fully vectorised with its own numpy Generator
(``SeedSequence(seed, spawn_key=(day, chunk))``) as one Dask task, so the same seed gives the same
tables whatever the scheduler, and the large world never holds the whole events table in memory.
The build goes to a temporary sibling folder that is renamed into place only when complete.
``out`` may be ``s3://bucket/prefix``: every file is then one object PUT through the lake's filesystem
seam (:mod:`gpu_core.lake`), and the finished build is moved into place object by object.

Images: tiny draws every product; demo draws every 8th product (``product_id % 8 == 1``, 12.5k
images, since 100k PNGs take minutes on 2 cores) and large every 100th; the others have
``image_path == ""``.

    >>> summary = build_world("tiny", seed=0, out="var/lake")
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from dask.callbacks import Callback

from batch.world.hidden import HiddenModel, is_match, query_matches, sample_user_preferences
from batch.world.images import write_product_images
from batch.world.lexicon import DRIFT_QUERIES, EN_ADJECTIVES, QUERIES, TH_ADJECTIVES, TITLE_WORDS
from engines.search.analyzer import analyzer
from engines.search.stored import stored_query
from gpu_core.errors import ConfigError, LakeError
from gpu_core.geo import CITY_LAT, CITY_LON, CITY_WEIGHT, N_REGIONS, region_of
from gpu_core.lake import EVENTS_SCHEMA, AnyPath, lake_path, remove_tree, write_table
from gpu_core.schema import AGE_GROUPS, CATEGORIES, CONDITION_GRADES, DEVICE_TYPES, EVENT_TYPES, GENDERS

MODEL_VERSION = "legacy-0"
IMPRESSIONS_PER_REQUEST = 20
N_CANDIDATES = 30  # legacy ranker's candidate pool per request (deduplicated, top 20 shown)
N_CAT = len(CATEGORIES)
DAY_MS = 86_400_000
BANGKOK_UTC_OFFSET_H = 7

# Relative session starts per Bangkok hour (night low, lunch bump, evening peak).
# fmt: off
DIURNAL = np.array(
    [1.2, 0.6, 0.3, 0.2, 0.2, 0.4, 1.0, 2.0, 2.6, 2.8, 3.0, 3.4,
     4.2, 3.8, 3.2, 3.0, 3.2, 3.8, 4.6, 5.6, 6.2, 6.0, 4.6, 2.6], dtype=np.float64
)
# fmt: on
DIURNAL /= DIURNAL.sum()
WEEKDAY_FACTOR = np.array([0.95, 0.92, 0.95, 1.0, 1.08, 1.2, 1.2])  # Monday .. Sunday
# Category shares of listings (also the base of search interest).
CATEGORY_SHARE = np.array([0.18, 0.1, 0.1, 0.1, 0.07, 0.07, 0.08, 0.06, 0.08, 0.05, 0.05, 0.06])
CATEGORY_SHARE /= CATEGORY_SHARE.sum()
CATEGORY_MEDIAN_PRICE = np.array(
    [350, 4500, 6000, 800, 450, 900, 250, 1500, 300, 450, 1200, 2500], dtype=np.float64
)
CONDITION_SHARE = np.array([0.05, 0.15, 0.35, 0.3, 0.15])
CONDITION_PRICE = np.array([0.3, 0.6, 0.85, 1.0, 1.25])



@dataclass(frozen=True)
class WorldSize:
    n_users: int
    n_sellers: int
    n_products: int
    sessions_per_day: int  # expected, before weekday / drift factors
    sessions_per_chunk: int  # one events file (and one Dask task) per chunk of a day
    image_every: int  # draw images for product_id % image_every == 1 % image_every
    rows_per_file: int  # users / sellers / products rows per Parquet file


SIZES: dict[str, WorldSize] = {
    "tiny": WorldSize(500, 200, 2_000, 55, 10_000, 1, 100_000),
    "demo": WorldSize(20_000, 8_000, 100_000, 1_800, 1_000, 8, 50_000),
    "large": WorldSize(250_000, 60_000, 1_000_000, 38_000, 8_000, 100, 250_000),
}


@dataclass
class WorldSummary:
    size: str
    seed: int
    out: Path
    start_date: str
    days: int
    counts: dict[str, int]  # users, sellers, products, images, events
    events_by_type: dict[str, int]
    seconds: float
    drift_category: str | None = None
    drift_from_day: int | None = None
    partitions: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        d = asdict(self)
        d["out"] = str(self.out)
        return d


# ------------------------------------------------------------------------------------------------
# Static tables
def _ms(ts: pd.Timestamp) -> int:
    return int(ts.value // 1_000_000)


def _ts_array(ms: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(ms, dtype=np.int64), type=pa.timestamp("ms", tz="UTC"))


def _pick(vocab: tuple[str, ...], codes: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(vocab, dtype=object)[codes], type=pa.string())


def _users(rng: np.random.Generator, n: int, start_ms: int) -> tuple[pa.Table, dict[str, np.ndarray]]:
    city = rng.choice(len(CITY_WEIGHT), size=n, p=CITY_WEIGHT)
    spread = rng.uniform(0.1, 0.3, size=n)
    lat = CITY_LAT[city] + rng.normal(0.0, 1.0, n) * spread
    lon = CITY_LON[city] + rng.normal(0.0, 1.0, n) * spread
    age = rng.choice(len(AGE_GROUPS), size=n, p=[0.25, 0.32, 0.2, 0.13, 0.1])
    gender = rng.choice(len(GENDERS), size=n, p=[0.5, 0.47, 0.03])
    max_dist = np.where(rng.random(n) < 0.75, 500.0, rng.choice([50.0, 100.0, 200.0, 300.0], size=n))
    device = rng.choice(len(DEVICE_TYPES), size=n, p=[0.6, 0.3, 0.1])
    created = start_ms - (rng.uniform(1.0, 1000.0, n) * DAY_MS).astype(np.int64)
    table = pa.table(
        {
            "user_id": pa.array(np.arange(1, n + 1, dtype=np.int64)),
            "age_group": _pick(AGE_GROUPS, age),
            "gender": _pick(GENDERS, gender),
            "home_lat": pa.array(lat, type=pa.float64()),
            "home_lon": pa.array(lon, type=pa.float64()),
            "max_distance_km": pa.array(max_dist.astype(np.float32)),
            "device_type": _pick(DEVICE_TYPES, device),
            "created_at": _ts_array(created),
        }
    )
    return table, {"age": age, "gender": gender, "device": device, "lat": lat, "lon": lon}


def _sellers(rng: np.random.Generator, n: int, start_ms: int) -> tuple[pa.Table, dict[str, np.ndarray]]:
    city = rng.choice(len(CITY_WEIGHT), size=n, p=CITY_WEIGHT)
    lat = CITY_LAT[city] + rng.normal(0.0, 0.12, n)
    lon = CITY_LON[city] + rng.normal(0.0, 0.12, n)
    bad = rng.random(n) < 0.05
    reports = np.where(bad, rng.poisson(4.0, n), rng.poisson(0.3, n)).astype(np.int32)
    banned = rng.random(n) < np.where(bad, 0.1, 0.006)
    verified = rng.random(n) < np.where(bad, 0.2, 0.62)
    joined = start_ms - (rng.uniform(5.0, 1500.0, n) * DAY_MS).astype(np.int64)
    table = pa.table(
        {
            "seller_id": pa.array(np.arange(1, n + 1, dtype=np.int64)),
            "verified_id": pa.array(verified),
            "reports": pa.array(reports),
            "joined_at": _ts_array(joined),
            "banned": pa.array(banned),
        }
    )
    return table, {"lat": lat, "lon": lon, "joined": joined}


def _titles(rng: np.random.Generator, cat: np.ndarray) -> list[str]:
    n = len(cat)
    thai = rng.random(n) < 0.45
    r = rng.random((n, 4))
    out: list[str] = []
    for i in range(n):
        brands, en, th = TITLE_WORDS[CATEGORIES[cat[i]]]
        brand = brands[int(r[i, 0] * len(brands))]
        if thai[i]:
            noun = th[int(r[i, 1] * len(th))]
            adj = TH_ADJECTIVES[int(r[i, 2] * len(TH_ADJECTIVES))]
            out.append(f"{noun} {brand} {adj}" if r[i, 3] < 0.5 else f"{brand} {noun} {adj}")
        else:
            noun = en[int(r[i, 1] * len(en))]
            adj = EN_ADJECTIVES[int(r[i, 2] * len(EN_ADJECTIVES))]
            out.append(f"{brand} {noun} {adj}" if r[i, 3] < 0.7 else f"{adj.capitalize()} {brand} {noun}")
    return out


def _products(
    rng: np.random.Generator, n: int, sellers: dict[str, np.ndarray], start_ms: int, image_every: int
) -> tuple[pa.Table, dict[str, np.ndarray]]:
    n_sellers = len(sellers["lat"])
    seller_w = rng.lognormal(0.0, 1.0, n_sellers)
    seller = rng.choice(n_sellers, size=n, p=seller_w / seller_w.sum())
    seller_cat = rng.choice(N_CAT, size=n_sellers, p=CATEGORY_SHARE)
    cat = np.where(rng.random(n) < 0.7, seller_cat[seller], rng.choice(N_CAT, size=n, p=CATEGORY_SHARE))
    grade = rng.choice(len(CONDITION_GRADES), size=n, p=CONDITION_SHARE)
    price = CATEGORY_MEDIAN_PRICE[cat] * CONDITION_PRICE[grade] * rng.lognormal(0.0, 0.7, n)
    price = np.maximum(np.round(price / 10.0) * 10.0, 10.0)
    quality = np.clip(0.55 * rng.beta(4.0, 3.0, n) + 0.45 * grade / 4.0 + rng.normal(0, 0.05, n), 0.0, 1.0)
    lat = sellers["lat"][seller] + rng.normal(0.0, 0.05, n)
    lon = sellers["lon"][seller] + rng.normal(0.0, 0.05, n)
    in_stock = rng.random(n) < 0.95
    created = start_ms - (rng.uniform(0.0, 120.0, n) * DAY_MS).astype(np.int64)
    created = np.maximum(created, sellers["joined"][seller] + DAY_MS // 24)
    titles = _titles(rng, cat)
    pid = np.arange(1, n + 1, dtype=np.int64)
    has_image = (pid % image_every) == (1 % image_every)
    image_path = np.where(has_image, np.char.add(np.char.add("images/", pid.astype(str)), ".png"), "")
    table = pa.table(
        {
            "product_id": pa.array(pid),
            "seller_id": pa.array(seller.astype(np.int64) + 1),
            "title": pa.array(titles, type=pa.string()),
            "category": _pick(CATEGORIES, cat),
            "price_thb": pa.array(price, type=pa.float64()),
            "condition_grade": _pick(CONDITION_GRADES, grade),
            "quality_score": pa.array(quality.astype(np.float32)),
            "lat": pa.array(lat, type=pa.float64()),
            "lon": pa.array(lon, type=pa.float64()),
            "in_stock": pa.array(in_stock),
            "created_at": _ts_array(created),
            "image_path": pa.array(image_path.tolist(), type=pa.string()),
        }
    )
    return table, {
        "cat": cat,
        "grade": grade,
        "has_image": has_image,
        "quality": quality,
        "in_stock": in_stock,
    }


# ------------------------------------------------------------------------------------------------
# Events
@dataclass
class _EventContext:
    """Everything a (day, chunk) events task reads (read-only, shared by all tasks)."""

    seed: int
    start_ms: int
    model: HiddenModel
    affinity_cdf: np.ndarray  # [U, 12]
    activity_cdf: np.ndarray  # [U]
    user_device: np.ndarray  # [U] codes
    user_region: np.ndarray  # [U]
    product_category: np.ndarray  # [P]
    legacy_logpop: np.ndarray  # [P]
    pop_cdf: np.ndarray  # [P]
    cat_order: np.ndarray
    cat_start: np.ndarray
    cat_count: np.ndarray
    reg_order: np.ndarray
    reg_start: np.ndarray
    reg_count: np.ndarray
    query_flat: np.ndarray  # object [Q]
    query_start: np.ndarray  # [12]
    query_count: np.ndarray  # [12]
    drift_flat: np.ndarray
    drift_start: np.ndarray
    drift_count: np.ndarray
    drift_category: int
    drift_from_day: int
    query_code: np.ndarray  # [Q] code of each query_flat entry in the relevance keys
    drift_code: np.ndarray  # [D] same for drift_flat
    match_keys: np.ndarray  # sorted query_code * P + product index of relevant (query, listing) pairs
    stored_queries: np.ndarray  # object [all queries]: the stored form of each query code


def _groups(codes: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.argsort(codes, kind="stable")
    count = np.bincount(codes, minlength=n_groups)
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    return order, start, count


def _flat(table: dict[str, tuple[str, ...]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lists = [table[c] for c in CATEGORIES]
    count = np.array([len(x) for x in lists])
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    return np.array([q for x in lists for q in x], dtype=object), start, count


def _sample_group(rng, order, start, count, group, fallback_n):
    """One member per element of ``group`` (uniform within the group; uniform overall if empty)."""
    c = count[group]
    pick = start[group] + np.floor(rng.random(group.shape) * np.maximum(c, 1)).astype(np.int64)
    out = order[np.minimum(pick, len(order) - 1)]
    return np.where(c > 0, out, rng.integers(0, fallback_n, size=group.shape))


def _sample_category(rng, cdf_rows: np.ndarray) -> np.ndarray:
    u = rng.random(cdf_rows.shape[0])[:, None]
    return np.minimum((cdf_rows < u).sum(axis=1), N_CAT - 1)


def _ids(prefix: str, n: int, width: int) -> pa.Array:
    if n == 0:
        return pa.array([], type=pa.string())
    digits = pc.utf8_lpad(pc.cast(pa.array(np.arange(n, dtype=np.int64)), pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, digits, "")


def generate_events(ctx: _EventContext, day: int, chunk: int, n_sessions: int) -> pa.Table:
    """Events of one (day, chunk) partition, fully vectorised, deterministic for (seed, day, chunk)."""
    rng = np.random.default_rng(np.random.SeedSequence(ctx.seed, spawn_key=(1, day, chunk)))
    model = ctx.model
    n_products = model.n_products
    day_ms = ctx.start_ms + day * DAY_MS
    tag = pd.Timestamp(day_ms, unit="ms").strftime("%Y%m%d") + f"-{chunk:03d}"
    drift = ctx.drift_category >= 0 and day >= ctx.drift_from_day

    # Sessions: user (by activity), Bangkok start hour (diurnal), device.
    n = n_sessions
    s_user = np.minimum(np.searchsorted(ctx.activity_cdf, rng.random(n), side="right"), model.n_users - 1)
    s_hour = rng.choice(24, size=n, p=DIURNAL) + rng.random(n)
    s_utc_ms = (((s_hour - BANGKOK_UTC_OFFSET_H) % 24.0) * 3_600_000).astype(np.int64)
    s_device = np.where(rng.random(n) < 0.9, ctx.user_device[s_user], rng.integers(0, len(DEVICE_TYPES), n))
    n_req = np.minimum(rng.geometric(0.45, size=n), 8)

    # Requests: time within the session, feed or search, the category they are about.
    r_total = int(n_req.sum())
    r_sess = np.repeat(np.arange(n), n_req)
    first = np.concatenate([[0], np.cumsum(n_req)[:-1]])
    gap = rng.exponential(75_000.0, r_total)
    gap[first] = 0.0
    cum = np.cumsum(gap)
    r_off = (cum - np.repeat(cum[first], n_req)).astype(np.int64)
    r_ms = day_ms + np.minimum(s_utc_ms[r_sess] + r_off, DAY_MS - 1)
    r_user = s_user[r_sess]
    r_hour = (s_hour[r_sess] + r_off / 3_600_000.0) % 24.0
    is_search = rng.random(r_total) < 0.3
    pref_cat = _sample_category(rng, ctx.affinity_cdf[r_user])
    rand_cat = rng.choice(N_CAT, size=r_total, p=CATEGORY_SHARE)
    q_cat = np.where(rng.random(r_total) < 0.8, pref_cat, rand_cat)
    feed_cat = np.where(rng.random(r_total) < 0.6, pref_cat, rand_cat)  # legacy's guess from history
    q_pick = rng.random(r_total)
    q_idx = ctx.query_start[q_cat] + (q_pick * ctx.query_count[q_cat]).astype(np.int64)
    query = ctx.query_flat[q_idx]
    q_code = ctx.query_code[q_idx]
    boost = None
    if drift:
        surge = rng.random(r_total) < 0.35
        is_search |= surge
        q_cat = np.where(surge, ctx.drift_category, q_cat)
        d_idx = ctx.drift_start[q_cat] + (q_pick * ctx.drift_count[q_cat]).astype(np.int64)
        query = np.where(surge, ctx.drift_flat[d_idx], query)
        q_code = np.where(surge, ctx.drift_code[d_idx], q_code)
        boost = np.zeros(N_CAT)
        boost[ctx.drift_category] = 0.8
    query = np.where(is_search, query, "")
    q_code = np.where(is_search, q_code, -1)
    r_cat = np.where(is_search, q_cat, feed_cat)

    # Legacy ranker: candidates from popular / category / local / random sources, noisy order.
    k = N_CANDIDATES
    src_p = np.where(is_search[:, None], [[0.1, 0.75, 0.1, 0.05]], [[0.35, 0.3, 0.25, 0.1]])
    src = (np.cumsum(src_p, axis=1)[:, None, :] < rng.random((r_total, k, 1))).sum(axis=2)
    cand_pop = np.minimum(
        np.searchsorted(ctx.pop_cdf, rng.random((r_total, k)), side="right"), n_products - 1
    )
    cat_rows = np.broadcast_to(r_cat[:, None], (r_total, k))
    cand_cat = _sample_group(rng, ctx.cat_order, ctx.cat_start, ctx.cat_count, cat_rows, n_products)
    reg_rows = np.broadcast_to(ctx.user_region[r_user][:, None], (r_total, k))
    cand_loc = _sample_group(rng, ctx.reg_order, ctx.reg_start, ctx.reg_count, reg_rows, n_products)
    cand_rand = rng.integers(0, n_products, size=(r_total, k))
    cand = np.choose(np.minimum(src, 3), [cand_pop, cand_cat, cand_loc, cand_rand]).astype(np.int64)
    match = ctx.product_category[cand] == r_cat[:, None]
    score = ctx.legacy_logpop[cand] + np.where(is_search[:, None], 2.0, 0.6) * match
    score = score + 0.7 * rng.gumbel(size=(r_total, k))
    srt = np.sort(cand, axis=1)  # drop duplicates of a product within a request
    order = np.argsort(cand, axis=1, kind="stable")
    dup_sorted = np.zeros_like(srt, dtype=bool)
    dup_sorted[:, 1:] = srt[:, 1:] == srt[:, :-1]
    dup = np.zeros_like(dup_sorted)
    np.put_along_axis(dup, order, dup_sorted, axis=1)
    score = np.where(dup, -np.inf, score)
    top = np.argsort(-score, axis=1, kind="stable")[:, :IMPRESSIONS_PER_REQUEST]
    shown = np.take_along_axis(cand, top, axis=1)
    valid = np.isfinite(np.take_along_axis(score, top, axis=1)).ravel()

    i_req = np.repeat(np.arange(r_total), IMPRESSIONS_PER_REQUEST)[valid]
    i_pos = np.tile(np.arange(1, IMPRESSIONS_PER_REQUEST + 1), r_total)[valid]
    i_prod = shown.ravel()[valid]
    i_user = r_user[i_req]
    i_ms = r_ms[i_req]

    # Clicks (hidden model, position bias included), then add-to-cart and order.
    q_cat_i = np.where(is_search, q_cat, -1)[i_req]
    relevant = is_match(ctx.match_keys, q_code[i_req], i_prod, n_products)  # title matches the query
    p_click = model.click_prob(
        i_user, i_prod, i_pos, r_hour[i_req], query_category=q_cat_i, category_boost=boost, query_match=relevant
    )
    c = np.flatnonzero(rng.random(len(i_req)) < p_click)
    mix = rng.random(len(c))
    delay = np.where(
        mix < 0.9,
        2_000.0 + rng.exponential(45_000.0, len(c)),
        np.where(
            mix < 0.96,
            rng.uniform(300_000.0, 3_600_000.0, len(c)),
            rng.uniform(3_600_000.0, 6 * 3_600_000.0, len(c)),
        ),
    )
    c_ms = i_ms[c] + delay.astype(np.int64)
    searched = q_cat_i >= 0
    a = c[rng.random(len(c)) < model.cart_prob(i_user[c], i_prod[c], np.where(searched[c], relevant[c], False))]
    a_sel = np.searchsorted(c, a)
    a_ms = c_ms[a_sel] + (5_000.0 + rng.exponential(120_000.0, len(a))).astype(np.int64)
    o_mask = rng.random(len(a)) < model.order_prob(i_user[a], i_prod[a], np.where(searched[a], relevant[a], False))
    o = a[o_mask]
    o_ms = a_ms[o_mask] + (30_000.0 + rng.exponential(600_000.0, len(o))).astype(np.int64)

    src_idx = np.concatenate([np.arange(len(i_req)), c, a, o])
    etype = np.concatenate(
        [np.full(len(i_req), 0), np.full(len(c), 1), np.full(len(a), 2), np.full(len(o), 3)]
    )
    ems = np.concatenate([i_ms, c_ms, a_ms, o_ms])
    ordr = np.lexsort((etype, ems))
    src_idx, etype, ems = src_idx[ordr], etype[ordr], ems[ordr]
    e_req = i_req[src_idx]

    request_ids = _ids(f"r{tag}-", r_total, 6)
    session_ids = _ids(f"s{tag}-", n, 6)
    return pa.table(
        {
            "event_id": _ids(f"e{tag}-", len(ems), 8),
            "event_type": _pick(EVENT_TYPES, etype),
            "ts": _ts_array(ems),
            "user_id": pa.array(i_user[src_idx] + 1, type=pa.int64()),
            "product_id": pa.array(i_prod[src_idx] + 1, type=pa.int64()),
            "request_id": request_ids.take(pa.array(e_req)),
            "position": pa.array(i_pos[src_idx].astype(np.int16)),
            "model_version": pa.array(np.full(len(ems), MODEL_VERSION, dtype=object), type=pa.string()),
            "session_id": session_ids.take(pa.array(r_sess[e_req])),
            "device_type": _pick(DEVICE_TYPES, s_device[r_sess[e_req]]),
            # the lake keeps a query's stored form (engines.search.stored), never the text typed
            "query": pa.array(np.append(ctx.stored_queries, "")[q_code[e_req]], type=pa.string()),
        },
        schema=EVENTS_SCHEMA,
    )


def _mkdir_inside(root: AnyPath, d: AnyPath) -> None:
    """Create ``d`` below ``root`` without ever re-creating ``root``: after a failed build removed its
    folder, a task still running on another thread fails instead of leaving a half-written lake. (Object
    stores have no folders: a late write there is removed by :func:`_remove_partial`.)"""
    if not isinstance(root, Path):
        return
    for part in [*reversed(d.relative_to(root).parents), d.relative_to(root)]:
        if str(part) != ".":
            (root / part).mkdir(exist_ok=True)  # no parents=True: a vanished root raises


def _write_events(ctx: _EventContext, day: int, chunk: int, n_sessions: int, path: Path) -> np.ndarray:
    table = generate_events(ctx, day, chunk, n_sessions)
    _mkdir_inside(path.parent.parent.parent, path.parent)
    write_table(table, path)
    codes = pc.index_in(table["event_type"], value_set=pa.array(EVENT_TYPES)).to_numpy(zero_copy_only=False)
    return np.bincount(codes, minlength=len(EVENT_TYPES))


def _write_table(table: pa.Table, path: Path) -> int:
    _mkdir_inside(path.parent.parent, path.parent)
    write_table(table, path)
    return table.num_rows


def _day_sessions(seed: int, size: WorldSize, day: int, weekday: int, drift: bool) -> int:
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2, day)))
    lam = size.sessions_per_day * WEEKDAY_FACTOR[weekday] * (1.25 if drift else 1.0)
    return int(rng.poisson(lam))


class _Progress(Callback):
    """Dask local-scheduler callback: counts finished tasks per stage (key prefix)."""

    def __init__(self, totals: dict[str, int], progress: Callable[[str, int, int], None] | None):
        super().__init__()
        self.totals, self.done, self.report = totals, dict.fromkeys(totals, 0), progress

    def _posttask(self, key, result, dsk, state, worker_id):
        stage = key.split("|", 1)[0] if isinstance(key, str) else None
        if stage in self.done:
            self.done[stage] += 1
            if self.report is not None:
                self.report(stage, self.done[stage], self.totals[stage])


# ------------------------------------------------------------------------------------------------
def _prepare_out(out: AnyPath) -> None:
    """Refuse to replace a folder that is not an empty folder or an earlier world build."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "_world.json").exists())):
        raise LakeError(
            f"{out} exists and is not a world lake (no _world.json); refusing to replace it", field="out"
        )


def build_world(
    size: str = "tiny",
    seed: int = 0,
    out: AnyPath | str | None = None,
    *,
    start_date: str = "2026-10-01",
    days: int = 30,
    drift_category: str | None = None,
    drift_from_day: int | None = None,
    images: bool = True,
    progress: Callable[[str, int, int], None] | None = None,
    scheduler: str | None = None,
) -> WorldSummary:
    """Generate the synthetic world of ``size`` (a key of SIZES) for ``seed`` into the lake ``out``.

    ``out`` (a folder or ``s3://bucket/prefix``) defaults to the settings' lake (``<JAIKOD_HOME>/lake``); an
    existing earlier build there is replaced atomically (on object storage: moved object by object). ``drift_category`` (a CATEGORIES name) surges from day index
    ``drift_from_day`` (0-based, default ``days // 2``). ``progress(stage, done, total)`` is called
    for the stages ``tables``, ``images`` and ``events``. ``scheduler`` is any Dask scheduler name
    ("threads", "processes", "synchronous"); None uses the active one (a distributed Client if one
    is set up, else threads).
    """
    t0 = time.perf_counter()
    if size not in SIZES:
        raise ConfigError(f"unknown world size {size!r}; choose one of {sorted(SIZES)}", field="size")
    if days < 1:
        raise ConfigError("days must be >= 1", field="days")
    drift_code = -1
    if drift_category is not None:
        if drift_category not in CATEGORIES:
            raise ConfigError(f"unknown drift category {drift_category!r}", field="drift_category")
        drift_code = CATEGORIES.index(drift_category)
        drift_from_day = days // 2 if drift_from_day is None else drift_from_day
        if not 0 <= drift_from_day < days:
            raise ConfigError("drift_from_day must be within [0, days)", field="drift_from_day")
    try:
        start = pd.Timestamp(start_date, tz="UTC").normalize()
    except ValueError as exc:
        raise ConfigError(f"bad start_date {start_date!r}: {exc}", field="start_date") from exc
    if out is None:
        from gpu_core.settings import get_settings

        out = get_settings().lake_dir
    out = lake_path(out)
    local = isinstance(out, Path)
    if local:
        out = out.resolve()
    _prepare_out(out)
    spec = SIZES[size]
    start_ms = _ms(start)

    tmp = out.parent / f".{out.name}.building-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    if local:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
    try:
        summary = _build_into(
            tmp,
            spec,
            size,
            seed,
            start,
            start_ms,
            days,
            drift_code,
            drift_from_day,
            images,
            progress,
            scheduler,
        )
        summary.seconds = round(time.perf_counter() - t0, 3)
        summary.out = out
        (tmp / "_world.json").write_text(json.dumps(summary.to_json(), indent=2))
        if out.exists():
            trash = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            out.rename(trash)
            tmp.rename(out)
            remove_tree(trash)
        else:
            tmp.rename(out)
    except BaseException:
        _remove_partial(tmp)
        raise
    return summary


def catalogue(size: str = "demo", seed: int = 7, start_date: str = "2026-10-01") -> pd.DataFrame:
    """The products table a ``build_world(size, seed, start_date=...)`` writes, without building the
    rest of the world (the search evaluation judges queries against it)."""
    if size not in SIZES:
        raise ConfigError(f"unknown world size {size!r}; choose one of {sorted(SIZES)}", field="size")
    spec = SIZES[size]
    start_ms = _ms(pd.Timestamp(start_date, tz="UTC").normalize())
    _, s_sellers, s_products, _, _ = np.random.SeedSequence(seed).spawn(5)
    _, s = _sellers(np.random.default_rng(s_sellers), spec.n_sellers, start_ms)
    products, _ = _products(np.random.default_rng(s_products), spec.n_products, s, start_ms, max(spec.image_every, 1))
    return products.to_pandas()


def _remove_partial(tmp: AnyPath, settle_s: float = 0.3, max_s: float = 10.0) -> None:
    """Remove a failed build's folder. Tasks already running on the scheduler's threads may finish a
    write just after the failure, so remove until the folder has stayed gone for ``settle_s``."""
    deadline = time.monotonic() + max_s
    while time.monotonic() < deadline:
        remove_tree(tmp)
        time.sleep(settle_s)
        if not tmp.exists():
            return


def _build_into(
    tmp, spec, size, seed, start, start_ms, days, drift_code, drift_from_day, images, progress, scheduler
) -> WorldSummary:
    s_users, s_sellers, s_products, s_hidden, s_pop = np.random.SeedSequence(seed).spawn(5)
    users, u = _users(np.random.default_rng(s_users), spec.n_users, start_ms)
    sellers, s = _sellers(np.random.default_rng(s_sellers), spec.n_sellers, start_ms)
    image_every = spec.image_every if images else 0
    products, p = _products(
        np.random.default_rng(s_products), spec.n_products, s, start_ms, max(image_every, 1)
    )
    if not images:
        products = products.set_column(
            products.schema.get_field_index("image_path"),
            "image_path",
            pa.array([""] * products.num_rows, type=pa.string()),
        )
        p["has_image"] = np.zeros(spec.n_products, dtype=bool)
    affinity, sensitivity, activity = sample_user_preferences(
        np.random.default_rng(s_hidden), u["age"], u["gender"]
    )
    hidden = pd.DataFrame({f"affinity_{c}": affinity[:, i] for i, c in enumerate(CATEGORIES)})
    hidden.insert(0, "user_id", np.arange(1, spec.n_users + 1, dtype=np.int64))
    hidden["price_sensitivity"], hidden["activity"] = sensitivity, activity
    model = HiddenModel.from_tables(users.to_pandas(), sellers.to_pandas(), products.to_pandas(), hidden)
    model.save_hidden(tmp / "_hidden", hidden["user_id"].to_numpy())

    # Legacy popularity: quality with noise; sold-out listings rarely pushed.
    pop_rng = np.random.default_rng(s_pop)
    pop_w = np.exp(1.2 * p["quality"] + 0.5 * pop_rng.normal(size=spec.n_products)) * np.where(
        p["in_stock"], 1.0, 0.3
    )
    qf, qs, qc = _flat(QUERIES)
    df_, ds, dc = _flat(DRIFT_QUERIES)
    all_queries = sorted(set(qf.tolist()) | set(df_.tolist()))
    code_of_query = {q: i for i, q in enumerate(all_queries)}
    ctx = _EventContext(
        seed=seed,
        start_ms=start_ms,
        model=model,
        affinity_cdf=np.cumsum(model.affinity, axis=1),
        activity_cdf=np.cumsum(activity.astype(np.float64)) / float(activity.sum()),
        user_device=u["device"],
        user_region=region_of(u["lat"], u["lon"]),
        product_category=p["cat"],
        legacy_logpop=np.log(pop_w),
        pop_cdf=np.cumsum(pop_w) / pop_w.sum(),
        **dict(zip(("cat_order", "cat_start", "cat_count"), _groups(p["cat"], N_CAT), strict=True)),
        **dict(
            zip(
                ("reg_order", "reg_start", "reg_count"),
                _groups(region_of(model.product_lat, model.product_lon), N_REGIONS),
                strict=True,
            )
        ),
        query_flat=qf,
        query_start=qs,
        query_count=qc,
        drift_flat=df_,
        drift_start=ds,
        drift_count=dc,
        drift_category=drift_code,
        drift_from_day=drift_from_day if drift_from_day is not None else days,
        query_code=np.array([code_of_query[q] for q in qf], dtype=np.int64),
        drift_code=np.array([code_of_query[q] for q in df_], dtype=np.int64),
        match_keys=query_matches(all_queries, products.column("title").to_pylist()),
        # the generator's queries are templates, not user text: every word is kept
        stored_queries=np.array([stored_query(analyzer().query(q), known=lambda t: True) for q in all_queries],
                                dtype=object),
    )

    # The Dask graph: static tables, image chunks, one task per (day, chunk) of events.
    tasks: dict[str, list] = {"tables": [], "images": [], "events": []}
    for name, table in (("users", users), ("sellers", sellers), ("products", products)):
        for k, off in enumerate(range(0, max(table.num_rows, 1), spec.rows_per_file)):
            tasks["tables"].append(
                dask.delayed(_write_table)(
                    table.slice(off, spec.rows_per_file),
                    tmp / name / f"part-{k:03d}.parquet",
                    dask_key_name=f"tables|{name}|{k}",
                )
            )
    if images:
        with_img = np.flatnonzero(p["has_image"])
        for k, off in enumerate(range(0, len(with_img), 500)):
            sel = with_img[off : off + 500]
            tasks["images"].append(
                dask.delayed(write_product_images)(
                    tmp / "images", sel + 1, p["cat"][sel], p["grade"][sel], seed, dask_key_name=f"images|{k}"
                )
            )
    ctx_d = dask.delayed(ctx, name="world-context", traverse=False)
    n_sessions_total = 0
    for day in range(days):
        date = start + pd.Timedelta(days=day)
        n_day = _day_sessions(seed, spec, day, date.weekday(), drift_code >= 0 and day >= ctx.drift_from_day)
        n_sessions_total += n_day
        n_chunks = max(1, math.ceil(n_day / spec.sessions_per_chunk))
        for chunk in range(n_chunks):
            n_chunk = n_day // n_chunks + (1 if chunk < n_day % n_chunks else 0)
            path = tmp / "events" / f"date={date:%Y-%m-%d}" / f"part-{chunk:03d}.parquet"
            tasks["events"].append(
                dask.delayed(_write_events)(
                    ctx_d, day, chunk, n_chunk, path, dask_key_name=f"events|{day}|{chunk}"
                )
            )

    totals = {k: len(v) for k, v in tasks.items()}
    kwargs = {"scheduler": scheduler} if scheduler else {}
    with _Progress(totals, progress):
        t_rows, t_imgs, t_events = dask.compute(tasks["tables"], tasks["images"], tasks["events"], **kwargs)
    by_type = np.sum(t_events, axis=0) if t_events else np.zeros(len(EVENT_TYPES), dtype=np.int64)
    events_by_type = {t: int(by_type[i]) for i, t in enumerate(EVENT_TYPES)}
    return WorldSummary(
        size=size,
        seed=seed,
        out=tmp,
        start_date=f"{start:%Y-%m-%d}",
        days=days,
        counts={
            "users": spec.n_users,
            "sellers": spec.n_sellers,
            "products": spec.n_products,
            "images": int(sum(t_imgs)),
            "events": int(by_type.sum()),
            "sessions": n_sessions_total,
        },
        events_by_type=events_by_type,
        seconds=0.0,
        drift_category=CATEGORIES[drift_code] if drift_code >= 0 else None,
        drift_from_day=ctx.drift_from_day if drift_code >= 0 else None,
        partitions=totals["events"],
    )
