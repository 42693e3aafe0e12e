"""The synthetic world: deterministic, readable lake, behaviour driven by the hidden model, drift, images."""

from __future__ import annotations

from pathlib import Path

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from batch.world.generate import SIZES, build_world
from batch.world.hidden import HOUR_PROFILE, HiddenModel
from batch.world.images import draw_product_image
from engines.search.analyzer import analyzer
from engines.search.stored import kept_words, stored_query
from gpu_core.errors import ConfigError, LakeError
from gpu_core.schema import AGE_GROUPS, CATEGORIES, CONDITION_GRADES, DEVICE_TYPES, EVENT_TYPES, GENDERS

TABLES = ("users", "sellers", "products")
KEYS = {"users": "user_id", "sellers": "seller_id", "products": "product_id", "events": "event_id"}


def _read(out: Path, name: str) -> pd.DataFrame:
    df = pd.read_parquet(out / name)
    if "date" in df.columns:
        df["date"] = df["date"].astype(str)
    return df.sort_values(KEYS[name]).reset_index(drop=True)


def _labelled_impressions(out: Path) -> tuple[pd.DataFrame, HiddenModel]:
    """Impressions with clicked = 1 when the same request clicked the product."""
    ev = pd.read_parquet(
        out / "events", columns=["event_type", "request_id", "product_id", "user_id", "position"]
    )
    imp = ev[ev.event_type == "impression"]
    clk = ev.loc[ev.event_type == "click", ["request_id", "product_id"]].drop_duplicates().assign(clicked=1)
    imp = imp.merge(clk, on=["request_id", "product_id"], how="left").fillna({"clicked": 0})
    return imp, HiddenModel.load(out)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, object, list]:
    out = tmp_path_factory.mktemp("world") / "lake"
    calls: list = []
    summary = build_world("tiny", seed=0, out=out, progress=lambda *a: calls.append(a))
    return out, summary, calls


# ------------------------------------------------------------------------------------------------
def test_same_seed_identical_tables_and_other_seed_differs(tmp_path):
    kw = dict(days=4, images=False)
    a = build_world("tiny", seed=3, out=tmp_path / "a", **kw).out
    b = build_world("tiny", seed=3, out=tmp_path / "b", scheduler="synchronous", **kw).out  # any scheduler
    c = build_world("tiny", seed=4, out=tmp_path / "c", **kw).out
    for name in (*TABLES, "events"):
        pd.testing.assert_frame_equal(_read(a, name), _read(b, name))
    assert pd.read_parquet(a / "_hidden" / "users_hidden.parquet").equals(
        pd.read_parquet(b / "_hidden" / "users_hidden.parquet")
    )
    for name in ("users", "products"):
        assert not _read(a, name).equals(_read(c, name))
    ea, ec = _read(a, "events"), _read(c, "events")
    assert len(ea) != len(ec) or not ea["product_id"].equals(ec["product_id"])


def test_lake_layout_readable_by_dask_and_pandas(world):
    out, summary, _ = world
    dates = sorted(p.name for p in (out / "events").iterdir())
    assert dates == [f"date={d:%Y-%m-%d}" for d in pd.date_range("2026-10-01", periods=30)]
    ddf = dd.read_parquet(out / "events")
    assert ddf.npartitions >= 30
    assert set(ddf["date"].astype(str).unique().compute()) == {d.split("=")[1] for d in dates}
    ev = pd.read_parquet(out / "events")
    assert len(ev) == len(ddf) == summary.counts["events"]
    assert {
        "event_id",
        "event_type",
        "ts",
        "user_id",
        "product_id",
        "request_id",
        "position",
        "model_version",
        "session_id",
        "device_type",
        "query",
    } <= set(ev.columns)
    assert str(ev["ts"].dtype) == "datetime64[ms, UTC]"
    assert ev["position"].dtype == np.int16 and ev["user_id"].dtype == np.int64
    assert ev["event_id"].is_unique
    assert set(ev["event_type"]) == set(EVENT_TYPES)
    assert ev["position"].between(1, 20).all()
    assert set(ev["device_type"]) <= set(DEVICE_TYPES) and (ev["model_version"] == "legacy-0").all()
    # an event sits in the partition of its request's UTC day (late clicks may cross midnight, rarely)
    assert (ev["date"].astype(str) == ev["ts"].dt.strftime("%Y-%m-%d")).mean() > 0.99
    # every request shows positions 1..20 once
    imp = ev[ev.event_type == "impression"]
    per_req = imp.groupby("request_id")["position"].agg(["min", "max", "size", "nunique"])
    assert (per_req["min"] == 1).all() and (per_req["size"] == per_req["nunique"]).all()
    assert (per_req["max"] == 20).mean() > 0.95
    # follow-up events keep the impression's position and come after it
    imp_keys = imp[["request_id", "product_id", "position", "ts"]]
    fol = ev[ev.event_type != "impression"].merge(
        imp_keys, on=["request_id", "product_id"], suffixes=("", "_imp")
    )
    assert len(fol) == (ev.event_type != "impression").sum()
    assert (fol["position"] == fol["position_imp"]).all() and (fol["ts"] > fol["ts_imp"]).all()
    # searches carry a query, feeds do not; queries are about categories
    assert 0.1 < (imp["query"] != "").mean() < 0.6

    users, sellers, products = (_read(out, t) for t in TABLES)
    assert set(users["age_group"]) <= set(AGE_GROUPS) and set(users["gender"]) <= set(GENDERS)
    assert users["max_distance_km"].dtype == np.float32 and (users["max_distance_km"] == 500).mean() > 0.6
    assert users["home_lat"].between(5.0, 21.0).all() and users["home_lon"].between(96.5, 106.5).all()
    assert set(products["category"]) == set(CATEGORIES)
    assert set(products["condition_grade"]) <= set(CONDITION_GRADES)
    assert products["quality_score"].between(0, 1).all() and (products["price_thb"] > 0).all()
    assert 0.9 < products["in_stock"].mean() < 0.99
    assert products["seller_id"].isin(sellers["seller_id"]).all()
    assert sellers["banned"].mean() < 0.05
    assert products["title"].str.contains("[\u0e00-\u0e7f]", regex=True).mean() > 0.2  # Thai titles
    assert products["title"].str.contains("^[ -~]+$", regex=True).mean() > 0.2  # English titles
    orders = ev[ev.event_type == "order"].merge(products[["product_id", "in_stock"]], on="product_id")
    assert len(orders) > 0 and orders["in_stock"].all()


def test_hidden_parameters_stay_out_of_public_tables(world):
    out, _, _ = world
    public = set()
    for name in (*TABLES, "events"):
        public |= set(pd.read_parquet(out / name).columns)
    assert not {c for c in public if "affinity" in c or "sensitivity" in c or c == "activity"}
    hidden = pd.read_parquet(out / "_hidden" / "users_hidden.parquet")
    assert {"price_sensitivity", "affinity_fashion"} <= set(hidden.columns)


def test_tiny_counts_and_summary(world):
    out, summary, calls = world
    spec = SIZES["tiny"]
    assert (len(_read(out, "users")), len(_read(out, "sellers")), len(_read(out, "products"))) == (
        spec.n_users,
        spec.n_sellers,
        spec.n_products,
    )
    assert 50_000 <= summary.counts["events"] <= 100_000
    ev = pd.read_parquet(out / "events", columns=["event_type"])
    assert ev["event_type"].value_counts().to_dict() == {k: v for k, v in summary.events_by_type.items() if v}
    n = summary.events_by_type
    assert n["impression"] > n["click"] > n["add_to_cart"] > n["order"] > 0
    assert summary.out == out.resolve() and (out / "_world.json").exists()
    assert {c[0] for c in calls} == {"tables", "images", "events"}
    last = {stage: (done, total) for stage, done, total in calls}
    assert all(done == total for done, total in last.values())
    assert not list(out.parent.glob(f".{out.name}.*"))  # no temp folders left


def test_clicks_follow_the_hidden_model(world):
    out, _, _ = world
    imp, model = _labelled_impressions(out)
    u, p = imp["user_id"].to_numpy() - 1, imp["product_id"].to_numpy() - 1
    cat = model.product_category[p]
    in_top = (model.top_categories(3)[u] == cat[:, None]).any(axis=1)
    low = model.affinity[u, cat] < 0.02
    assert in_top.sum() > 5_000 and low.sum() > 5_000
    assert imp["clicked"][in_top].mean() > 3.0 * imp["clicked"][low].mean()

    by_pos = imp.groupby("position")["clicked"].mean()
    assert by_pos.loc[1:5].mean() > 1.5 * by_pos.loc[16:20].mean()
    assert np.corrcoef(by_pos.index, by_pos.to_numpy())[0, 1] < -0.7

    # searches: listings whose title contains the query are clicked far more than the others shown
    q = pd.read_parquet(out / "events", columns=["event_type", "request_id", "product_id", "query"])
    q = q[(q.event_type == "impression") & (q["query"] != "")].drop(columns="event_type")
    q = q.merge(imp[["request_id", "product_id", "clicked"]], on=["request_id", "product_id"])
    titles = _read(out, "products").set_index("product_id")["title"]
    # the lake keeps each query's stored form (engines.search.stored); the generator keeps every word
    words = {v: "".join(kept_words(v).split()) for v in q["query"].unique()}
    match = np.array([words[s] in "".join(t.lower().split())
                      for s, t in zip(q["query"], titles.loc[q["product_id"]], strict=True)])
    assert match.sum() > 1_000 and (~match).sum() > 5_000
    assert q["clicked"][match].mean() > 2.0 * q["clicked"][~match].mean()

    dist = model.distance_km(u, p)
    near, far = dist < 50, dist > 300
    assert near.sum() > 3_000 and far.sum() > 3_000
    assert imp["clicked"][near].mean() > 1.2 * imp["clicked"][far].mean()

    # late clicks exist, so the 1-hour attribution window matters, but most are within minutes
    ev = pd.read_parquet(out / "events", columns=["event_type", "request_id", "product_id", "ts"])
    i = ev[ev.event_type == "impression"].drop(columns="event_type")
    c = ev[ev.event_type == "click"].merge(i, on=["request_id", "product_id"], suffixes=("", "_imp"))
    delay = (c["ts"] - c["ts_imp"]).dt.total_seconds()
    assert 0.01 < (delay > 3600).mean() < 0.1 and delay.median() < 300


def test_hidden_model_factors():
    rng = np.random.default_rng(0)
    n_u, n_p = 4, 24
    aff = np.full((n_u, 12), 0.01, dtype=np.float32)
    aff[:, 0] = 0.89
    model = HiddenModel(
        affinity=aff,
        price_sensitivity=np.ones(n_u, np.float32),
        activity=np.ones(n_u, np.float32),
        user_lat=np.full(n_u, 13.75),
        user_lon=np.full(n_u, 100.5),
        product_category=np.arange(n_p, dtype=np.int32) % 12,
        product_log_price_ratio=np.zeros(n_p, np.float32),
        product_quality=np.full(n_p, 0.5, np.float32),
        product_trust=np.full(n_p, 0.5, np.float32),
        product_lat=np.full(n_p, 13.75),
        product_lon=np.full(n_p, 100.5),
        product_in_stock=np.ones(n_p, bool),
    )
    pos = np.arange(1, 21)
    logit = model.click_logit(np.zeros(20, int), np.zeros(20, int), pos, 12)
    assert np.all(np.diff(logit) < 0)  # position bias
    assert model.click_logit(0, 0, 1, 12) > model.click_logit(0, 1, 1, 12) + 2.0  # affinity
    elec = CATEGORIES.index("electronics")
    assert model.click_logit(0, elec, 1, 21) > model.click_logit(0, elec, 1, 8)  # evening electronics
    assert HOUR_PROFILE[elec, 21] > HOUR_PROFILE[elec, 8]
    # distance decay
    model.product_lat[2] = 18.79  # Chiang Mai, ~580 km away
    assert model.click_logit(0, 2, 1, 12) < model.click_logit(0, 14, 1, 12)
    # price fit: cheaper than the category median is better for a price-sensitive user
    model.product_log_price_ratio[3] = -0.7
    model.product_log_price_ratio[15] = 0.7
    assert model.click_logit(0, 3, 1, 12) > model.click_logit(0, 15, 1, 12)
    assert model.cart_prob(0, 3) > model.cart_prob(0, 15)
    model.product_in_stock[3] = False
    assert model.order_prob(0, 3) == 0.0 and model.order_prob(0, 4) > 0.0
    boost = np.zeros(12)
    boost[5] = 1.0
    assert model.click_logit(0, 5, 1, 12, category_boost=boost) > model.click_logit(0, 5, 1, 12)
    q = model.click_logit(0, 5, 1, 12, query_category=5) - model.click_logit(0, 6, 1, 12, query_category=5)
    assert q > 1.0
    # query-listing relevance: a search's matching title is clicked, carted and bought more
    rel = model.click_logit(0, 5, 1, 12, query_category=5, query_match=True)
    assert rel > model.click_logit(0, 5, 1, 12, query_category=5, query_match=False) + 1.0
    assert model.click_logit(0, 5, 1, 12, query_category=-1, query_match=True) == model.click_logit(0, 5, 1, 12)
    assert model.cart_prob(0, 5, True) > model.cart_prob(0, 5, False) == model.cart_prob(0, 5)
    assert model.order_prob(0, 5, True) > model.order_prob(0, 5, False) == model.order_prob(0, 5)
    probs = model.click_prob(
        rng.integers(0, n_u, 100), rng.integers(0, n_p, 100), rng.integers(1, 21, 100), 10
    )
    assert ((probs > 0) & (probs < 1)).all()


def test_drift_raises_the_category_share_after_the_drift_day(tmp_path):
    kw = dict(seed=5, days=8, images=False)
    drifted = build_world("tiny", out=tmp_path / "d", drift_category="fashion", drift_from_day=4, **kw)
    base = build_world("tiny", out=tmp_path / "b", **kw)
    assert drifted.drift_category == "fashion" and drifted.drift_from_day == 4

    def fashion_click_share(out: Path) -> tuple[float, float, pd.DataFrame]:
        ev = pd.read_parquet(out / "events")
        ev["date"] = ev["date"].astype(str)
        prods = pd.read_parquet(out / "products", columns=["product_id", "category"])
        clicks = ev[ev.event_type == "click"].merge(prods, on="product_id")
        after = clicks["date"] >= "2026-10-05"
        fashion = clicks["category"] == "fashion"
        return fashion[~after].mean(), fashion[after].mean(), ev

    before_d, after_d, ev_d = fashion_click_share(drifted.out)
    before_b, after_b, _ = fashion_click_share(base.out)
    assert after_d > before_d + 0.1
    assert after_d > after_b + 0.1
    assert abs(before_d - before_b) < 0.05  # same seed: days before the drift look alike
    winter = ev_d["query"].isin([stored_query(analyzer().query(q), known=lambda t: True)
                                 for q in ("winter coat", "เสื้อกันหนาว")])
    assert winter.any() and (ev_d.loc[winter, "date"] >= "2026-10-05").all()


def test_images_depend_on_category_and_condition_and_exist(world):
    def thumb(img):  # 16x16 average-pooled pixels
        return img.reshape(16, 4, 16, 4, 3).mean(axis=(1, 3)).ravel()

    for grade in (4, 2, 0):  # a nearest-centroid classifier tells categories apart at any condition
        centroids = np.array([[thumb(draw_product_image(c, grade, s)) for s in range(8)] for c in range(12)])
        centroids = centroids.mean(axis=1)
        hits = [
            np.argmin(((centroids - thumb(draw_product_image(c, grade, 100 + s))) ** 2).sum(axis=1)) == c
            for c in range(12)
            for s in range(5)
        ]
        assert np.mean(hits) >= 0.9
    means = np.array(
        [[draw_product_image(c, 4, s).reshape(-1, 3).mean(axis=0) for s in range(6)] for c in range(12)]
    )  # [12, 6, 3] mean colour per category and seed
    centroid = means.mean(axis=1)
    within = np.linalg.norm(means - centroid[:, None], axis=2).mean()
    between = np.linalg.norm(centroid[:, None] - centroid[None], axis=2)[~np.eye(12, dtype=bool)]
    assert np.median(between) > 2.5 * within and between.min() > 0.5 * within

    def roughness(img):  # mean absolute neighbour difference: noise and scratches raise it
        f = img.astype(np.float32)
        return np.abs(np.diff(f, axis=0)).mean() + np.abs(np.diff(f, axis=1)).mean()

    for c in range(12):
        new = np.mean([roughness(draw_product_image(c, 4, s)) for s in range(4)])
        parts = np.mean([roughness(draw_product_image(c, 0, s)) for s in range(4)])
        assert parts > 2.0 * new
    a = draw_product_image(3, 2, seed=11)
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, draw_product_image(3, 2, seed=11))
    assert not np.array_equal(a, draw_product_image(3, 2, seed=12))
    assert draw_product_image(0, 4, 1, size=32).shape == (32, 32, 3)
    with pytest.raises(ValueError):
        draw_product_image(12, 0, 0)

    out, summary, _ = world
    products = _read(out, "products")
    assert (products["image_path"] == "images/" + products["product_id"].astype(str) + ".png").all()
    assert summary.counts["images"] == len(products)
    for rel in products["image_path"].iloc[::250]:
        with Image.open(out / rel) as im:
            assert im.size == (64, 64) and im.mode == "RGB"


def test_refuses_foreign_folder_and_leaves_nothing_on_failure(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(LakeError):
        build_world("tiny", out=foreign, days=1, images=False)
    assert (foreign / "precious.txt").read_text() == "keep me"

    def boom(stage, done, total):
        if stage == "events":
            raise RuntimeError("disk full")

    target = tmp_path / "lake"
    with pytest.raises(RuntimeError):
        build_world("tiny", out=target, days=2, images=False, progress=boom)
    assert not target.exists() and not list(tmp_path.glob(".lake.*"))
    # an earlier build is replaced in place
    first = build_world("tiny", out=target, days=1, images=False, seed=1)
    second = build_world("tiny", out=target, days=2, images=False, seed=1)
    assert first.out == second.out and len(list((target / "events").iterdir())) == 2
    with pytest.raises(ConfigError):
        build_world("huge", out=tmp_path / "x")
    with pytest.raises(ConfigError):
        build_world("tiny", out=tmp_path / "x", drift_category="yachts")


def test_world_built_on_s3_equals_the_local_build(s3_bucket, tmp_path):
    """``jaikod world build --out s3://bucket/lake`` (tiny, 2 days) writes, through the lake's filesystem seam,
    the tables, event partitions and hidden model a local build of the same seed writes, frame by frame;
    a rebuild replaces it in place and leaves no temporary prefix. Images are PUT as the same PNG bytes."""
    import json

    from typer.testing import CliRunner

    from batch.lake import event_dates, read_events, read_table
    from batch.world.images import write_product_images
    from gpu_core.lake import EVENT_FIELDS, LakePath, lake_path
    from jaikod_cli import app

    local = build_world("tiny", seed=5, out=tmp_path / "lake", days=2, images=False).out
    url = f"s3://{s3_bucket}/worlds/lake"
    result = CliRunner().invoke(app, ["world", "build", "--size", "tiny", "--seed", "5", "--days", "2",
                                      "--no-images", "--out", url])
    assert result.exit_code == 0, result.output
    lake = lake_path(url)
    assert isinstance(lake, LakePath) and not any(tmp_path.rglob("*s3:*"))  # nothing went to local disk
    for name in TABLES:  # the batch jobs' readers, on both lakes
        key = KEYS[name]
        want, got = read_table(local, name), read_table(lake, name)
        assert len(want) == getattr(SIZES["tiny"], f"n_{name}")
        pd.testing.assert_frame_equal(want.sort_values(key).reset_index(drop=True),
                                      got.sort_values(key).reset_index(drop=True), check_exact=True, obj=name)
    days = event_dates(local)
    assert event_dates(lake) == days and len(days) == 2
    want, got = (read_events(p, days, EVENT_FIELDS).sort_values("event_id").reset_index(drop=True)
                 for p in (local, lake))
    assert len(want) > 100
    pd.testing.assert_frame_equal(want, got, check_exact=True, obj="events")
    a, b = HiddenModel.load(local), HiddenModel.load(lake)
    np.testing.assert_array_equal(a.affinity, b.affinity)
    np.testing.assert_array_equal(a.price_sensitivity, b.price_sensitivity)
    assert a.params == b.params
    summary = {k: v for k, v in json.loads((lake / "_world.json").read_text()).items() if k not in ("seconds", "out")}
    assert summary == {k: v for k, v in json.loads((local / "_world.json").read_text()).items()
                       if k not in ("seconds", "out")}

    build_world("tiny", seed=5, out=url, days=1, images=False)  # replaces the earlier build
    assert event_dates(lake) == days[:1]
    assert [p.name for p in lake.parent.iterdir()] == ["lake"]  # no .lake.building-* / .lake.old-* left

    ids, cats, grades = np.array([1, 2, 3]), np.array([0, 3, 5]), np.array([0, 1, 2])
    assert write_product_images(lake / "images", ids, cats, grades, seed=5) == 3
    write_product_images(tmp_path / "images", ids, cats, grades, seed=5)
    for pid in ids:
        assert (lake / "images" / f"{pid}.png").read_bytes() == (tmp_path / "images" / f"{pid}.png").read_bytes()
