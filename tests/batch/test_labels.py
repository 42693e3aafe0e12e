"""Attribution-window labels and the point-in-time real-time features on a hand-built lake.

Every expected value below is computed by hand from the window definitions (``kernels.windows``):
product windows are 12 x 5-minute buckets (``[bucket_start(t) - 55 min, t)``), the user session window
5 x 1-minute buckets (``[minute_start(t) - 4 min, t)``), the last viewed category is the user's last
click strictly before ``t`` if at most 30 minute-buckets old. The same events replayed into the online
store give the same values at ``t``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from batch.etl import build_dims, read_partition, run_etl, training_rows
from engines.realtime import read_product_rt, read_user_rt
from gpu_core.feature_store import OnlineStore
from gpu_core.schema import CATEGORIES
from kernels.windows import smoothed_ctr

D = dt.date(2026, 10, 10)
FASH, BOOK = (CATEGORIES.index(c) for c in ("fashion", "books_hobbies"))
PRODUCT_CATEGORY = {100: "electronics", 101: "fashion", 102: "books_hobbies", 103: "electronics",
                    104: "fashion", 105: "books_hobbies"}


def at(hh: int, mm: int, ss: int = 0, day: dt.date = D) -> pd.Timestamp:
    return pd.Timestamp(dt.datetime(day.year, day.month, day.day, hh, mm, ss, tzinfo=dt.UTC))


def write_lake(root: Path, events: list[tuple[str, pd.Timestamp, int, int]]) -> Path:
    """A minimal lake with TABLE_COLUMNS: 6 users, 1 seller, the products above, the given events
    ``(event_type, ts, user_id, product_id)`` partitioned by date."""
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    tables = {
        "users": pd.DataFrame({"user_id": np.arange(1, 7, dtype=np.int64), "age_group": "25-34",
                               "gender": "female", "home_lat": 13.75, "home_lon": 100.5,
                               "max_distance_km": np.float32(50.0), "device_type": "android", "created_at": t0}),
        "sellers": pd.DataFrame({"seller_id": [10], "verified_id": [True], "reports": np.int32([0]),
                                 "joined_at": [t0], "banned": [False]}),
        "products": pd.DataFrame({
            "product_id": np.array(list(PRODUCT_CATEGORY), dtype=np.int64), "seller_id": 10,
            "title": [f"item {p}" for p in PRODUCT_CATEGORY], "category": list(PRODUCT_CATEGORY.values()),
            "price_thb": 100.0, "condition_grade": "good", "quality_score": np.float32(0.5), "lat": 13.75,
            "lon": 100.5, "in_stock": True, "created_at": t0, "image_path": ""}),
    }
    for name, df in tables.items():
        (root / name).mkdir(parents=True)
        df.to_parquet(root / name / "part-0.parquet", index=False)
    ev = pd.DataFrame(events, columns=["event_type", "ts", "user_id", "product_id"])
    ev["ts"] = pd.to_datetime(ev["ts"], utc=True).astype("datetime64[ms, UTC]")
    ev = ev.sort_values("ts", kind="stable", ignore_index=True)
    ev.insert(0, "event_id", [f"e{i:05d}" for i in range(len(ev))])
    ev["request_id"] = [f"r{i:05d}" for i in range(len(ev))]
    ev["position"] = np.int16(1)
    ev["model_version"] = "hand"
    ev["session_id"] = "s" + ev["user_id"].astype(str)
    ev["device_type"] = "ios"
    ev["query"] = ""
    for day, part in ev.groupby(ev["ts"].dt.date):
        d = root / "events" / f"date={day.isoformat()}"
        d.mkdir(parents=True)
        part.to_parquet(d / "part-000.parquet", index=False)
    return root


# ---------------------------------------------------------------------------------------------------
# labels
LABEL_EVENTS = [
    # user 1: click 59 min after -> 1; 61 min after -> 0; clicked by another user -> 0
    ("impression", at(10, 0), 1, 100), ("click", at(10, 59), 1, 100),
    ("impression", at(10, 0), 1, 101), ("click", at(11, 1), 1, 101),
    ("impression", at(10, 0), 1, 102), ("click", at(10, 10), 2, 102),
    # exactly one hour later still counts (the window is inclusive); a click *before* does not
    ("impression", at(14, 0), 1, 103), ("click", at(15, 0), 1, 103),
    ("click", at(13, 50), 1, 104), ("impression", at(14, 0), 1, 104),
    # conversions: add_to_cart within the window, an order 2 h later (outside)
    ("impression", at(16, 0), 2, 100), ("add_to_cart", at(16, 30), 2, 100),
    ("impression", at(16, 0), 2, 101), ("click", at(16, 5), 2, 101), ("order", at(18, 1), 2, 101),
    # the window crosses midnight: the click sits in the next day's partition
    ("impression", at(23, 30), 3, 105), ("click", at(0, 10, day=D + dt.timedelta(days=1)), 3, 105),
]
EXPECTED_LABELS = {  # (user, product, hour) -> (click, conv)
    (1, 100, 10): (1, 0), (1, 101, 10): (0, 0), (1, 102, 10): (0, 0), (1, 103, 14): (1, 0),
    (1, 104, 14): (0, 0), (2, 100, 16): (0, 1), (2, 101, 16): (1, 0), (3, 105, 23): (1, 0),
}


@pytest.fixture(scope="module")
def label_lake(tmp_path_factory) -> Path:
    return write_lake(tmp_path_factory.mktemp("label_lake"), LABEL_EVENTS)


def test_attribution_window_labels(label_lake):
    products, _ = build_dims(label_lake, D)
    rows = training_rows(label_lake, D, products, attribution_s=3600)
    assert len(rows) == len(EXPECTED_LABELS)
    got = {(int(r.user_id), int(r.product_id), int(r.ts_ms // 3_600_000 % 24)): (int(r.label_click),
                                                                                 int(r.label_conv))
           for r in rows.itertuples()}
    assert got == EXPECTED_LABELS


def test_attribution_window_setting_is_used(label_lake):
    products, _ = build_dims(label_lake, D)
    rows = training_rows(label_lake, D, products, attribution_s=30 * 60)
    got = {(int(r.user_id), int(r.product_id)): int(r.label_click) for r in rows.itertuples()}
    assert got[(1, 100)] == 0  # 59 min > 30 min
    assert got[(2, 101)] == 1  # 5 min


def test_run_etl_writes_the_same_labels(label_lake):
    summary = run_etl(label_lake, as_of=D + dt.timedelta(days=1))
    assert summary.impressions == len(EXPECTED_LABELS)
    part = read_partition(label_lake, "training", D).sort_values(["ts_ms", "user_id", "product_id"])
    products, _ = build_dims(label_lake, D)
    direct = training_rows(label_lake, D, products, 3600).sort_values(["ts_ms", "user_id", "product_id"])
    pd.testing.assert_frame_equal(part[list(direct.columns)].reset_index(drop=True),
                                  direct.reset_index(drop=True))
    # the next day has no impressions: no training partition, and the tmp dirs are gone
    assert not (label_lake / "features" / "training" / f"date={D + dt.timedelta(days=1)}").exists()
    assert not list((label_lake / "features").rglob(".*.tmp-*"))


# ---------------------------------------------------------------------------------------------------
# windowed real-time features
T = at(12, 2, 30)  # bucket (5 min) starts 12:00:00 -> product window [11:05:00, 12:02:30)
WINDOW_EVENTS = [
    # clicks on product 103 by user 4 (not the requesting user)
    ("click", at(11, 4, 59), 4, 103), ("click", at(11, 5, 0), 4, 103), ("click", at(11, 30), 4, 103),
    ("click", at(12, 2, 29), 4, 103), ("click", at(12, 2, 30), 4, 103), ("click", at(12, 3), 4, 103),
    # impressions of 103 (the one at T is the request's own: not before T)
    ("impression", at(11, 4), 4, 103), ("impression", at(11, 10), 4, 103), ("impression", at(11, 50), 4, 103),
    ("impression", at(12, 0), 4, 103),
    # user 3's session: minute window at T is [11:58:00, 12:02:30)
    ("click", at(11, 57, 59), 3, 101), ("click", at(11, 58), 3, 101), ("click", at(12, 1), 3, 104),
    ("click", at(12, 2, 30), 3, 105),  # at T: neither counted nor "last viewed" at T
    ("impression", T, 3, 103),
    # last viewed category freshness: last click 12:02:30 (books); 30 minute-buckets later -> books,
    # 31 -> none
    ("impression", at(12, 32, 59), 3, 100), ("impression", at(12, 33, 0), 3, 102),
    # a user who never clicked
    ("impression", T, 5, 103),
]
EXPECTED_WINDOWS = {  # (user, ts) -> views_last_hour(103 only), session clicks, last viewed category
    (3, T): (3, 2, FASH),
    (5, T): (3, 0, -1),
    (3, at(12, 32, 59)): (None, 0, BOOK),
    (3, at(12, 33, 0)): (None, 0, -1),
}


@pytest.fixture(scope="module")
def window_lake(tmp_path_factory) -> Path:
    return write_lake(tmp_path_factory.mktemp("window_lake"), WINDOW_EVENTS)


def _ms(ts: pd.Timestamp) -> int:
    return int(ts.value // 1_000_000)


def test_windowed_features_by_hand(window_lake):
    products, _ = build_dims(window_lake, D)
    rows = training_rows(window_lake, D, products, 3600)
    assert len(rows) == len(EXPECTED_WINDOWS) + 4  # + user 4's impressions of 103
    for (user, ts), (views, session, last_cat) in EXPECTED_WINDOWS.items():
        r = rows[(rows["user_id"] == user) & (rows["ts_ms"] == _ms(ts))]
        assert len(r) == 1, (user, ts)
        r = r.iloc[0]
        if views is not None:
            assert r["views_last_hour"] == views
            # impressions of 103 in the window: 11:10, 11:50, 12:00 (11:04 is out, T is not before T)
            assert r["ctr_last_hour"] == pytest.approx(float(smoothed_ctr(views, 3)))
        assert r["session_clicks_last_5m"] == session, (user, ts)
        assert r["last_viewed_category"] == last_cat, (user, ts)
        assert r["time_of_day"] == pytest.approx(((_ms(ts) / 1000 + 7 * 3600) % 86400) / 3600)
    at_33 = rows[rows["ts_ms"] == _ms(at(12, 33))].iloc[0]
    assert at_33["views_last_hour"] == 0  # product 102 was never clicked


def test_online_ring_buffers_equal_offline_windows(window_lake, redis_client):
    """Replaying every event before t into the online store gives the offline values at t."""
    products, _ = build_dims(window_lake, D)
    rows = training_rows(window_lake, D, products, 3600).sort_values("ts_ms", kind="stable")
    ev = pd.read_parquet(window_lake / "events").sort_values("ts", kind="stable")
    ev["ts_ms"] = ev["ts"].astype("datetime64[ms, UTC]").astype("int64")
    cat = dict(zip(products["product_id"], products["category"], strict=True))
    store = OnlineStore(redis_client)
    applied = 0
    for r in rows.itertuples():
        todo = ev.iloc[applied:]
        todo = todo[todo["ts_ms"] < r.ts_ms]
        for e in todo.itertuples():
            store.apply_event(e.event_id, e.event_type, e.ts_ms, e.user_id, e.product_id, cat[e.product_id])
        applied += len(todo)
        now_s = r.ts_ms / 1000.0
        prt = read_product_rt(store, [r.product_id], now_s)
        urt = read_user_rt(store, r.user_id, now_s)
        assert prt["views_last_hour"][0] == r.views_last_hour
        assert prt["ctr_last_hour"][0] == pytest.approx(r.ctr_last_hour, rel=1e-6)
        assert urt["session_clicks_last_5m"] == r.session_clicks_last_5m
        assert urt["last_viewed_category"] == r.last_viewed_category
