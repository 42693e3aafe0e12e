"""The event bus's universal contract, one body per rule, run on Redis Streams and on a real Kafka broker
(``bus_backend``): each event id accepted once, nothing acknowledged is lost and nothing unacknowledged is
dropped when a consumer goes away, lag as the operator reads it, and the event API end to end through the
real stream processor into the online store and the lake, once each."""

from __future__ import annotations

import time
import uuid

import pandas as pd
from fastapi.testclient import TestClient

from engines.realtime import read_product_rt
from gpu_core.feature_store import OnlineStore
from gpu_core.settings import get_settings
from online.stream import StreamProcessor


def _event(i: int, tag: str, **kw) -> dict:
    return {"event_id": f"c-{tag}-{i}", "event_type": "click", "ts": int(time.time() * 1000) - 1000,
            "user_id": 3, "product_id": 40 + i % 5, "model_version": "jaikod-ranker/2", "request_id": "r",
            "position": i, **kw}


def _read(bus, consumer: str, n: int, timeout_s: float = 30.0) -> list:
    got: list = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        got += bus.read(consumer, n - len(got), 100)
    return got


def _drain(bus, consumer: str, quiet_s: float = 1.0) -> list:
    """Everything the consumer is (re)given: its own pending entries, then new ones until ``quiet_s``."""
    got = bus.read(consumer, 1000, 0, pending=True)
    quiet = time.monotonic() + quiet_s
    while time.monotonic() < quiet:
        more = bus.read(consumer, 1000, 100)
        if more:
            got += more
            quiet = time.monotonic() + quiet_s
    return got


def test_each_event_id_is_accepted_once(bus_backend, redis_client):
    tag = uuid.uuid4().hex[:6]
    bus = bus_backend.bus(redis_client)
    events = [_event(i, tag) for i in range(6)]
    assert bus.publish(events[:4]) == (4, 0)
    assert bus.publish(events[2:] + events[5:]) == (2, 3)  # a retry, and a duplicate inside one batch
    bus.ensure_group()
    got = _read(bus, "w", 6)
    assert sorted(e.event["event_id"] for e in got) == sorted(e["event_id"] for e in events)
    assert _read(bus, "w", 1, timeout_s=0.5) == []
    bus.close()


def test_unacknowledged_entries_come_back_acknowledged_ones_may(bus_backend, redis_client):
    """Acknowledging out of order (a poison entry dead-lettered while older ones wait for the archive) must
    not lose the older ones. Kafka commits a position, so it may deliver the acknowledged one again too."""
    tag = uuid.uuid4().hex[:6]
    bus = bus_backend.bus(redis_client)
    events = [_event(i, tag, product_id=7) for i in range(3)]  # one key: one partition, in order
    bus.publish(events)
    bus.ensure_group()
    first = _read(bus, "w", 3)
    assert [e.event["event_id"] for e in first] == [e["event_id"] for e in events]
    bus.ack([first[2].id])
    bus.close()  # the consumer goes away (a crash: nothing else acknowledged)
    again = bus_backend.bus(redis_client)
    again.ensure_group()
    back = {e.event["event_id"] for e in _drain(again, "w")}
    assert {events[0]["event_id"], events[1]["event_id"]} <= back
    if bus_backend.name == "redis":
        assert events[2]["event_id"] not in back
    again.close()


def test_lag_and_pending_as_the_operator_reads_them(bus_backend, redis_client):
    tag = uuid.uuid4().hex[:6]
    bus = bus_backend.bus(redis_client)
    bus.ensure_group()
    bus.publish([_event(i, tag) for i in range(5)])
    assert bus_backend.unacknowledged(redis_client)["lag"] == 5  # from a process that consumes nothing
    taken = _read(bus, "w", 2)
    assert len(taken) == 2
    assert bus.lag() == {"lag": 3, "pending": 2}  # in the consumer: not yet delivered / not acknowledged
    bus.ack([e.id for e in taken])
    rest = _read(bus, "w", 3)
    bus.ack([e.id for e in rest])
    assert bus.lag() == {"lag": 0, "pending": 0}
    bus.trim()  # Redis Streams drops acknowledged entries here (the processor does it after each archive)
    bus_backend.assert_drained(redis_client)
    bus.close()


def test_events_posted_to_the_api_are_applied_and_archived_once(bus_backend, redis_client, jaikod_env):
    from online.app import create_app
    from online.events import router

    app = create_app(refresher=False, services=False)
    app.include_router(router)
    tag = uuid.uuid4().hex[:6]
    events = [_event(i, tag, event_type="click" if i % 2 else "impression") for i in range(40)]
    client = TestClient(app)
    if True:
        assert client.post("/v1/events", json={"events": events[:30]}).json() == {"accepted": 30, "duplicates": 0}
        retry = client.post("/v1/events", json={"events": events[20:]}).json()  # a client's retry + new ones
        assert retry == {"accepted": 10, "duplicates": 10}
    lake = jaikod_env / "lake"
    out = StreamProcessor(redis_client, lake, "api-e2e").run(max_idle_s=1.0)
    assert out["applied"] == 40 and out["dead_lettered"] == 0
    rt = read_product_rt(OnlineStore(redis_client), [40, 41, 42, 43, 44], time.time())
    assert rt["views_last_hour"].sum() == 20  # the clicks, once each
    files = sorted((lake / "events").rglob("stream-*.parquet"))
    archived = pd.concat([pd.read_parquet(f) for f in files])
    assert len(archived) == 40 and archived["event_id"].nunique() == 40
    bus_backend.assert_drained(redis_client)
    assert get_settings().event_bus == bus_backend.name
