"""Materialisation: a reader running while two snapshots are written only ever sees whole versions
(pointer, meta, user rows, product rows and the product mirror all of one version), and old versions
(Redis keys and index folders) are removed after the switch."""

from __future__ import annotations

import datetime as dt
import threading

import numpy as np
import redis

from batch.dataset import daily_views
from batch.etl import etl_as_of
from batch.materialize import current_index_dir, index_root, run_materialize
from gpu_core.feature_store import VERSIONS, OnlineStore, snap_key
from gpu_core.schema import PRODUCT_DAILY, USER_DAILY


def _expected(lake, day: dt.date) -> dict:
    v = daily_views(lake, day)
    return {"day": day.isoformat(), "user_ids": v.user_ids, "product_ids": v.product_ids,
            "u": USER_DAILY.pack(v.user, len(v.user_ids)), "p": PRODUCT_DAILY.pack(v.product, len(v.product_ids))}


def _differing(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    rows = np.flatnonzero(np.any(a != b, axis=1))
    return rows[np.linspace(0, len(rows) - 1, min(n, len(rows))).astype(int)]


def test_reader_sees_only_whole_versions(tiny_world, jaikod_env, redis_client, redis_server):
    lake = tiny_world.lake
    last = etl_as_of(lake)
    as_of = {"va": last - dt.timedelta(days=1), "vb": last, "vc": last - dt.timedelta(days=1)}
    exp = {v: _expected(lake, a + dt.timedelta(days=1)) for v, a in as_of.items()}
    ea, eb = exp["va"], exp["vb"]
    assert np.array_equal(ea["user_ids"], eb["user_ids"]) and np.array_equal(ea["product_ids"], eb["product_ids"])
    # rows that differ between the two days, so that a mix of versions cannot go unnoticed
    ui = _differing(ea["u"], eb["u"], 25)
    pi = _differing(ea["p"], eb["p"], 25)
    assert len(ui) >= 10 and len(pi) >= 10
    uids, pids = ea["user_ids"][ui], ea["product_ids"][pi]

    done = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            client = redis.Redis.from_url(redis_server.url)
            for v in ("va", "vb"):
                run_materialize(lake, as_of[v], client=client, version=v)
        except BaseException as exc:  # surfaced by the main thread
            errors.append(exc)
        finally:
            done.set()

    store = OnlineStore(redis_client)
    seen: dict[str, int] = {}
    th = threading.Thread(target=writer)
    th.start()
    reads = 0
    while not done.is_set() or reads < 3:
        v = store.current_version()
        if v is None:
            assert not done.is_set() or errors
            continue
        e = exp[v]
        meta = {k.decode(): x.decode() for k, x in redis_client.hgetall(snap_key(v, "meta")).items()}
        assert meta["day"] == e["day"] and int(meta["n_users"]) == len(e["user_ids"])
        urows, ufound = store.read_rows(v, "u", uids)
        prows, pfound = store.read_rows(v, "p", pids)
        assert ufound.all() and pfound.all(), v
        np.testing.assert_array_equal(urows, e["u"][ui], err_msg=v)
        np.testing.assert_array_equal(prows, e["p"][pi], err_msg=v)
        mirror = store.load_product_mirror(v)
        np.testing.assert_array_equal(mirror["ids"], e["product_ids"])
        np.testing.assert_array_equal(mirror["rows"], e["p"], err_msg=v)
        seen[v] = seen.get(v, 0) + 1
        reads += 1
    th.join()
    assert not errors, errors
    assert set(seen) == {"va", "vb"}, seen  # the reader was there before and after the switch
    assert store.current_version() == "vb"
    assert [x.decode() for x in redis_client.lrange(VERSIONS, 0, -1)] == ["vb", "va"]

    # a third version: the oldest one's keys and index folder go, the newest two stay
    run_materialize(lake, as_of["vc"], client=redis_client, version="vc")
    assert store.current_version() == "vc"
    assert [x.decode() for x in redis_client.lrange(VERSIONS, 0, -1)] == ["vc", "vb"]
    assert not list(redis_client.scan_iter(match=snap_key("va", "*")))
    assert redis_client.exists(snap_key("vb", "u", int(uids[0])))
    assert current_index_dir() == index_root() / "vc"
    assert sorted(p.name for p in index_root().iterdir() if p.is_dir()) == ["vb", "vc"]
    rows, found = store.read_rows("vc", "u", uids)
    assert found.all()
    np.testing.assert_array_equal(rows, exp["vc"]["u"][ui])


def test_region_popular_lists_are_as_long_as_the_retrieval_pool():
    """A cold-start user's candidates are the region's popular list cut by the filters: the list holds the
    retrieval pool (n_candidates x retrieval_pool_factor), most popular first, eligible listings only."""
    from types import SimpleNamespace

    from batch.materialize import POPULAR_PER_REGION, popular_lists, popular_per_region

    assert popular_per_region(SimpleNamespace(n_candidates=1000, retrieval_pool_factor=3.0)) == 3000
    assert popular_per_region(SimpleNamespace(n_candidates=100, retrieval_pool_factor=1.0)) == POPULAR_PER_REGION
    rng = np.random.default_rng(0)
    n = 20_000
    ids = np.arange(n, dtype=np.int64)
    pop, region, eligible = rng.random(n), rng.integers(0, 3, n), rng.random(n) > 0.1
    by_region, _ = popular_lists(pop, region, eligible, ids, per_region=3000)
    for r in range(3):
        got = by_region[r]
        want = ids[(region == r) & eligible]
        want = want[np.argsort(-pop[want], kind="stable")][:3000]
        assert len(got) == 3000 and got.tolist() == want.tolist()
