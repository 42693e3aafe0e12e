"""The event-bus backends of the universal bus contract tests: Redis Streams (the default) and Kafka (a
real broker, the session's ``kafka_broker``). A test that takes the ``bus_backend`` fixture runs once per
backend with the same body; the settings (``JAIKOD_EVENT_BUS`` …) are in the environment, so processes
the test starts (``python -m online.stream``, ``jaikod …``) use the same bus."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
import redis

from gpu_core.settings import get_settings, reset_settings
from online.bus import EventBus, make_bus

BACKENDS = ("redis", "kafka")


@dataclass
class BusBackend:
    name: str
    bootstrap: str | None = None

    def bus(self, client: redis.Redis) -> EventBus:
        """A new bus on the current settings (one consumer per bus on Kafka)."""
        return make_bus(client, get_settings())

    def append_raw(self, client: redis.Redis, payloads: Sequence[bytes]) -> None:
        """Write payloads straight to the bus, around the event API's checks (an old writer, a hand-made
        append): no dedupe, no validation."""
        bus = self.bus(client)
        try:
            bus.resend(list(payloads))
        finally:
            bus.close()

    def append_without_event(self, client: redis.Redis) -> None:
        """One entry that carries no event at all (Redis: no ``e`` field; Kafka: a null value)."""
        if self.name == "redis":
            client.xadd(get_settings().event_stream, {"x": b"no e field"})
            return
        from confluent_kafka import Producer

        from gpu_core.streams import event_topic

        p = Producer({"bootstrap.servers": self.bootstrap})
        p.produce(event_topic(get_settings().event_stream), value=None)
        assert p.flush(10) == 0

    def unacknowledged(self, client: redis.Redis) -> dict[str, int]:
        """The group's backlog as seen from outside any consumer ({"lag", "pending"}; all 0 = drained)."""
        bus = self.bus(client)
        try:
            return bus.lag()
        finally:
            bus.close()

    def assert_drained(self, client: redis.Redis) -> None:
        """Every entry acknowledged by the group (and, on Redis Streams, trimmed: the stream is empty)."""
        assert self.unacknowledged(client) == {"lag": 0, "pending": 0}
        if self.name == "redis":
            assert client.xlen(get_settings().event_stream) == 0


def use_backend(name: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> BusBackend:
    """Point the settings (and the environment of child processes) at backend ``name``; on Kafka each test
    gets its own topic and group on the session's broker."""
    if name == "redis":
        monkeypatch.setenv("JAIKOD_EVENT_BUS", "redis")
        reset_settings()
        return BusBackend("redis")
    broker = request.getfixturevalue("kafka_broker")
    tag = uuid.uuid4().hex[:10]
    reset_settings()
    s = get_settings()
    monkeypatch.setenv("JAIKOD_EVENT_BUS", "kafka")
    monkeypatch.setenv("JAIKOD_KAFKA_BOOTSTRAP", broker.bootstrap)
    monkeypatch.setenv("JAIKOD_EVENT_STREAM", f"{s.event_stream}-{tag}")
    monkeypatch.setenv("JAIKOD_EVENT_GROUP", f"{s.event_group}-{tag}")
    monkeypatch.setenv("JAIKOD_KAFKA_TIMEOUT_S", "30")  # 2 busy cores in CI: an append of 3,000 may take a while
    reset_settings()
    return BusBackend("kafka", broker.bootstrap)
