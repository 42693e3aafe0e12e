"""The event bus behind one small protocol: Redis Streams (default; consumer groups, pending-entry
redelivery) and Kafka (confluent-kafka, for deployments at scale; import-guarded).

Delivery is at-least-once: a consumer acknowledges an entry only after it has been applied and
archived; entries of a crashed consumer stay pending and are re-delivered (``XAUTOCLAIM`` after
``settings.stream_claim_idle_ms``, or on restart under the same consumer name).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

import orjson
import redis

from gpu_core.errors import ConfigError
from gpu_core.settings import Settings, get_settings
from gpu_core.streams import decode_event, encode_event, seen_event_key

log = logging.getLogger(__name__)


class BusEntry(NamedTuple):
    id: str  # bus position (Redis stream id, or "partition:offset" on Kafka)
    event: dict[str, Any]
    raw: bytes = b""  # the payload as it is on the bus (kept for the dead-letter stream)
    problem: str | None = None  # why the payload is no event (undecodable); the processor dead-letters it


def entry_of(eid: str, payload: bytes) -> BusEntry:
    """A bus entry; a payload that does not decode is kept, with its problem, instead of raising."""
    try:
        event = decode_event(payload)
    except (ValueError, TypeError) as exc:
        return BusEntry(eid, {}, payload, f"payload is not JSON: {str(exc)[:200]}")
    return BusEntry(eid, event, payload)


@runtime_checkable
class EventBus(Protocol):
    def publish(self, events: Sequence[dict[str, Any]]) -> tuple[int, int]:
        """Append new events (once per event_id); (accepted, duplicates). Returns after the append."""

    def ensure_group(self) -> None: ...

    def read(self, consumer: str, count: int, block_ms: int, pending: bool = False,
             after: str = "0") -> list[BusEntry]:
        """New entries for ``consumer`` (or, with ``pending``, its own delivered-but-unacked ones after
        the id ``after``)."""

    def claim(self, consumer: str, min_idle_ms: int, count: int) -> list[BusEntry]:
        """Take over entries other consumers left pending longer than ``min_idle_ms``."""

    def ack(self, ids: Sequence[str]) -> None: ...

    def trim(self) -> int:
        """Drop entries every consumer has acknowledged; number dropped."""

    def lag(self) -> dict[str, int]:
        """{"lag": not yet delivered, "pending": delivered, not acknowledged}."""


# Append once per event id. KEYS: stream, seen markers...; ARGV: ttl, payloads (aligned with markers).
# Check first, append, then mark: if XADD fails nothing is marked and a retry is not taken for a duplicate.
_PUBLISH = """
local ttl = tonumber(ARGV[1])
local acc, dup = 0, 0
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    dup = dup + 1
  else
    redis.call('XADD', KEYS[1], '*', 'e', ARGV[i])
    redis.call('SET', KEYS[i], '1', 'EX', ttl)
    acc = acc + 1
  end
end
return {acc, dup}
"""


def _entries(raw: Any) -> list[BusEntry]:
    out = []
    for eid, fields in raw or []:
        if fields is None:  # trimmed while pending
            continue
        eid = eid.decode() if isinstance(eid, bytes) else eid
        payload = fields.get(b"e") if isinstance(fields, dict) else None
        if payload is None:  # an entry without the event field: poison too, never silently skipped
            out.append(BusEntry(eid, {}, orjson.dumps({k.decode(errors="replace"): v.decode(errors="replace")
                                                         for k, v in (fields or {}).items()}), "no 'e' field"))
            continue
        out.append(entry_of(eid, payload))
    return out


class RedisStreamsBus:
    """Redis Streams: ``XADD`` (Lua, deduplicated), ``XREADGROUP``/``XACK``/``XAUTOCLAIM``, ``XTRIM MINID``."""

    def __init__(self, client: redis.Redis, settings: Settings | None = None):
        s = settings or get_settings()
        self.r = client
        self.stream = s.event_stream
        self.group = s.event_group
        self.ttl = s.event_dedupe_ttl_s
        self.min_replicas = s.event_min_replicas
        self._publish = client.register_script(_PUBLISH)

    def publish(self, events: Sequence[dict[str, Any]]) -> tuple[int, int]:
        if not events:
            return 0, 0
        keys = [self.stream] + [seen_event_key(e["event_id"]) for e in events]
        acc, dup = self._publish(keys=keys, args=[self.ttl] + [encode_event(e) for e in events])
        if self.min_replicas > 0 and acc:
            got = self.r.execute_command("WAIT", self.min_replicas, 1000)
            if int(got) < self.min_replicas:
                raise ConnectionError(f"event append reached {got} of {self.min_replicas} replicas")
        return int(acc), int(dup)

    def ensure_group(self) -> None:
        try:
            self.r.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read(self, consumer: str, count: int, block_ms: int, pending: bool = False,
             after: str = "0") -> list[BusEntry]:
        res = self.r.xreadgroup(self.group, consumer, {self.stream: after if pending else ">"}, count=count,
                                block=None if pending else block_ms)
        return _entries(res[0][1]) if res else []

    def claim(self, consumer: str, min_idle_ms: int, count: int) -> list[BusEntry]:
        res = self.r.xautoclaim(self.stream, self.group, consumer, min_idle_time=min_idle_ms, start_id="0-0",
                                count=count)
        return _entries(res[1])

    def ack(self, ids: Sequence[str]) -> None:
        if ids:
            self.r.xack(self.stream, self.group, *ids)

    def trim(self) -> int:
        """``XTRIM MINID`` below the oldest entry not yet acknowledged or not yet delivered."""
        try:
            groups = self.r.xinfo_groups(self.stream)
        except redis.ResponseError:
            return 0
        bounds = []
        for g in groups:
            pend = self.r.xpending(self.stream, g["name"])
            if pend["pending"]:
                bounds.append(_sid(pend["min"]))
            last = g["last-delivered-id"]
            ms, seq = _sid(last)
            bounds.append((ms, seq + 1))
        if not bounds:
            return 0
        ms, seq = min(bounds)
        return int(self.r.xtrim(self.stream, minid=f"{ms}-{seq}", approximate=False))

    def lag(self) -> dict[str, int]:
        try:
            groups = {(g["name"].decode() if isinstance(g["name"], bytes) else g["name"]): g
                      for g in self.r.xinfo_groups(self.stream)}
        except redis.ResponseError:
            return {"lag": 0, "pending": 0}
        g = groups.get(self.group)
        if g is None:
            return {"lag": int(self.r.xlen(self.stream)), "pending": 0}
        lag = g.get("lag")
        return {"lag": int(lag) if lag is not None else int(self.r.xlen(self.stream)),
                "pending": int(g.get("pending", 0))}


def _sid(x: Any) -> tuple[int, int]:
    s = x.decode() if isinstance(x, bytes) else str(x)
    ms, _, seq = s.partition("-")
    return int(ms), int(seq or 0)


class KafkaBus:
    """Kafka (confluent-kafka): events keyed by product id; dedupe markers in Redis; commits after the
    consumer has applied and archived (``ack``). Redelivery after a crash is Kafka's: uncommitted offsets
    are consumed again after the group rebalances, so ``claim`` and ``trim`` (retention) are no-ops."""

    def __init__(self, bootstrap: str, topic: str, group: str, dedupe: redis.Redis | None = None,
                 ttl_s: int = 7 * 24 * 3600, timeout_s: float = 5.0):
        try:
            import confluent_kafka  # noqa: F401
        except ImportError as exc:
            raise ConfigError("event_bus=kafka needs the confluent-kafka package (pip install confluent-kafka)",
                              field="event_bus") from exc
        from confluent_kafka import Consumer, Producer

        self.topic, self.group, self.dedupe, self.ttl, self.timeout = topic, group, dedupe, ttl_s, timeout_s
        self.producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
        self._consumer_conf = {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                               "auto.offset.reset": "earliest"}
        self._Consumer = Consumer
        self.consumer: Any = None
        self._msgs: dict[str, Any] = {}

    def publish(self, events: Sequence[dict[str, Any]]) -> tuple[int, int]:
        new, dup = [], 0
        for e in events:
            if self.dedupe is not None and not self.dedupe.set(seen_event_key(e["event_id"]), "1", nx=True,
                                                                ex=self.ttl):
                dup += 1
                continue
            new.append(e)
        errors: list[Any] = []
        for e in new:
            self.producer.produce(self.topic, key=str(e["product_id"]).encode(), value=encode_event(e),
                                  on_delivery=lambda err, _msg: errors.append(err) if err else None)
        left = self.producer.flush(self.timeout)
        if left or errors:
            if self.dedupe is not None and new:
                self.dedupe.delete(*[seen_event_key(e["event_id"]) for e in new])
            raise ConnectionError(f"kafka append failed: {errors[:1] or f'{left} undelivered'}")
        return len(new), dup

    def ensure_group(self) -> None:
        if self.consumer is None:
            self.consumer = self._Consumer(self._consumer_conf)
            self.consumer.subscribe([self.topic])

    def read(self, consumer: str, count: int, block_ms: int, pending: bool = False,
             after: str = "0") -> list[BusEntry]:
        if pending:
            return []
        self.ensure_group()
        out = []
        for m in self.consumer.consume(num_messages=count, timeout=block_ms / 1000.0):
            if m.error():
                log.warning("kafka: %s", m.error())
                continue
            mid = f"{m.partition()}:{m.offset()}"
            self._msgs[mid] = m
            out.append(entry_of(mid, m.value() or b""))
        return out

    def claim(self, consumer: str, min_idle_ms: int, count: int) -> list[BusEntry]:
        return []

    def ack(self, ids: Sequence[str]) -> None:
        from confluent_kafka import TopicPartition

        best: dict[int, int] = {}
        for mid in ids:
            p, o = map(int, mid.split(":"))
            best[p] = max(best.get(p, -1), o)
            self._msgs.pop(mid, None)
        if best:
            self.consumer.commit(offsets=[TopicPartition(self.topic, p, o + 1) for p, o in best.items()],
                                 asynchronous=False)

    def trim(self) -> int:
        return 0

    def lag(self) -> dict[str, int]:
        if self.consumer is None:
            return {"lag": 0, "pending": len(self._msgs)}
        total = 0
        for tp in self.consumer.assignment():
            _, high = self.consumer.get_watermark_offsets(tp, timeout=self.timeout)
            pos = self.consumer.position([tp])[0].offset
            total += max(0, high - max(pos, 0))
        return {"lag": total, "pending": len(self._msgs)}


def kafka_topic(settings: Settings | None = None) -> str:
    """The events topic on Kafka: the event stream's name with dots (``jk:events`` -> ``jk.events``)."""
    return (settings or get_settings()).event_stream.replace(":", ".")


def make_bus(client: redis.Redis, settings: Settings | None = None) -> EventBus:
    s = settings or get_settings()
    if s.event_bus == "kafka":
        if not s.kafka_bootstrap:
            raise ConfigError("event_bus=kafka needs JAIKOD_KAFKA_BOOTSTRAP", field="kafka_bootstrap")
        return KafkaBus(s.kafka_bootstrap, kafka_topic(s), s.event_group, dedupe=client,
                        ttl_s=s.event_dedupe_ttl_s)
    return RedisStreamsBus(client, s)
