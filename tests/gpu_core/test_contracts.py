"""The store contracts in gpu_core: each is written and read through one definition, so changing it changes
both sides at once; nothing outside the contract modules spells a key, an artifact file or a field list."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from gpu_core import feature_store as fs
from gpu_core import lake, replay_log
from gpu_core.feature_store import OnlineStore, SellerRecord, read_seller, write_sellers

ROOT = Path(__file__).resolve().parents[2]


# ---- online store ------------------------------------------------------------------------------------
def test_the_lua_writers_are_generated_from_the_slot_layout():
    product, user = fs.apply_product_script(), fs.apply_user_script()
    for src in (product, user):
        assert "{" not in src.replace("{}", "")  # every placeholder filled
    assert f"'#{fs.P_SOLD}', 1" in product and f"'#{fs.U_LAST_CAT}'" in user and f"'#{fs.U_LAST_MIN}'" in user
    assert f"ring(KEYS[2], {fs.PRODUCT_WINDOW.n_buckets}, pb, {fs.P_IMPR})" in product
    assert f"ring(KEYS[2], {fs.USER_WINDOW.n_buckets}, um, {fs.U_CLICK})" in user


def _slot(key: str) -> int:
    from redis.crc import key_slot

    return key_slot(key.encode())


def test_keys_written_together_share_a_hash_slot():
    """A Lua script or a MULTI on a Redis Cluster touches one slot: the keys each writer takes together
    carry one hash tag (gpu_core.redis_client)."""
    from gpu_core import moderation, streams

    assert _slot(fs.applied_key("e1", 10)) == _slot(fs.rt_product_key(10))  # the product half
    assert len({_slot(k) for k in (fs.user_applied_key("e1", 5), fs.rt_user_key(5), fs.user_query_key(5))}) == 1
    assert _slot(fs.rt_product_key(10)) != _slot(fs.rt_product_key(11))  # listings spread over the cluster
    assert len({_slot(k) for k in (*fs.OverrideKeys.SETS, fs.OverrideKeys.VERSION)}) == 1
    assert _slot(fs.LiveListingKeys.IDS) == _slot(fs.LiveListingKeys.VERSION)
    assert _slot(streams.seen_event_key("e1", "jk:events")) == _slot("jk:events")  # the append script
    mv = "jaikod-ranker/7"
    assert _slot(streams.version_seen_key("click", "e1", mv)) == _slot(streams.VERSION_STATS.format(mv))
    assert len({_slot(k) for k in (streams.MANIFEST, streams.STREAM_STATS, streams.DEAD_LETTER, streams.OUTBOX,
                                   streams.OUTBOX_MANIFEST, streams.archived_key("e1"))}) == 1
    assert len({_slot(k) for k in (streams.BOOST_ARMS, streams.BOOST_ACTIVE, streams.BOOST_SPEND.format("d"))}) == 1
    assert _slot(streams.DRIFT_PSI) == _slot(streams.DRIFT_META)
    assert len({_slot(k) for k in (moderation.done_key("1-0"), moderation.QUEUE, moderation.LABELS,
                                   moderation.label_key(7), moderation.listing_key(7))}) == 1  # the decide script


def test_moving_a_slot_moves_writer_and_reader_together(jaikod_env, redis_client, monkeypatch):
    """Swap where 'sold' and 'boosted' live: the Lua writer, the flag writer and the decoder all follow."""
    from engines.realtime import read_product_rt

    old_sold, old_boost = fs.P_SOLD, fs.P_BOOST
    assert (old_sold, old_boost) == (36, 37)
    monkeypatch.setattr(fs, "P_SOLD", old_boost)
    monkeypatch.setattr(fs, "P_BOOST", old_sold)
    store = OnlineStore(redis_client)  # registers the script generated from the patched layout
    store.apply_event("e1", "order", 1_700_000_000_000, 1, 10, 0)
    store.set_flags(11, boosted=True)
    rt = read_product_rt(store, [10, 11], 1_700_000_000.0)
    assert rt["stock_status"].tolist() == [0.0, 1.0] and rt["is_boosted_now"].tolist() == [0.0, 1.0]
    raw = store.read_product_rt_raw([10, 11])
    assert raw[0, 37] == 1 and raw[0, 36] == 0 and raw[1, 36] == 1  # the bytes really moved


def test_seller_record_roundtrip_and_absence(jaikod_env, redis_client):
    recs = [SellerRecord(7, True, 2, 1_600_000_000_000, False), SellerRecord(8, False, 0, 1_700_000_000_000, True)]
    pipe = redis_client.pipeline()
    write_sellers(pipe, recs)
    pipe.execute()
    assert [read_seller(redis_client, r.seller_id) for r in recs] == recs
    assert read_seller(redis_client, 999) is None and read_seller(redis_client, -1) is None
    assert recs[0].age_days(1_600_000_000_000 + 86_400_000 * 3) == 3.0


def test_user_round_trip_reads_what_the_writers_wrote(jaikod_env, redis_client):
    store = OnlineStore(redis_client)
    redis_client.set(fs.POINTER, "v1")
    redis_client.set(fs.snap_key("v1", "u", 5), np.arange(3, dtype="<f4").tobytes())
    redis_client.incr(fs.OverrideKeys.VERSION)
    store.apply_event("q1", "click", 1_700_000_000_000, 5, 10, 3, query="sofa")
    step = store.parse_user_step(store.user_step(5, "v1").execute())
    assert step["pointer"] == "v1" and step["overrides_version"] == 1 and step["query"] == "sofa"
    assert step["user_rt"][fs.U_LAST_CAT] == 4 and step["user_row"] == np.arange(3, dtype="<f4").tobytes()
    assert "user_row" in store.parse_user_step(store.user_step(5, None).execute())  # None without a version


# ---- lake ----------------------------------------------------------------------------------------------
def test_events_are_staged_then_committed(tmp_path):
    rows = [{"event_id": "a", "event_type": "click", "ts": 1_700_000_000_000, "user_id": 1, "product_id": 2,
             "position": 3, "extra": "dropped"}]
    final = lake.partition_dir(tmp_path / "events", dt.date(2026, 1, 2)) / "x.parquet"
    lake.stage_file(lake.events_table(rows), final)
    assert not final.exists() and lake.staged_path(final).exists()  # a reader sees nothing yet
    lake.commit_file(final)
    lake.commit_file(final)  # idempotent once renamed (a recovering consumer may repeat it)
    t = pq.read_table(final)
    assert t.schema.remove_metadata() == lake.EVENTS_SCHEMA.remove_metadata()
    assert t.column_names == list(lake.EVENT_FIELDS) and t["query"].to_pylist() == [None]
    assert lake.partition_date(final.parent) == dt.date(2026, 1, 2)


def test_both_sides_hold_the_same_lake_contract():
    import batch.lake as batch_lake
    import batch.world.generate as world
    import gpu_core.streams as streams

    assert batch_lake.TABLE_COLUMNS is lake.TABLE_COLUMNS and batch_lake.atomic_dir is lake.atomic_dir
    assert world.EVENTS_SCHEMA is lake.EVENTS_SCHEMA and streams.EVENT_FIELDS is lake.EVENT_FIELDS


# ---- replay log ----------------------------------------------------------------------------------------
def test_replay_record_roundtrip(jaikod_env, redis_client):
    rng = np.random.default_rng(0)
    rec = replay_log.ReplayRecord(
        kind="search", user_id=3, query="โซฟา ikea", limit=20, now_ms=1_700_000_000_123, device_type=1,
        geo_from_request=True, snapshot_version="v9", model_version="jaikod-ranker/4", arm="staging",
        settings_digest="abc", fallbacks=["cold_start"], features=["a", "b"],
        candidate_ids=np.array([5, 9, 11], np.int64), alive=np.array([True, False, True]),
        X=rng.random((3, 2), dtype=np.float32), served_ids=np.array([11, 5], np.int64),
        served_sponsored=np.array([False, True]))
    replay_log.write(redis_client.pipeline(), "r1", rec, 60).execute()
    back = replay_log.load(redis_client, "r1")
    assert back.matrix_ok() and back.X_sha256 == replay_log.digest(rec.X)
    for k, v in rec.as_dict().items():
        if k != "X_sha256":
            assert np.array_equal(getattr(back, k), v) if isinstance(v, np.ndarray) else getattr(back, k) == v, k
    assert replay_log.load(redis_client, "missing") is None
    assert [rid for rid, _ in replay_log.scan(redis_client)] == ["r1"]
    assert 0 < redis_client.ttl(replay_log.replay_key("r1")) <= 60


# ---- no second spelling ---------------------------------------------------------------------------------
CONTRACTS = {"gpu_core/feature_store.py", "gpu_core/streams.py", "gpu_core/moderation.py", "gpu_core/replay_log.py",
             "gpu_core/registry.py", "gpu_core/lake.py"}


@pytest.mark.parametrize("layer", ["online", "batch", "engines", "kernels"])
def test_no_redis_key_or_artifact_name_outside_the_contracts(layer):
    bad = []
    for p in sorted((ROOT / layer).rglob("*.py")):
        rel = str(p.relative_to(ROOT))
        if rel in CONTRACTS:
            continue
        code = re.sub(r'"""[\s\S]*?"""', "", p.read_text(encoding="utf-8"))  # docstrings may name keys
        for lit in re.findall(r"""["'](jk:[^"']*)["']""", code):
            bad.append(f"{rel}: {lit}")
        for name in ("pctr.ubj", "pcvr.ubj", "meta.json"):
            if name in code and "vision" not in rel:
                bad.append(f"{rel}: {name}")
    assert not bad, bad
