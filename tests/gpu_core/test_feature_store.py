"""The online store on a real Redis: snapshot switch, idempotent real-time updates, windows."""

from __future__ import annotations

import numpy as np

from engines.realtime import read_product_rt, read_user_rt
from gpu_core.feature_store import PRODUCT_WINDOW, OnlineStore
from gpu_core.schema import CONTEXT_DAILY, PRODUCT_DAILY, USER_DAILY


def _snapshot(store, version, n_users=3, n_products=4, value=1.0):
    store.write_snapshot(
        version, user_ids=np.arange(1, n_users + 1), user_rows=np.full((n_users, USER_DAILY.width), value, np.float32),
        product_ids=np.arange(1, n_products + 1),
        product_rows=np.full((n_products, PRODUCT_DAILY.width), value, np.float32),
        product_seller=np.arange(n_products), product_region=np.zeros(n_products, np.int32),
        context_row=np.zeros(CONTEXT_DAILY.width, np.float32), popular_by_region={0: np.array([2, 1])},
        trending=np.array([3, 2, 1]))


def test_snapshot_switch_and_cleanup(redis_client):
    store = OnlineStore(redis_client)
    assert store.current_version() is None
    _snapshot(store, "v1", value=1.0)
    assert store.current_version() == "v1"
    rows, found = store.read_rows("v1", "u", [1, 2, 99])
    assert found.tolist() == [True, True, False]
    assert (rows[:2] == 1.0).all()
    _snapshot(store, "v2", value=2.0)
    _snapshot(store, "v3", value=3.0)
    assert store.current_version() == "v3"
    assert not redis_client.keys("jk:s:v1:*"), "versions beyond `keep` are deleted"
    assert redis_client.keys("jk:s:v2:*"), "the previous version stays for readers in flight"
    mirror = store.load_product_mirror("v3")
    assert mirror["ids"].tolist() == [1, 2, 3, 4] and (mirror["rows"] == 3.0).all()
    assert store.popular("v3", 0).tolist() == [2, 1]
    assert store.trending().tolist() == [3, 2, 1]


def test_apply_event_is_idempotent_and_windowed(redis_client):
    store = OnlineStore(redis_client)
    t0 = 1_700_000_000.0
    for i in range(5):
        assert store.apply_event(f"e{i}", "impression", int((t0 + i) * 1000), 1, 10, 2) == 1
    assert store.apply_event("c1", "click", int((t0 + 10) * 1000), 1, 10, 2, query="iphone") == 1
    assert store.apply_event("c1", "click", int((t0 + 10) * 1000), 1, 10, 2) == 0  # redelivery
    rt = read_product_rt(store, [10, 11], t0 + 60)
    assert rt["views_last_hour"].tolist() == [1.0, 0.0]
    assert rt["stock_status"].tolist() == [1.0, 1.0]
    assert rt["ctr_last_hour"][0] > rt["ctr_last_hour"][1]
    user = read_user_rt(store, 1, t0 + 60)
    assert user == {"session_clicks_last_5m": 1.0, "last_viewed_category": 2, "current_search_query": "iphone"}
    # an hour later the product window is empty, the session window long before
    later = t0 + PRODUCT_WINDOW.width_s * PRODUCT_WINDOW.n_buckets + 600
    assert read_product_rt(store, [10], later)["views_last_hour"].tolist() == [0.0]
    assert read_user_rt(store, 1, t0 + 400)["session_clicks_last_5m"] == 0.0
    assert read_user_rt(store, 1, t0 + 3 * 3600)["last_viewed_category"] == -1


def test_order_marks_sold_and_flags(redis_client):
    store = OnlineStore(redis_client)
    store.apply_event("o1", "order", 1_700_000_000_000, 1, 10, 0)
    store.set_flags(11, boosted=True)
    rt = read_product_rt(store, [10, 11], 1_700_000_100.0)
    assert rt["stock_status"].tolist() == [0.0, 1.0]
    assert rt["is_boosted_now"].tolist() == [0.0, 1.0]


def test_event_flags_are_set_once_per_event_id(redis_client):
    """A redelivered event sets no flag again: replaying "out of stock" cannot undo a later restock."""
    store = OnlineStore(redis_client)
    ts = 1_700_000_000_000
    assert store.apply_event("s1", "impression", ts, 1, 10, 0, sold=True, boosted=True) == 1
    assert store.apply_event("s2", "impression", ts + 1, 1, 10, 0, sold=False) == 1
    assert store.apply_event("s1", "impression", ts, 1, 10, 0, sold=True, boosted=False) == 0  # redelivery
    rt = read_product_rt(store, [10], 1_700_000_100.0)
    assert rt["stock_status"].tolist() == [1.0] and rt["is_boosted_now"].tolist() == [1.0]
