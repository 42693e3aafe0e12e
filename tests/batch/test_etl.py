"""Point-in-time correctness (no leakage) of the ETL on a copy of the tiny world's lake.

Changing events at/after a time t' never changes a training row with ts < t' (except its labels,
and only within the attribution window), and changing the events of day D or later never changes the
daily features of D (features as of D 00:00).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from batch.etl import build_dims, read_partition, run_etl, training_rows
from batch.lake import event_dates
from tests.support.lake import copy_lake

FEATURES = ["views_last_hour", "ctr_last_hour", "session_clicks_last_5m", "last_viewed_category", "text_bm25",
            "text_coverage", "text_all_required", "device_type", "time_of_day", "position", "query"]
LABELS = ["label_click", "label_conv"]


def part_file(lake: Path, day: dt.date) -> Path:
    return next((lake / "events" / f"date={day.isoformat()}").glob("*.parquet"))


def read_day(lake: Path, day: dt.date) -> pd.DataFrame:
    return pd.read_parquet(part_file(lake, day))


def rewrite_day(lake: Path, day: dt.date, df: pd.DataFrame) -> None:
    df.to_parquet(part_file(lake, day), index=False)


def ms(ts: pd.Series) -> np.ndarray:
    return ts.astype("datetime64[ms, UTC]").astype("int64").to_numpy()


@pytest.fixture()
def lake_copy(tiny_world, tmp_path) -> Path:
    return copy_lake(tiny_world.lake, tmp_path / "lake")


def test_training_rows_never_read_events_at_or_after_t(lake_copy):
    days = event_dates(lake_copy)
    day = days[-3]
    products, _ = build_dims(lake_copy, days[-1])
    before = training_rows(lake_copy, day, products, 3600)
    t_cut = int(np.median(before["ts_ms"]))
    win_ms = 3600 * 1000

    ev = read_day(lake_copy, day)
    ev_ms = ms(ev["ts"])
    imp = ev[(ev["event_type"] == "impression") & (ev_ms < t_cut) & (ev_ms >= t_cut - 30 * 60_000)]
    assert len(imp) > 20
    # 1. drop every event at/after t' (the rest of the day and the next day's partition)
    kept = ev[ev_ms < t_cut]
    # 2. add clicks, carts and impressions at/after t' on the same (user, product) pairs as the rows
    #    just before t': they fall into their attribution windows and into every window at/after t'
    chosen = imp.drop_duplicates(["user_id", "product_id"]).head(40)
    extra = []
    for k, etype in enumerate(["click", "add_to_cart", "impression", "click"]):
        e = chosen.copy()
        e["event_type"] = etype
        e["ts"] = pd.Timestamp(t_cut, unit="ms", tz="UTC") + pd.to_timedelta(k * 1000, unit="ms")
        e["event_id"] = e["event_id"] + f"-x{k}"
        extra.append(e)
    rewrite_day(lake_copy, day, pd.concat([kept, *extra], ignore_index=True))
    nxt = day + dt.timedelta(days=1)
    rewrite_day(lake_copy, nxt, read_day(lake_copy, nxt).head(0))

    after = training_rows(lake_copy, day, products, 3600)
    key = ["request_id", "user_id", "product_id", "ts_ms"]
    old = before[before["ts_ms"] < t_cut].set_index(key).sort_index()
    new = after[after["ts_ms"] < t_cut].set_index(key).sort_index()
    assert old.index.equals(new.index)
    pd.testing.assert_frame_equal(old[FEATURES], new[FEATURES])
    far = old.index.get_level_values("ts_ms") < t_cut - win_ms
    pd.testing.assert_frame_equal(old.loc[far, LABELS], new.loc[far, LABELS])
    # the test has teeth: labels inside the window did change, and rows at/after t' see the new events
    changed = (old[LABELS] != new[LABELS]).any(axis=1)
    assert changed.sum() >= 10
    assert (old.index.get_level_values("ts_ms")[changed.to_numpy()] >= t_cut - win_ms).all()
    late = after[after["ts_ms"] > t_cut]
    assert len(late) == len(chosen)
    assert (late["views_last_hour"] > 0).all() and (late["session_clicks_last_5m"] > 0).all()


def test_daily_features_of_d_ignore_events_of_d_and_later(lake_copy):
    days = event_dates(lake_copy)
    as_of = days[-1]
    run_etl(lake_copy, as_of=as_of)
    names = ["user_daily", "product_daily", "context_daily", "user_clicks"]
    dates = [*days, as_of + dt.timedelta(days=1)]
    first = {(n, d): read_partition(lake_copy, n, d) for n in names for d in dates if n != "user_clicks" or
             d <= as_of}
    train_first = {d: read_partition(lake_copy, "training", d) for d in days}

    cut = days[-3]
    rng = np.random.default_rng(0)
    for d in days:
        if d < cut:
            continue
        ev = read_day(lake_copy, d)
        # drop a third of the day's events and turn impressions into clicks elsewhere
        ev = ev[rng.random(len(ev)) > 0.33].copy()
        flip = (ev["event_type"] == "impression").to_numpy() & (rng.random(len(ev)) < 0.2)
        ev.loc[flip, "event_type"] = "click"
        ev.loc[ev["event_type"] == "click", "event_type"] = np.where(
            rng.random(int((ev["event_type"] == "click").sum())) < 0.5, "order", "click")
        rewrite_day(lake_copy, d, ev)
    run_etl(lake_copy, as_of=as_of)

    for (n, d), df in first.items():
        again = read_partition(lake_copy, n, d)
        if d <= cut and not (n == "user_clicks" and d == cut):
            pd.testing.assert_frame_equal(df, again, obj=f"{n} {d}")
    for d in days:
        if d < cut - dt.timedelta(days=1):  # labels of the day before may look into ``cut``
            pd.testing.assert_frame_equal(train_first[d], read_partition(lake_copy, "training", d),
                                          obj=f"training {d}")
    # teeth: features after ``cut`` did change
    later = cut + dt.timedelta(days=1)
    assert not first[("product_daily", later)].equals(read_partition(lake_copy, "product_daily", later))
    assert not first[("user_daily", later)].equals(read_partition(lake_copy, "user_daily", later))


def test_seller_trust_is_as_of_each_day(world_env):
    """Account-age points are computed at each day's start, never at a later date."""
    import numpy as np

    from batch.etl import DAY_MS, day_start_ms, read_partition
    from batch.lake import event_dates
    from kernels.trust import seller_trust

    lake = world_env.lake
    dims = pd.read_parquet(lake / "features" / "dims" / "products.parquet")
    first, last = event_dates(lake)[0], event_dates(lake)[-1]
    for d in (first, last):
        daily = read_partition(lake, "product_daily", d)
        age = np.maximum((day_start_ms(d) - dims["seller_joined_ms"].to_numpy()) / DAY_MS, 0).astype(np.float32)
        want, _ = seller_trust(dims["seller_verified"].to_numpy(bool), dims["seller_reports"].to_numpy(), age,
                               dims["seller_banned"].to_numpy(bool), xp=np)
        np.testing.assert_allclose(daily["seller_trust_score"].to_numpy(), want, rtol=1e-6)
    early = read_partition(lake, "product_daily", first)["seller_trust_score"].to_numpy()
    late = read_partition(lake, "product_daily", last)["seller_trust_score"].to_numpy()
    assert (late >= early).all() and (late > early).any()  # sellers age; trust never looks ahead
