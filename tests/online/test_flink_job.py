"""Flink as the stream processor, against real servers: the same events published to the session's Kafka
broker are applied by our processor (Kafka bus) into one Redis database and by the PyFlink job (unbounded,
as deployed: local mini-cluster, the Flink venv) into another; every key either writes is compared value by value, and
both lakes hold every event once -- also after the whole batch reached the Flink job a second time (a
producer re-sending it): duplicates change nothing but the duplicate counter. Skips only when java/mvn or
the Flink venv cannot be had."""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import redis

pytest.importorskip("confluent_kafka", reason="confluent-kafka is not installed")

from gpu_core.feature_store import OnlineStore, rt_product_key, rt_user_key  # noqa: E402
from gpu_core.schema import PRODUCT_DAILY, USER_DAILY  # noqa: E402
from gpu_core.settings import get_settings, reset_settings  # noqa: E402
from gpu_core.streams import (  # noqa: E402
    ARCHIVED,
    DEAD_LETTER,
    OUTBOX,
    OUTBOX_MANIFEST,
    STREAM_STATS,
    dead_letter_payload,
)
from online.bus import KafkaBus  # noqa: E402
from online.flink_job import FlinkUnavailable, ensure_flink_python, job_command, job_env  # noqa: E402
from online.stream import StreamProcessor  # noqa: E402

N_PRODUCTS, N_USERS, N_EVENTS = 24, 30, 2400


@pytest.fixture(scope="session")
def flink_python() -> Path:
    try:
        return ensure_flink_python()
    except FlinkUnavailable as exc:
        pytest.skip(f"no Flink venv: {exc}")


def make_events(n: int, seed: int = 5) -> list[dict]:
    """Impressions, clicks (some with a search query), orders and stock/boost flags over the last 70
    minutes, so some fall outside the one-hour window and ring slots get reused."""
    rng = np.random.default_rng(seed)
    now = int(time.time() * 1000)
    out = []
    for i in range(n):
        u = rng.random()
        etype = "impression" if u < 0.6 else "click" if u < 0.9 else "add_to_cart" if u < 0.96 else "order"
        e = {"event_id": f"fl-{seed}-{i}", "event_type": etype, "ts": now - int(rng.integers(0, 70 * 60_000)),
             "user_id": int(rng.integers(0, N_USERS)), "product_id": int(rng.integers(0, N_PRODUCTS)),
             "model_version": f"jaikod-ranker/{1 + i % 2}", "request_id": f"r{i // 20}", "position": i % 20,
             "session_id": f"s{i % 7}", "device_type": "android"}
        if etype == "click" and rng.random() < 0.3:
            e["query"] = f"กล้อง {i % 5}"
        if rng.random() < 0.05:
            e["in_stock"] = bool(rng.random() < 0.5)
        if rng.random() < 0.05:
            e["boosted"] = bool(rng.random() < 0.5)
        out.append(e)
    return out


def write_snapshot(r: redis.Redis) -> None:
    """A small daily snapshot, so events carry their product's category into the user's ring."""
    pids = np.arange(N_PRODUCTS, dtype=np.int64)
    rows = PRODUCT_DAILY.pack({"category": pids % 5}, N_PRODUCTS)
    OnlineStore(r).write_snapshot("v1", user_ids=np.empty(0, np.int64), user_rows=np.empty((0, USER_DAILY.width)),
                                  product_ids=pids, product_rows=rows, product_seller=pids % 3,
                                  product_region=(pids % 4).astype(np.int32),
                                  context_row=np.zeros(1, np.float32), meta={"created_at": 0})


def db_state(r: redis.Redis) -> dict[bytes, tuple]:
    """Every key as (type, value, has a TTL); the dead-letter stream without its entry ids and times, its
    payloads opened (each is sealed with its own nonce)."""
    out = {}
    for k in r.scan_iter(count=10_000):
        t = r.type(k).decode()
        if t == "string":
            v = r.get(k)
        elif t == "hash":
            v = tuple(sorted(r.hgetall(k).items()))
        elif t == "set":
            v = tuple(sorted(r.smembers(k)))
        elif t == "list":
            v = tuple(r.lrange(k, 0, -1))
        elif t == "stream":
            v = tuple(sorted((dead_letter_payload(f), f[b"reason"]) for _, f in r.xrange(k)))  # opened
        else:
            v = t
        out[k] = (t, v, r.pttl(k) > 0)
    return out


def lake_events(lake: Path) -> pd.DataFrame:
    files = sorted((lake / "events").rglob("stream-*.parquet"))
    df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) if files else pd.DataFrame()
    return df.sort_values("event_id", ignore_index=True) if len(df) else df


def run_ours(bootstrap: str, topic: str, r: redis.Redis, lake: Path, want: int) -> StreamProcessor:
    bus = KafkaBus(bootstrap, topic, f"ours-{topic}", dedupe=None, timeout_s=30.0, partitions=1)
    proc = StreamProcessor(r, lake, "ours", get_settings(), bus=bus)
    proc.start()
    deadline = time.monotonic() + 120
    while proc.applied + proc.duplicates + proc.dead_lettered < want:
        assert time.monotonic() < deadline, f"our processor took {proc.applied} of {want} events"
        proc.step()
    proc.flush()
    bus.close()
    return proc


def wait_stats(r: redis.Redis, proc: subprocess.Popen, want: dict[str, int], timeout_s: float = 400.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        got = {k.decode(): int(v) for k, v in r.hgetall(STREAM_STATS).items()}
        if all(got.get(k, 0) >= v for k, v in want.items()):
            return
        assert proc.poll() is None, f"the Flink job exited with {proc.returncode}"
        assert time.monotonic() < deadline, f"the Flink job reached {got}, not {want}"
        time.sleep(0.1)


def test_flink_and_our_processor_write_the_same_features_and_lake(flink_python, kafka_broker, redis_server,
                                                                  jaikod_env, tmp_path, monkeypatch):
    import orjson
    from confluent_kafka.admin import AdminClient, NewTopic

    monkeypatch.setenv("JAIKOD_STREAM_ARCHIVE_EVENTS", "1000")
    reset_settings()
    # one partition: both engines then see one order (Kafka orders a partition only, and last-writer-wins
    # fields -- the current query, the last viewed category within a minute, stock flags -- follow it)
    topic = f"jaikod-flink-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap})
    for f in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        f.result(timeout=60)
    events = make_events(N_EVENTS)
    poison = {"event_id": "fl-poison", "event_type": "teleport", "ts": events[0]["ts"], "user_id": 1,
              "product_id": 1}
    publisher = KafkaBus(kafka_broker.bootstrap, topic, "pub", dedupe=None, timeout_s=60.0, partitions=1)
    assert publisher.publish(events + [poison]) == (N_EVENTS + 1, 0)

    base = redis_server.url.rsplit("/", 1)[0]
    url_ours, url_flink = f"{base}/1", f"{base}/2"
    r_ours, r_flink = redis.Redis.from_url(url_ours), redis.Redis.from_url(url_flink)
    for r in (r_ours, r_flink):
        r.flushdb()
        write_snapshot(r)

    ours = run_ours(kafka_broker.bootstrap, topic, r_ours, tmp_path / "lake-ours", N_EVENTS + 1)
    assert (ours.applied, ours.duplicates, ours.dead_lettered) == (N_EVENTS, 0, 1)

    # the Flink job as deployed (unbounded, checkpoints committing the offsets), on the same topic
    job = subprocess.Popen(job_command(flink_python, kafka_broker.bootstrap, topic, f"flink-{topic}",
                                       tmp_path / "lake-flink"),
                           env=job_env(JAIKOD_REDIS_URL=url_flink, JAIKOD_HOME=str(jaikod_env)),
                           stdout=(tmp_path / "flink.log").open("w"), stderr=subprocess.STDOUT)
    try:
        wait_stats(r_flink, job, {"applied": N_EVENTS, "dead_lettered": 1})
        # then the whole batch again, as a producer whose acks were lost re-sends it: all duplicates
        assert publisher.publish(events + [poison]) == (N_EVENTS + 1, 0)
        wait_stats(r_flink, job, {"duplicates": N_EVENTS, "dead_lettered": 2})
        job.terminate()  # SIGTERM: the driver cancels the job and drains the outbox into the lake
        job.wait(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    log = (tmp_path / "flink.log").read_text(errors="replace")
    assert job.returncode == 0, log[-3000:]
    out = orjson.loads(next(ln for ln in reversed(log.splitlines()) if "flink_job_stopped" in ln))
    assert out["status"] == "CANCELED"
    assert (out["applied"], out["duplicates"], out["archived"], out["dead_lettered"]) == \
        (N_EVENTS, N_EVENTS, N_EVENTS, 2)

    a, b = db_state(r_ours), db_state(r_flink)
    marker = ARCHIVED.format("").encode()
    only_flink = {k for k in b.keys() - a.keys() if k.startswith(marker)}
    assert len(only_flink) == N_EVENTS  # the Flink archive's markers: one per event
    assert a.keys() == b.keys() - only_flink, (sorted(a.keys() - b.keys())[:5], sorted(b.keys() - a.keys())[:5])
    assert not r_flink.exists(OUTBOX, OUTBOX_MANIFEST)  # drained
    stats_a, stats_b = dict(a.pop(STREAM_STATS.encode())[1]), dict(b.pop(STREAM_STATS.encode())[1])
    for f in (b"applied", b"archived"):
        assert stats_a.get(f) == stats_b.get(f), f
    dead_a, dead_b = a.pop(DEAD_LETTER.encode())[1], b.pop(DEAD_LETTER.encode())[1]
    assert dead_b == dead_a + dead_a  # the same poison with the same reason, once per delivery
    differ = [k for k in a if a[k] != b[k]]
    assert not differ, [(k, a[k], b[k]) for k in differ[:3]]  # every key, value by value
    product_prefix = rt_product_key(0).rsplit("0", 1)[0].encode()  # the key up to the id (and its hash tag)
    user_prefix = rt_user_key(0).rsplit("0", 1)[0].encode()
    assert {k for k in a if k.startswith(product_prefix) and not k.endswith(b":q")} == \
        {rt_product_key(p).encode() for p in {e["product_id"] for e in events}}
    assert sum(1 for k in a if k.startswith(user_prefix) and k.endswith(b"}")) >= N_USERS // 2

    la, lb = lake_events(tmp_path / "lake-ours"), lake_events(tmp_path / "lake-flink")
    assert len(la) == N_EVENTS and la["event_id"].nunique() == N_EVENTS  # archived once each
    pd.testing.assert_frame_equal(la, lb)
