"""Batch fraud scoring: planted fraudulent listings rank above honest ones; duplicate images of another
seller are found; the materialised PRODUCT_DAILY fraud_score is the batch score."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from batch.dataset import read_dims
from batch.fraud import image_duplicates, score_products
from engines.fraud import combine, fraud_scores, price_risk, seller_risk
from gpu_core.schema import CATEGORIES


def _avg_prices(products: pd.DataFrame) -> np.ndarray:
    avg = products.groupby("category")["price_thb"].mean()
    return np.array([avg.get(c, 1.0) for c in range(len(CATEGORIES))], dtype=np.float32)


def _plant(products: pd.DataFrame, avg: np.ndarray, rng: np.random.Generator, n: int = 40) -> pd.DataFrame:
    """Copies of honest listings turned into typical scams (new ids), each with two or three signals."""
    src = products.sample(n, random_state=int(rng.integers(1 << 31))).copy()
    src["product_id"] = np.arange(10_000_000, 10_000_000 + n)
    kind = np.arange(n) % 4
    cheap = avg[src["category"].to_numpy()] * rng.uniform(0.04, 0.15, n)
    src["price_thb"] = np.where(kind != 3, cheap, src["price_thb"]).astype(np.float32)
    lines = ["แอดไลน์ 0 8 1-2 3 4-5 6 7 8 ครับ", "L I N E: deal4u ติดต่อด่วน", "โอนก่อน ส่งของทันที เลขบัญชี 123-4-56789-0",
             "contact me at cheapdeals at gmail dot com, pay directly"]
    src["title"] = [f"{t} {lines[k]}" if k != 1 else t for t, k in zip(src["title"], kind, strict=True)]
    src.loc[kind == 1, "seller_banned"] = True
    src.loc[kind == 1, "seller_trust_score"] = 0.0
    src.loc[kind == 3, "seller_trust_score"] = 0.1  # 3: untrusted seller, off-platform payment, fair price
    return src


def test_planted_fraud_ranks_above_honest(tiny_world):
    products = read_dims(tiny_world.lake)[0]
    avg = _avg_prices(products)
    honest = products[~products["seller_banned"] & (products["seller_trust_score"] >= 0.5)]
    planted = _plant(honest, avg, np.random.default_rng(7))
    table = pd.concat([honest, planted], ignore_index=True)
    res = score_products(table, avg)
    is_planted = table["product_id"].to_numpy() >= 10_000_000
    s_p, s_h = res.score[is_planted], res.score[~is_planted]
    # every planted listing above every honest one (AUC = 1) and clearly above the demotion line
    assert s_p.min() > s_h.max(), (s_p.min(), s_h.max())
    auc = (s_p[:, None] > s_h[None, :]).mean()
    assert auc == 1.0
    assert np.median(s_p) >= 0.8 and np.quantile(s_h, 0.99) < 0.6
    assert res.notes and "duplicate-image signal skipped" in res.notes[0]  # the tiny world draws no images


def test_duplicate_images_of_another_seller(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    paths = []
    for pid in range(1, 5):
        arr = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
        arr = np.kron(arr[:8, :8], np.ones((8, 8, 1), dtype=np.uint8))  # blocky, distinct per product
        Image.fromarray(arr).save(tmp_path / "images" / f"{pid}.png")
        paths.append(f"images/{pid}.png")
    # product 4 re-uploads product 1's image (another seller); product 3 re-uses product 2's (same seller)
    (tmp_path / "images" / "4.png").write_bytes((tmp_path / "images" / "1.png").read_bytes())
    (tmp_path / "images" / "3.png").write_bytes((tmp_path / "images" / "2.png").read_bytes())
    products = pd.DataFrame({"product_id": [1, 2, 3, 4], "seller_id": [10, 20, 20, 30], "image_path": paths})
    (tmp_path / "products").mkdir()
    products.to_parquet(tmp_path / "products" / "part-0.parquet")
    dup, dup_of, note = image_duplicates(tmp_path, products)
    assert note is None
    assert dup.tolist() == [True, False, False, True]
    assert dup_of.tolist() == [4, -1, -1, 1]


def test_signal_functions_are_monotone():
    ratios = np.array([0.01, 0.1, 0.3, 0.5, 1.0, 3.0])
    assert np.all(np.diff(price_risk(ratios)) <= 0) and price_risk(np.array([1.0]))[0] == 0
    trust = np.linspace(0, 1, 6)
    assert np.all(np.diff(seller_risk(trust, np.zeros(6, bool))) <= 0)
    assert seller_risk(np.array([0.9]), np.array([True]))[0] >= 0.9
    assert combine(np.array([0.5]), np.array([0.5]))[0] == pytest.approx(0.75)
    r = fraud_scores(np.array([0.8, 0.8]), np.array([False, False]), np.array([1.0, 1.0]),
                     np.array([False, True]), np.array([False, False]))
    assert r.score[1] > r.score[0] == 0


def test_materialised_fraud_score_is_the_batch_score(world_env):
    import datetime as dt

    import redis

    from batch.etl import etl_as_of, read_partition
    from gpu_core.feature_store import OnlineStore
    from gpu_core.schema import PRODUCT_DAILY

    lake = world_env.lake
    products = read_dims(lake)[0]
    day = etl_as_of(lake) + dt.timedelta(days=1)
    ctx = read_partition(lake, "context_daily", day)
    avg = ctx[[f"avg_price_{c}" for c in range(len(CATEGORIES))]].to_numpy(np.float32)[0]
    expected = score_products(products, avg, lake).score
    store = OnlineStore(redis.Redis.from_url(world_env.redis_url))
    mirror = store.load_product_mirror(store.current_version())
    served = PRODUCT_DAILY.unpack(mirror["rows"])["fraud_score"]
    order = np.argsort(mirror["ids"])
    assert np.array_equal(mirror["ids"][order], products["product_id"].to_numpy())
    np.testing.assert_allclose(served[order], expected, atol=1e-6)
