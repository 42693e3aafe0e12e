"""The stream processor over each event bus (``bus_backend``: Redis Streams and a real Kafka broker, same
test bodies): exact counters after kill -9 and restart, ack only after archive, redelivery of a dead
consumer's entries, lake archive readable by the batch ETL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from engines.realtime import read_product_rt, read_user_rt
from engines.search.stored import redact
from gpu_core.feature_store import OnlineStore
from gpu_core.lake import EVENT_FIELDS, EVENTS_SCHEMA, LakePath, lake_path, read_parquet, s3_client
from gpu_core.settings import get_settings, reset_settings
from gpu_core.streams import MANIFEST, STREAM_STATS, VERSION_STATS
from kernels.windows import smoothed_ctr
from online.bus import RedisStreamsBus
from online.stream import StreamProcessor
from tests.support.buses import BusBackend

ROOT = Path(__file__).resolve().parents[2]
N_PRODUCTS = 12


def make_events(n: int, start: int = 0, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed + start)
    now = int(time.time() * 1000)
    out = []
    for i in range(start, start + n):
        etype = "click" if rng.random() < 0.3 else "impression"
        out.append({"event_id": f"ev-{i}", "event_type": etype, "ts": now - int(rng.integers(0, 20 * 60_000)),
                    "user_id": int(rng.integers(0, 50)), "product_id": int(rng.integers(0, N_PRODUCTS)),
                    "model_version": "jaikod-ranker/7", "request_id": f"r{i // 10}", "position": i % 20})
    return out


def expected(events: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    clicks = np.zeros(N_PRODUCTS)
    impr = np.zeros(N_PRODUCTS)
    for e in events:
        (clicks if e["event_type"] == "click" else impr)[e["product_id"]] += 1
    return clicks, impr


def lake_events(lake: Path) -> pd.DataFrame:
    """The archived events of a local or an s3:// lake."""
    files = sorted((lake / "events").rglob("stream-*.parquet"))
    return pd.concat([read_parquet(f) for f in files], ignore_index=True) if files else pd.DataFrame()


def check_exact(r, lake: Path, events: list[dict], backend) -> None:
    clicks, impr = expected(events)
    rt = read_product_rt(OnlineStore(r), list(range(N_PRODUCTS)), time.time())
    np.testing.assert_array_equal(rt["views_last_hour"], clicks)
    np.testing.assert_allclose(rt["ctr_last_hour"], smoothed_ctr(clicks.astype(np.float32),
                                                                 impr.astype(np.float32), xp=np), rtol=1e-6)
    stats = {k.decode(): int(v) for k, v in r.hgetall(VERSION_STATS.format("jaikod-ranker/7")).items()}
    assert stats == {"clicks": int(clicks.sum()), "impressions": int(impr.sum())}
    df = lake_events(lake)
    assert len(df) == len(events) and df["event_id"].nunique() == len(events)  # archived once each
    backend.assert_drained(r)  # every entry acked (and trimmed on Redis Streams)
    assert not r.hgetall(MANIFEST)


def _small_batches(monkeypatch) -> None:
    monkeypatch.setenv("JAIKOD_STREAM_BATCH", "25")
    monkeypatch.setenv("JAIKOD_STREAM_ARCHIVE_EVENTS", "300")
    monkeypatch.setenv("JAIKOD_STREAM_ARCHIVE_INTERVAL_S", "0.3")
    reset_settings()


@pytest.fixture()
def stream_env(jaikod_env, redis_client, monkeypatch, bus_backend):
    _small_batches(monkeypatch)
    return jaikod_env


@pytest.fixture()
def redis_stream_env(jaikod_env, redis_client, monkeypatch):
    """For tests of what only Redis Streams has (a consumer's own pending list, XGROUP consumers)."""
    monkeypatch.setenv("JAIKOD_EVENT_BUS", "redis")
    _small_batches(monkeypatch)
    return jaikod_env


def run_until_applied(p: StreamProcessor, n: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while p.applied < n:
        assert time.monotonic() < deadline, f"applied {p.applied} of {n}"
        p.step()


def test_kill_9_mid_stream_then_restart_counts_exactly(stream_env, redis_client, redis_server, bus_backend):
    lake = stream_env / "lake"
    bus = bus_backend.bus(redis_client)
    events = make_events(3000)
    assert bus.publish(events[:2000]) == (2000, 0)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "online.stream", "--consumer", "worker-1", "--lake", str(lake)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while int(redis_client.hget(STREAM_STATS, "applied") or 0) < 600:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "stream processor made no progress"
            time.sleep(0.01)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    applied_at_kill = int(redis_client.hget(STREAM_STATS, "applied") or 0)
    assert applied_at_kill < 2000  # killed mid-stream
    assert bus.publish(events[2000:] + events[:100]) == (1000, 100)  # more events (and retries) while down
    # restart under the same name: its pending entries are redelivered, then the new ones
    out = subprocess.run(cmd + ["--max-idle-s", "1.0"], cwd=ROOT, env=env, capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    check_exact(redis_client, lake, events, bus_backend)
    # the archive is the lake's events table: same schema as the world's, readable by the ETL reader
    from batch.lake import read_events

    f = next((lake / "events").rglob("stream-*.parquet"))
    assert pq.read_schema(f).remove_metadata() == EVENTS_SCHEMA.remove_metadata()
    day = pd.Timestamp(events[0]["ts"], unit="ms").date()
    assert len(read_events(lake, [day], ["event_id", "ts"])) >= 1


def test_crash_between_archive_and_ack_archives_once(stream_env, redis_client, monkeypatch, bus_backend):
    monkeypatch.setenv("JAIKOD_STREAM_ARCHIVE_INTERVAL_S", "60")  # the crash below hits the first flush
    reset_settings()
    lake = stream_env / "lake"
    bus = bus_backend.bus(redis_client)
    events = make_events(120, seed=1)
    bus.publish(events)
    p = StreamProcessor(redis_client, lake, "worker-a")
    p.start()
    run_until_applied(p, 120)

    def crash(ids):
        raise SystemExit("killed after the rename, before XACK")

    monkeypatch.setattr(p.bus, "ack", crash)
    with pytest.raises(SystemExit):
        p.flush()
    assert len(lake_events(lake)) == 120 and redis_client.hlen(MANIFEST) == 1
    p.bus.close()  # the crashed process's connections are gone (Kafka: no leave, like a kill)
    # the restarted consumer acknowledges the renamed file's entries instead of archiving them again
    again = StreamProcessor(redis_client, lake, "worker-a")
    assert again.run(max_idle_s=0.3)["applied"] == 0
    check_exact(redis_client, lake, events, bus_backend)


def test_dead_consumers_entries_are_claimed(stream_env, redis_client, monkeypatch, bus_backend):
    """Redis Streams: XAUTOCLAIM after the idle time; Kafka: the dead member's session times out
    (``stream_claim_idle_ms``, at least 1 s) and the rebalance gives its partitions to the live one."""
    monkeypatch.setenv("JAIKOD_STREAM_CLAIM_IDLE_MS", "200")
    reset_settings()
    lake = stream_env / "lake"
    bus = bus_backend.bus(redis_client)
    events = make_events(80, seed=2)
    bus.publish(events)
    bus.ensure_group()
    taken: list = []
    deadline = time.monotonic() + 30
    while len(taken) < 50 and time.monotonic() < deadline:  # delivered to a consumer that then dies
        taken += bus.read("dead-worker", 50 - len(taken), 100)
    assert len(taken) == 50
    bus.close()
    time.sleep(0.3)
    # idle long enough to outlive the dead member's session (Kafka can first hand worker-b only part of
    # the partitions, the rest once the dead member is expelled)
    out = StreamProcessor(redis_client, lake, "worker-b").run(max_idle_s=2.0)
    assert out["applied"] == 80
    check_exact(redis_client, lake, events, bus_backend)


def test_flags_and_user_features(stream_env, redis_client, bus_backend):
    now = int(time.time() * 1000)
    bus = bus_backend.bus(redis_client)
    bus.publish([{"event_id": "a", "event_type": "click", "ts": now, "user_id": 5, "product_id": 3,
                  "query": "iphone", "boosted": True},
                 {"event_id": "b", "event_type": "order", "ts": now, "user_id": 5, "product_id": 4}])
    StreamProcessor(redis_client, stream_env / "lake", "w").run(max_idle_s=0.3)
    store = OnlineStore(redis_client)
    rt = read_product_rt(store, [3, 4], now / 1000)
    assert rt["is_boosted_now"].tolist() == [1.0, 0.0] and rt["stock_status"].tolist() == [1.0, 0.0]
    u = read_user_rt(store, 5, now / 1000)
    # typed text put on the bus by another producer is kept as its stored form (no user text at rest)
    assert u["session_clicks_last_5m"] == 1 and u["current_search_query"] == redact("iphone") != "iphone"


def test_restart_under_the_same_name_takes_its_own_pending_entries_at_once(redis_stream_env, redis_client,
                                                                          monkeypatch):
    """A processor killed after its entries were delivered (kill -9: in its pending list, never applied)
    and restarted under the same name applies them in its first pass: the claim timeout (10 minutes
    here) never comes into it — no other consumer holds them, so no claim can have run."""
    monkeypatch.setenv("JAIKOD_STREAM_CLAIM_IDLE_MS", "600000")
    reset_settings()
    lake = redis_stream_env / "lake"
    bus = RedisStreamsBus(redis_client)
    events = make_events(90, seed=3)
    bus.publish(events)
    bus.ensure_group()
    assert len(bus.read("worker-r", 60, 10)) == 60  # delivered to worker-r, which then died
    assert bus.lag()["pending"] == 60
    out = StreamProcessor(redis_client, lake, "worker-r").run(max_idle_s=0.5)
    assert out["applied"] == 90
    check_exact(redis_client, lake, events, BusBackend("redis"))


def test_dead_consumers_leave_the_group_but_not_one_with_pending_entries(redis_stream_env, redis_client,
                                                                         monkeypatch):
    monkeypatch.setenv("JAIKOD_STREAM_CONSUMER_REAP_IDLE_S", "0.2")
    monkeypatch.setenv("JAIKOD_STREAM_CLAIM_IDLE_MS", "600000")
    reset_settings()
    s = get_settings()
    bus = RedisStreamsBus(redis_client)
    bus.publish(make_events(5, seed=4))
    bus.ensure_group()
    for name in ("ghost-1", "ghost-2"):  # processors that started, read nothing, and died
        redis_client.xgroup_createconsumer(s.event_stream, s.event_group, name)
    assert len(bus.read("holder", 2, 10)) == 2  # a dead one that still holds entries: kept
    time.sleep(0.3)
    p = StreamProcessor(redis_client, redis_stream_env / "lake", "worker-live")
    p.start()
    for _ in range(20):
        p.step()
        if p.reaped:
            break
        time.sleep(0.1)
    left = {c["name"].decode(): c["pending"] for c in redis_client.xinfo_consumers(s.event_stream, s.event_group)}
    assert sorted(p.reaped) == ["ghost-1", "ghost-2"]
    assert "worker-live" in left and not left.keys() & {"ghost-1", "ghost-2"}
    assert left["holder"] == 2  # the holder's entries are still there to be claimed


def test_dead_letter_that_does_not_open_stays_and_is_named(jaikod_env, redis_client):
    """A sealed dead letter damaged at rest (or sealed under another deployment's PII key) is not re-sent as
    garbage: replay re-sends the others and names it; it stays for `drop`; a legacy plaintext entry replays."""
    from gpu_core.streams import DEAD_LETTER, dead_letter_fields
    from online.stream import DeadLetters

    s = get_settings()
    good = b'{"event_id": "0812345678-1"}'
    fields = dead_letter_fields(good, "product_id is not an int64 id", "1-0", 1)
    redis_client.xadd(DEAD_LETTER, fields)
    bad = dict(dead_letter_fields(good, "product_id is not an int64 id", "2-0", 1))
    bad["s"] = bad["s"][:-1] + bytes([bad["s"][-1] ^ 1])  # one bit flipped in the tag
    damaged = redis_client.xadd(DEAD_LETTER, bad).decode()
    redis_client.xadd(DEAD_LETTER, {"e": b'{"event_id": "old"}', "reason": "x", "source_id": "3-0", "at_ms": "1"})
    assert [r["bytes"] for r in DeadLetters(redis_client, s).list()] == [len(good), len(good), 19]
    done = DeadLetters(redis_client, s).replay()
    assert done.resent == 2 and done.unopened == [damaged]
    assert [eid.decode() for eid, _ in redis_client.xrange(DEAD_LETTER)] == [damaged]
    assert sorted(f[b"e"] for _, f in redis_client.xrange(s.event_stream)) == sorted([b'{"event_id": "old"}', good])


def test_archive_on_s3_equals_the_local_one_and_acks_only_durable_puts(redis_stream_env, redis_client, s3_bucket,
                                                                       monkeypatch):
    """The lake on a real S3-compatible server (moto): the archive is one staged object PUT + a server-side
    copy per day, readable by the batch readers and equal to the local archive of the same events. A PUT
    that fails (bucket missing) acknowledges nothing; a crash between the staged PUT and its commit leaves
    nothing visible to readers; the restarted consumer archives every event once."""
    from batch.lake import event_dates, read_events

    def archived(lake, days) -> pd.DataFrame:
        return read_events(lake, days, EVENT_FIELDS).sort_values("event_id").reset_index(drop=True)

    events = make_events(240, seed=9)
    bus = RedisStreamsBus(redis_client)
    local = redis_stream_env / "lake"
    assert bus.publish(events) == (240, 0)
    assert StreamProcessor(redis_client, local, "w-local").run(max_idle_s=0.3)["archived"] == 240
    days = event_dates(local)
    want = archived(local, days)
    assert len(want) == 240
    redis_client.flushdb()  # the same events again, into a lake on S3

    bucket = f"{s3_bucket[:40]}-later-{os.getpid()}"[:63]
    lake = lake_path(f"s3://{bucket}/lake")
    assert isinstance(lake, LakePath)
    assert bus.publish(events) == (240, 0)
    # 1. the bucket is missing: the PUT fails and the flush raises before any ack
    with pytest.raises(OSError, match="NoSuchBucket|does not exist"):
        StreamProcessor(redis_client, lake, "w-s3").run(max_idle_s=0.3)
    assert bus.lag()["pending"] == 240 and not redis_client.hlen(MANIFEST)

    # 2. the bucket exists; the process dies after the staged PUT, before its commit (the server-side copy)
    s3_client().create_bucket(Bucket=bucket)

    def crash(final):
        raise SystemExit("killed between the staged PUT and its commit")

    with monkeypatch.context() as m:
        m.setattr("online.stream.commit_file", crash)
        with pytest.raises(SystemExit):
            StreamProcessor(redis_client, lake, "w-s3").run(max_idle_s=0.3)
    assert list((lake / "events").rglob("*.tmp"))  # the staged object is there, hidden from the readers
    assert len(read_events(lake, days, EVENT_FIELDS)) == 0
    assert bus.lag()["pending"] == 240 and redis_client.hlen(MANIFEST) == 1

    # 3. restarted under the same name: the staged object is dropped, the pending entries archived once
    assert StreamProcessor(redis_client, lake, "w-s3").run(max_idle_s=0.3)["archived"] == 240
    assert not list((lake / "events").rglob("*.tmp"))
    assert event_dates(lake) == days
    pd.testing.assert_frame_equal(archived(lake, days), want, check_exact=True)
    check_exact(redis_client, lake, events, BusBackend("redis"))
