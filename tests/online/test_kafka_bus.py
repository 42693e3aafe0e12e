"""The Kafka adapter of the event bus against a real broker (the session's ``kafka_broker``: KRaft, jars from
Maven Central); the failure path runs against a closed loopback port."""

from __future__ import annotations

import socket
import uuid

import pytest

pytest.importorskip("confluent_kafka", reason="confluent-kafka is not installed")

from gpu_core.streams import seen_event_key  # noqa: E402
from online.bus import KafkaBus  # noqa: E402


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _event(i: int) -> dict:
    return {"event_id": f"k-{uuid.uuid4().hex}-{i}", "event_type": "click", "ts": 1_700_000_000_000 + i,
            "user_id": 1, "product_id": 10 + i, "request_id": "r", "position": 1, "model_version": "m",
            "session_id": "s", "device_type": "web", "query": ""}


def test_unreachable_broker_is_not_acknowledged_and_marks_roll_back(redis_client):
    bus = KafkaBus(f"127.0.0.1:{_closed_port()}", "jaikod.events", "g", dedupe=redis_client, timeout_s=1.0)
    events = [_event(i) for i in range(3)]
    with pytest.raises(ConnectionError, match="kafka append failed"):
        bus.publish(events)
    # nothing was marked as seen: a retry is not mistaken for a duplicate
    assert not any(redis_client.exists(seen_event_key(e["event_id"], "jaikod.events")) for e in events)


def test_publish_read_ack_roundtrip(redis_client, kafka_broker):
    topic = f"jaikod-test-{uuid.uuid4().hex[:8]}"
    bus = KafkaBus(kafka_broker.bootstrap, topic, f"g-{topic}", dedupe=redis_client, timeout_s=10.0)
    events = [_event(i) for i in range(5)]
    assert bus.publish(events) == (5, 0)
    assert bus.publish(events[:2]) == (0, 2)  # duplicates counted once
    got = []
    for _ in range(20):
        got += bus.read("c1", 10, 1000)
        if len(got) >= 5:
            break
    assert sorted(e.event["event_id"] for e in got) == sorted(e["event_id"] for e in events)
    bus.ack([e.id for e in got])
