"""A poison event never stops the stream: a real ``python -m online.stream`` process over each event bus
(``bus_backend``: Redis Streams, a real Kafka broker; same bodies), fed good events with poison between them (written around the event API's checks, as an old writer or
a hand-made XADD would). Each poison costs one dead-letter entry; every good event is applied and
archived once; the processor exits 0."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import orjson
import pyarrow.dataset as ds

from gpu_core.feature_store import rt_product_key
from tests.reliability.conftest import ROOT

T0 = int(time.time() * 1000) - 60_000


def _event(i: int, **kw) -> dict:
    return {"event_id": f"ok-{i}", "event_type": "click" if i % 3 else "impression", "ts": T0 + i,
            "user_id": 10 + i % 7, "product_id": 100 + i % 13, **kw}


POISON = [
    orjson.dumps(_event(1000, product_id=2**63)),  # the probe's: crashed the Parquet archive on every restart
    orjson.dumps(_event(1001, user_id=0)).replace(b'"user_id":0', b'"user_id":18446744073709551616'),
    orjson.dumps(_event(1002, user_id="12")),
    orjson.dumps(_event(1003, position=40_000)),  # past the lake's int16
    orjson.dumps(_event(1004, event_type="purchase")),
    orjson.dumps({"event_id": "no-ts", "event_type": "click", "user_id": 1, "product_id": 1}),
    b"{not json",
    orjson.dumps([1, 2, 3]),
]


def _env(home, url: str) -> dict[str, str]:
    return {**os.environ, "JAIKOD_HOME": str(home), "JAIKOD_REDIS_URL": url, "JAIKOD_DEVICE": "cpu",
            "JAIKOD_STREAM_ARCHIVE_INTERVAL_S": "0.2", "PYTHONPATH": str(ROOT)}


def _run_stream(env: dict, consumer: str = "rel-1", idle: float = 2.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "online.stream", "--consumer", consumer, "--max-idle-s", str(idle)],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)


def _jaikod(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "jaikod_cli.py"), *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_poison_costs_one_dead_letter_each_and_nothing_else(jaikod_env, redis_client, redis_server, bus_backend):
    from gpu_core.settings import get_settings
    from gpu_core.streams import DEAD_LETTER, STREAM_STATS

    s = get_settings()
    good = [_event(i) for i in range(60)]
    payloads = []
    for i, e in enumerate(good):
        payloads.append(orjson.dumps(e))
        if i % 8 == 3 and POISON:
            payloads.append(POISON[(i // 8) % len(POISON)])
    bus_backend.append_raw(redis_client, payloads + POISON)
    bus_backend.append_without_event(redis_client)
    n_poison = sum(1 for i in range(60) if i % 8 == 3) + len(POISON) + 1
    # a poison by state: the product's real-time key holds the wrong type, so Redis refuses the update
    redis_client.hset(rt_product_key(5000), mapping={"x": "1"})
    wrong = _event(2000, product_id=5000)
    bus_backend.append_raw(redis_client, [orjson.dumps(wrong)])
    n_poison += 1

    env = _env(jaikod_env, redis_server.url)
    out = _run_stream(env)
    assert out.returncode == 0, out.stderr[-3000:]
    stats = {k.decode(): int(v) for k, v in redis_client.hgetall(STREAM_STATS).items()}
    assert redis_client.xlen(DEAD_LETTER) == n_poison, stats
    assert stats["dead_lettered"] == n_poison
    assert stats["applied"] == len(good)
    assert bus_backend.unacknowledged(redis_client) == {"lag": 0, "pending": 0}
    lake = ds.dataset(s.lake_dir / "events", format="parquet", partitioning="hive").to_table()
    ids = lake.column("event_id").to_pylist()
    from gpu_core.pii import pseudonym

    assert sorted(ids) == sorted(pseudonym(e["event_id"]) for e in good)  # every good event once, no poison
    # a restart finds nothing to redo (the probe's processor crashed on every restart)
    again = _run_stream(env, idle=0.5)
    assert again.returncode == 0, again.stderr[-3000:]
    assert redis_client.xlen(DEAD_LETTER) == n_poison
    # the reasons name the problem, never the payload
    listed = _jaikod(env, "stream", "dead-letter", "list", "--count", "1000")
    assert listed.returncode == 0, listed.stderr
    assert "product_id is not an int64 id" in listed.stdout and "payload is not JSON" in listed.stdout
    assert "redis refused the event" in listed.stdout
    # replay: the wrong-type key fixed, that event applies; the rest are still poison and come back
    redis_client.delete(rt_product_key(5000))
    assert _jaikod(env, "stream", "dead-letter", "replay").returncode == 0
    assert redis_client.xlen(DEAD_LETTER) == 0
    assert _run_stream(env, idle=0.5).returncode == 0
    assert redis_client.xlen(DEAD_LETTER) == n_poison - 1
    stats = {k.decode(): int(v) for k, v in redis_client.hgetall(STREAM_STATS).items()}
    assert stats["applied"] == len(good) + 1
    dropped = _jaikod(env, "stream", "dead-letter", "drop")
    assert dropped.returncode == 0 and redis_client.xlen(DEAD_LETTER) == 0


def test_processor_killed_midway_loses_and_doubles_nothing(jaikod_env, redis_client, redis_server, bus_backend):
    from gpu_core.settings import get_settings
    from gpu_core.streams import STREAM_STATS

    s = get_settings()
    n = 3000
    bus_backend.append_raw(redis_client, [orjson.dumps(_event(i)) for i in range(n)])
    env = {**_env(jaikod_env, redis_server.url), "JAIKOD_STREAM_BATCH": "100", "JAIKOD_STREAM_ARCHIVE_EVENTS": "500"}
    proc = subprocess.Popen([sys.executable, "-m", "online.stream", "--consumer", "rel-k", "--max-idle-s", "2"],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end and int(redis_client.hget(STREAM_STATS, "applied") or 0) < n // 3:
            time.sleep(0.01)
    finally:
        proc.kill()  # SIGKILL midway
        proc.wait()
    out = _run_stream(env, consumer="rel-k")
    assert out.returncode == 0, out.stderr[-3000:]
    lake = ds.dataset(s.lake_dir / "events", format="parquet", partitioning="hive").to_table()
    ids = lake.column("event_id").to_pylist()
    assert len(ids) == n and len(set(ids)) == n
    assert int(redis_client.hget(STREAM_STATS, "applied")) == n
    assert bus_backend.unacknowledged(redis_client) == {"lag": 0, "pending": 0}
