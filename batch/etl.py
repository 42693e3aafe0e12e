"""ETL: the lake's raw tables -> offline feature tables, point-in-time correct, through Dask.

``jaikod batch etl --lake DIR --as-of DATE`` writes under ``<lake>/features/``:

==========================  ======================================================================
``products_dim.parquet``    static product columns (codes, price, location, seller trust, region)
``users_dim.parquet``       static user columns (codes, home, max distance)
``user_daily/date=D/``      user features as of D 00:00 UTC (events strictly before D)
``product_daily/date=D/``   product batch features as of D (popularity = clicks in [D-7d, D))
``context_daily/date=D/``   holiday flag, median listing price per category as of D
``user_clicks/date=D/``     (user, product, clicks) of day D: the input of user vectors/embeddings
``training/date=D/``        one row per impression of D: labels (attribution window) and the
                            real-time features as of the impression's time (same windows as the
                            stream processor, from :mod:`kernels.windows`)
==========================  ======================================================================

A feature row for date D never reads an event at or after D; a training row at time t never reads
an event at or after t (except its own labels, which look *forward* by the attribution window).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dask
import numpy as np
import pandas as pd

from batch.cluster import compute_in_order, shared
from batch.lake import (
    atomic_dir,
    check_event_partitions,
    event_dates,
    lake_path,
    parse_date,
    read_events,
    read_parquet,
    read_table,
    table_path,
    write_parquet,
    write_partition,
)
from engines.search.index import SearchIndex
from gpu_core.calendar import is_holiday, time_of_day
from gpu_core.errors import LakeError
from gpu_core.feature_store import LAST_VIEWED_TTL_S, PRODUCT_WINDOW, USER_WINDOW
from gpu_core.geo import region_of
from gpu_core.schema import (
    AGE_GROUPS,
    CATEGORIES,
    CONDITION_GRADES,
    DEVICE_TYPES,
    GENDERS,
    TOP_CATEGORIES,
    code_of,
)
from gpu_core.settings import get_settings
from kernels.features import TEXT_FEATURES
from kernels.trust import seller_trust
from kernels.windows import smoothed_ctr, sort_events, window_count_sorted

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]
DAY_MS = 86_400_000
POPULARITY_DAYS = 7
TOP_CATEGORY_DAYS = 30


@dataclass
class EtlSummary:
    as_of: dt.date
    dates: list[dt.date]
    events: int = 0
    impressions: int = 0
    training_rows: int = 0
    seconds: float = 0.0
    out: Path = Path()
    extra: dict = field(default_factory=dict)

    @property
    def events_per_min(self) -> float:
        return self.events / max(self.seconds, 1e-9) * 60.0

    def as_rows(self) -> dict:
        return {"as_of": str(self.as_of), "days": len(self.dates), "events": self.events,
                "training rows": self.training_rows, "seconds": round(self.seconds, 2),
                "events/min": round(self.events_per_min)}


def features_dir(lake: Path) -> Path:
    return lake_path(lake) / "features"


def day_start_ms(d: dt.date) -> int:
    return int(dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC).timestamp() * 1000)


def ts_ms(series: pd.Series) -> np.ndarray:
    """Timestamp column (any unit, tz-aware or naive UTC) -> int64 epoch ms."""
    s = series
    if pd.api.types.is_datetime64_any_dtype(s):
        if getattr(s.dt, "tz", None) is not None:
            s = s.dt.tz_convert("UTC").dt.tz_localize(None)
        return s.to_numpy(dtype="datetime64[ms]").astype(np.int64)
    return np.asarray(s, dtype=np.int64)


# ------------------------------------------------------------------------------------------------
# Dimensions
def build_dims(lake: Path, as_of: dt.date) -> tuple[pd.DataFrame, pd.DataFrame]:
    products = read_table(lake, "products")
    sellers = read_table(lake, "sellers")
    users = read_table(lake, "users")
    p = pd.DataFrame({
        "product_id": products["product_id"].to_numpy(np.int64),
        "seller_id": products["seller_id"].to_numpy(np.int64),
        "category": code_of(CATEGORIES, products["category"].tolist()),
        "price_thb": products["price_thb"].to_numpy(np.float32),
        "condition_grade": code_of(CONDITION_GRADES, products["condition_grade"].tolist(), default=2),
        "quality_score": products["quality_score"].to_numpy(np.float32),
        "lat": products["lat"].to_numpy(np.float32),
        "lon": products["lon"].to_numpy(np.float32),
        "in_stock": products["in_stock"].to_numpy(bool),
        "created_ms": ts_ms(products["created_at"]),
        "title": products["title"].astype(str).to_numpy(),
    })
    bad = np.flatnonzero(p["category"].to_numpy() < 0)
    if len(bad):
        raise LakeError(f"products: unknown category {products['category'].iloc[bad[0]]!r} "
                        f"(product_id {int(p['product_id'].iloc[bad[0]])})", field="category")
    p["region"] = region_of(p["lat"].to_numpy(), p["lon"].to_numpy())
    s = sellers.set_index("seller_id")
    s_rows = s.reindex(p["seller_id"].to_numpy())
    ref_ms = day_start_ms(as_of + dt.timedelta(days=1))
    age_days = (ref_ms - ts_ms(s_rows["joined_at"].fillna(pd.Timestamp("1970-01-01")))) / DAY_MS
    trust, _ = seller_trust(s_rows["verified_id"].fillna(False).to_numpy(bool),
                            s_rows["reports"].fillna(0).to_numpy(np.float32),
                            np.asarray(age_days, dtype=np.float32),
                            s_rows["banned"].fillna(False).to_numpy(bool), xp=np)
    p["seller_trust_score"] = np.asarray(trust, dtype=np.float32)  # as of the serving day
    p["seller_banned"] = s_rows["banned"].fillna(False).to_numpy(bool)
    # trust inputs, so daily features can score trust as of each day (account age moves daily)
    p["seller_verified"] = s_rows["verified_id"].fillna(False).to_numpy(bool)
    p["seller_reports"] = s_rows["reports"].fillna(0).to_numpy(np.float32)
    p["seller_joined_ms"] = ts_ms(s_rows["joined_at"].fillna(pd.Timestamp("1970-01-01")))
    p = p.sort_values("product_id", ignore_index=True)
    u = pd.DataFrame({
        "user_id": users["user_id"].to_numpy(np.int64),
        "age_group": code_of(AGE_GROUPS, users["age_group"].tolist()),
        "gender": code_of(GENDERS, users["gender"].tolist()),
        "home_lat": users["home_lat"].to_numpy(np.float32),
        "home_lon": users["home_lon"].to_numpy(np.float32),
        "max_distance_km": users["max_distance_km"].to_numpy(np.float32),
        "device_type": code_of(DEVICE_TYPES, users["device_type"].tolist()),
    }).sort_values("user_id", ignore_index=True)
    return p, u


def index_of(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Positions of ``ids`` in ``sorted_ids`` (-1 where absent)."""
    pos = np.searchsorted(sorted_ids, ids)
    pos = np.clip(pos, 0, max(len(sorted_ids) - 1, 0))
    ok = (len(sorted_ids) > 0) & (sorted_ids[pos] == ids) if len(sorted_ids) else np.zeros(len(ids), bool)
    return np.where(ok, pos, -1)


# ------------------------------------------------------------------------------------------------
# Per-day aggregates (one Dask task per date partition)
def day_aggregates(lake: Path, day: dt.date, product_ids: np.ndarray, category: np.ndarray,
                   price: np.ndarray) -> dict:
    ev = read_events(lake, [day], ["event_type", "user_id", "product_id"])
    et = ev["event_type"].to_numpy()
    pidx = index_of(product_ids, ev["product_id"].to_numpy(np.int64))
    uid = ev["user_id"].to_numpy(np.int64)
    known = pidx >= 0
    click = (et == "click") & known
    order = (et == "order") & known
    clicks = pd.DataFrame({"user_id": uid[click], "product_id": product_ids[pidx[click]],
                           "category": category[pidx[click]]})
    uc = clicks.groupby(["user_id", "product_id"], sort=True).size().rename("clicks").reset_index()
    ucat = clicks.groupby(["user_id", "category"]).size().rename("clicks").reset_index()
    spend = pd.DataFrame({"user_id": uid[order], "spend": price[pidx[order]]}).groupby("user_id")["spend"].sum()
    pclicks = np.bincount(pidx[click], minlength=len(product_ids)).astype(np.int32)
    return {"day": day, "events": len(ev), "impressions": int((et == "impression").sum()), "user_clicks": uc,
            "user_cat_clicks": ucat, "user_spend": spend.reset_index(), "product_clicks": pclicks}


# ------------------------------------------------------------------------------------------------
# Daily feature tables
def daily_features(days: list[dt.date], aggs: dict[dt.date, dict], products: pd.DataFrame,
                   users: pd.DataFrame) -> dict[dt.date, dict[str, pd.DataFrame]]:
    """User/product/context features as of each day in ``days`` (from aggregates of earlier days)."""
    user_ids = users["user_id"].to_numpy()
    n_users, n_cat = len(user_ids), len(CATEGORIES)
    agg_days = sorted(aggs)
    out = {}
    prices = products["price_thb"].to_numpy()
    created = products["created_ms"].to_numpy()
    cats = products["category"].to_numpy()
    for d in days:
        prior = [a for a in agg_days if a < d]
        spend = np.zeros(n_users, dtype=np.float64)
        cat_clicks = np.zeros((n_users, n_cat), dtype=np.float64)
        pop = np.zeros(len(products), dtype=np.float64)
        for a in prior:
            g = aggs[a]
            sp = g["user_spend"]
            ui = index_of(user_ids, sp["user_id"].to_numpy(np.int64))
            np.add.at(spend, ui[ui >= 0], sp["spend"].to_numpy()[ui >= 0])
            if (d - a).days <= TOP_CATEGORY_DAYS:
                uc = g["user_cat_clicks"]
                ui = index_of(user_ids, uc["user_id"].to_numpy(np.int64))
                ok = ui >= 0
                np.add.at(cat_clicks, (ui[ok], uc["category"].to_numpy()[ok]), uc["clicks"].to_numpy()[ok])
            if (d - a).days <= POPULARITY_DAYS:
                pop += g["product_clicks"]
        # top-3 categories by clicks (ties -> lower code), -1 where no clicks
        order = np.argsort(-cat_clicks, axis=1, kind="stable")[:, :TOP_CATEGORIES]
        top = np.where(np.take_along_axis(cat_clicks, order, axis=1) > 0, order, -1).astype(np.int32)
        user_df = users[["user_id", "age_group", "gender", "home_lat", "home_lon", "max_distance_km"]].copy()
        user_df["lifetime_spend"] = spend.astype(np.float32)
        for k in range(TOP_CATEGORIES):
            user_df[f"top_cat_{k}"] = top[:, k]
        # seller trust as of d (account age at d; the lake keeps report counts without dates, so the
        # current count is used — the one input that is not point-in-time)
        age_days = (day_start_ms(d) - products["seller_joined_ms"].to_numpy()) / DAY_MS
        trust, _ = seller_trust(products["seller_verified"].to_numpy(bool), products["seller_reports"].to_numpy(),
                                np.maximum(age_days, 0.0).astype(np.float32), products["seller_banned"].to_numpy(bool),
                                xp=np)
        product_df = pd.DataFrame({"product_id": products["product_id"].to_numpy(),
                                   "popularity": pop.astype(np.float32),
                                   "seller_trust_score": np.asarray(trust, dtype=np.float32)})
        listed = created < day_start_ms(d)
        med = np.zeros(n_cat, dtype=np.float32)
        for c in range(n_cat):
            sel = listed & (cats == c)
            med[c] = float(np.median(prices[sel])) if sel.any() else 0.0
        ctx = {"holiday_calendar": [1.0 if is_holiday(d) else 0.0]}
        ctx.update({f"avg_price_{c}": [med[c]] for c in range(n_cat)})
        out[d] = {"user_daily": user_df, "product_daily": product_df, "context_daily": pd.DataFrame(ctx)}
    return out


# ------------------------------------------------------------------------------------------------
# Training rows (one Dask task per date): labels + point-in-time real-time features
def search_index(products: pd.DataFrame) -> SearchIndex:
    """The catalogue's search index, built exactly as the materialiser builds the served one (same
    products dimension, same statistics), so text-relevance features are equal offline and online."""
    return SearchIndex.build(products["product_id"].to_numpy(), products["title"].to_numpy(),
                             products["category"].to_numpy())


def training_rows(lake: Path, day: dt.date, products: pd.DataFrame, attribution_s: int,
                  search: SearchIndex | None = None) -> pd.DataFrame:
    cols = ["event_type", "ts", "user_id", "product_id", "request_id", "position", "device_type", "query"]
    ev = read_events(lake, [day - dt.timedelta(days=1), day, day + dt.timedelta(days=1)], cols)
    if ev.empty:
        return pd.DataFrame()
    ev["ts_ms"] = ts_ms(ev["ts"])
    lo, hi = day_start_ms(day), day_start_ms(day + dt.timedelta(days=1))
    win_ms = attribution_s * 1000
    # only what the windows and labels can reach
    ev = ev[(ev["ts_ms"] >= lo - max(3600_000, LAST_VIEWED_TTL_S * 1000) - 600_000) & (ev["ts_ms"] < hi + win_ms)]
    et = ev["event_type"].to_numpy()
    imp = ev[(et == "impression") & (ev["ts_ms"].to_numpy() >= lo) & (ev["ts_ms"].to_numpy() < hi)].copy()
    if imp.empty:
        return pd.DataFrame()
    imp = imp.sort_values("ts_ms", kind="stable", ignore_index=True)
    # ---- labels: first click / conversion of the same (user, product) within the window
    for label, types in (("label_click", ("click",)), ("label_conv", ("add_to_cart", "order"))):
        follow = ev[np.isin(et, types)][["user_id", "product_id", "ts_ms"]].sort_values("ts_ms")
        follow = follow.rename(columns={"ts_ms": "follow_ms"})
        m = pd.merge_asof(imp[["ts_ms", "user_id", "product_id"]], follow, left_on="ts_ms", right_on="follow_ms",
                          by=["user_id", "product_id"], direction="forward", tolerance=win_ms)
        imp[label] = m["follow_ms"].notna().to_numpy().astype(np.int8)
    imp = point_in_time_features(imp, ev, products, search)
    keep = ["request_id", "user_id", "product_id", "ts_ms", "position", "query", "device_type", "time_of_day",
            "label_click", "label_conv", "views_last_hour", "ctr_last_hour", "session_clicks_last_5m",
            "last_viewed_category", *TEXT_FEATURES]
    return imp[keep].reset_index(drop=True)


def point_in_time_features(rows: pd.DataFrame, ev: pd.DataFrame, products: pd.DataFrame,
                           search: SearchIndex | None = None) -> pd.DataFrame:
    """The request-time features of ``rows`` (user_id, product_id, ts_ms, query, device_type), from the
    events ``ev`` (event_type, user_id, product_id, ts_ms) that happened strictly before each row's time —
    with the stream processor's window definitions. Used for training rows and for the skew check of
    what the service served. ``search`` is the catalogue's index (:func:`search_index`, built once by
    the caller; built here when not given)."""
    imp = rows
    et = ev["event_type"].to_numpy()
    t_s = imp["ts_ms"].to_numpy() / 1000.0
    pid_all = products["product_id"].to_numpy()
    # ---- product windows (same definition as the stream processor's ring buffers)
    imp_pidx = index_of(pid_all, imp["product_id"].to_numpy(np.int64))
    ev_pidx = index_of(pid_all, ev["product_id"].to_numpy(np.int64))
    ev_s = ev["ts_ms"].to_numpy() / 1000.0
    counts = {}
    for name, etype in (("impr", "impression"), ("clicks", "click")):
        sel = (et == etype) & (ev_pidx >= 0)
        keys = sort_events(ev_pidx[sel], ev_s[sel], xp=np)
        counts[name] = window_count_sorted(keys, imp_pidx, t_s, PRODUCT_WINDOW.width_s, PRODUCT_WINDOW.n_buckets,
                                           xp=np)
    imp["views_last_hour"] = counts["clicks"].astype(np.float32)
    imp["ctr_last_hour"] = smoothed_ctr(counts["clicks"].astype(np.float32), counts["impr"].astype(np.float32),
                                        xp=np)
    # ---- user windows
    csel = et == "click"
    uid_ev = ev["user_id"].to_numpy(np.int64)[csel]
    imp["session_clicks_last_5m"] = window_count_sorted(
        sort_events(uid_ev, ev_s[csel], xp=np), imp["user_id"].to_numpy(np.int64), t_s, USER_WINDOW.width_s,
        USER_WINDOW.n_buckets, xp=np).astype(np.float32)
    # last viewed category: the user's last click strictly before t, if its minute is <= 30 min old
    cl = pd.DataFrame({"user_id": uid_ev, "click_ms": ev["ts_ms"].to_numpy()[csel],
                       "cat": products["category"].to_numpy()[np.maximum(ev_pidx[csel], 0)]})
    cl = cl[ev_pidx[csel] >= 0].sort_values("click_ms")
    m = pd.merge_asof(imp[["ts_ms", "user_id"]], cl, left_on="ts_ms", right_on="click_ms", by="user_id",
                      direction="backward", allow_exact_matches=False)
    last_min = (m["click_ms"].to_numpy() // 1000 // USER_WINDOW.width_s)
    now_min = imp["ts_ms"].to_numpy() // 1000 // USER_WINDOW.width_s
    fresh = m["click_ms"].notna().to_numpy() & (now_min - np.nan_to_num(last_min, nan=-1e18)
                                                <= LAST_VIEWED_TTL_S // USER_WINDOW.width_s)
    imp["last_viewed_category"] = np.where(fresh, np.nan_to_num(m["cat"].to_numpy(), nan=-1), -1).astype(np.int32)
    # ---- context of the request: text relevance of each listing to the request's query (the function
    # and statistics the service's hydration uses), one query plan per distinct query; the lake keeps
    # the stored form of each query (engines.search.stored: no user text), read back as the same plan
    queries = imp["query"].fillna("").astype(str).to_numpy()
    text = {k: np.zeros(len(imp), dtype=np.float32) for k in TEXT_FEATURES}
    has_q = queries != ""
    if has_q.any():
        search = search if search is not None else search_index(products)
        pids = imp["product_id"].to_numpy(np.int64)
        for q in np.unique(queries[has_q]):
            sel = np.flatnonzero(queries == q)
            for k, v in search.relevance(search.plan_recorded(q), pids[sel]).items():
                text[k][sel] = v
    for k, v in text.items():
        imp[k] = v
    imp["device_type"] = code_of(DEVICE_TYPES, imp["device_type"].fillna("").tolist())
    imp["time_of_day"] = time_of_day(imp["ts_ms"].to_numpy()).astype(np.float32)
    return imp


# ------------------------------------------------------------------------------------------------
def run_etl(lake: Path | str | None = None, as_of: str | dt.date | None = None, progress: Progress | None = None,
            client=None) -> EtlSummary:
    """The whole ETL for ``as_of`` (default: the last date in the lake)."""
    t0 = time.perf_counter()
    settings = get_settings()
    lake = lake_path(lake) if lake is not None else settings.lake_dir
    dates, as_of = check_lake(lake, as_of)
    used = [d for d in dates if d <= as_of]
    products, users = build_dims(lake, as_of)
    pids = products["product_id"].to_numpy()
    cat = products["category"].to_numpy()
    price = products["price_thb"].to_numpy()
    report = progress or (lambda *_: None)
    report("aggregate days", 0, len(used))
    # big inputs enter the graph once (not once per task)
    pids_d, cat_d, price_d = (shared(a, client) for a in (pids, cat, price))
    tasks = [dask.delayed(day_aggregates)(lake, d, pids_d, cat_d, price_d) for d in used]
    aggs = {}
    for i, a in enumerate(compute_in_order(tasks, client)):
        aggs[a["day"]] = a
        report("aggregate days", i + 1, len(used))
    serving_day = as_of + dt.timedelta(days=1)
    feats = daily_features([*used, serving_day], aggs, products, users)
    out = features_dir(lake)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out / "dims") as tmp:
        write_parquet(products, tmp / "products.parquet")
        write_parquet(users, tmp / "users.parquet")
    report("write daily features", 0, len(feats))
    for i, (d, tables) in enumerate(feats.items()):
        for name, df in tables.items():
            write_partition(df, out / name, d)
        if d in aggs:
            write_partition(aggs[d]["user_clicks"], out / "user_clicks", d)
        report("write daily features", i + 1, len(feats))
    report("training rows", 0, len(used))
    rows_total = 0
    products_d = shared(products, client)
    search_d = shared(search_index(products), client)
    tasks = [dask.delayed(_training_partition)(lake, d, products_d, settings.attribution_window_s, out / "training",
                                               search_d) for d in used]
    for i, n in enumerate(compute_in_order(tasks, client)):
        rows_total += n
        report("training rows", i + 1, len(used))
    (out / "_as_of").write_text(as_of.isoformat())
    return EtlSummary(as_of=as_of, dates=used, events=sum(a["events"] for a in aggs.values()),
                      impressions=sum(a["impressions"] for a in aggs.values()), training_rows=rows_total,
                      seconds=time.perf_counter() - t0, out=out)


def refresh_training_rows(lake: Path, days: list[dt.date]) -> int | None:
    """The training rows of ``days`` again, from the lake's events as they are now, over the products
    dimension and daily features the last ETL wrote: a live day's rows grow with the stream archive, and a
    whole :func:`run_etl` (every day of the window) is not needed for them. ``None`` when a day has no
    daily features yet (the caller runs the ETL); else the number of rows written."""
    out = features_dir(lake)
    dims = out / "dims" / "products.parquet"
    if not dims.exists() or any(not (out / "user_daily" / f"date={d.isoformat()}").is_dir() for d in days):
        return None
    products = read_parquet(dims)
    search = search_index(products)
    attribution_s = get_settings().attribution_window_s
    return sum(_training_partition(lake, d, products, attribution_s, out / "training", search) for d in days)


EVENT_COLUMNS = ("event_type", "ts", "user_id", "product_id", "request_id", "position", "device_type", "query")


def check_lake(lake: Path, as_of: str | dt.date | None = None) -> tuple[list[dt.date], dt.date]:
    """Validate the lake before any work or write: ``(event dates, as_of)`` or one LakeError naming the
    path/column (missing table, missing/empty/unreadable partition, missing column, as_of outside)."""
    lake = lake_path(lake)
    dates = event_dates(lake)
    as_of = parse_date(as_of) or dates[-1]
    if not dates[0] <= as_of <= dates[-1]:
        raise LakeError(f"--as-of {as_of} is outside the lake's events {dates[0]}..{dates[-1]} "
                        f"({lake / 'events'})", field="as_of")
    check_event_partitions(lake, dates[0], as_of, EVENT_COLUMNS)
    for table in ("products", "sellers", "users"):
        table_path(lake, table)
    return dates, as_of


def _training_partition(lake: Path, day: dt.date, products: pd.DataFrame, attribution_s: int, root: Path,
                        search: SearchIndex | None = None) -> int:
    df = training_rows(lake, day, products, attribution_s, search)
    if not df.empty:
        write_partition(df, root, day)
    return len(df)


def etl_as_of(lake: Path) -> dt.date:
    p = features_dir(lake) / "_as_of"
    if not p.exists():
        raise LakeError(f"no ETL output under {features_dir(lake)}: run `jaikod batch etl` first", field="lake")
    return dt.date.fromisoformat(p.read_text().strip())


def read_partition(lake: Path, name: str, day: dt.date) -> pd.DataFrame:
    part = features_dir(lake) / name / f"date={day.isoformat()}"
    files = sorted(part.glob("*.parquet"))
    if not files:
        raise LakeError(f"missing feature partition {part}", field=name)
    return read_parquet(files)
