"""The event bus behind one small protocol: Redis Streams (default; consumer groups, pending-entry
redelivery) and Kafka (confluent-kafka, for deployments at scale; import-guarded).

Delivery is at-least-once: a consumer acknowledges an entry only after it has been applied and
archived; entries of a crashed consumer stay pending and are re-delivered (``XAUTOCLAIM`` after
``settings.stream_claim_idle_ms``, or on restart under the same consumer name).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

import orjson
import redis

from gpu_core.errors import ConfigError
from gpu_core.redis_client import wait_replicas
from gpu_core.settings import Settings, get_settings
from gpu_core.streams import decode_event, encode_event, event_topic, seen_event_key

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

    def reap(self, keep: str, min_idle_ms: int) -> list[str]:
        """Remove consumers of the group (but ``keep``) idle longer than ``min_idle_ms`` with nothing
        pending (dead processors); their names."""

    def trim(self) -> int:
        """Drop entries every consumer has acknowledged; number dropped."""

    def lag(self) -> dict[str, int]:
        """{"lag": not yet delivered, "pending": delivered, not acknowledged}."""

    def resend(self, payloads: Sequence[bytes]) -> None:
        """Append raw payloads as they are, without the event-id dedupe (a dead-letter replay)."""

    def on_release(self, flush: Callable[[], object]) -> None:
        """Call ``flush`` before entries this consumer holds are handed to another consumer (Kafka: its
        partitions are revoked in a rebalance). Redis Streams never hands over a live consumer's entries
        (they are claimed one by one once idle), so there it is never called."""

    def close(self) -> None:
        """Let go of the connections this bus opened (not a shared Redis client)."""


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
        keys = [self.stream] + [seen_event_key(e["event_id"], self.stream) for e in events]
        acc, dup = self._publish(keys=keys, args=[self.ttl] + [encode_event(e) for e in events])
        if self.min_replicas > 0 and acc:
            got = wait_replicas(self.r, self.stream, self.min_replicas, 1000)
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

    def reap(self, keep: str, min_idle_ms: int) -> list[str]:
        """``XGROUP DELCONSUMER`` for every consumer idle longer than ``min_idle_ms`` with no pending entry
        (one with pending entries stays until they are claimed: deleting it would drop them)."""
        try:
            consumers = self.r.xinfo_consumers(self.stream, self.group)
        except redis.ResponseError:
            return []
        gone = []
        for c in consumers:
            name = c["name"].decode() if isinstance(c["name"], bytes) else str(c["name"])
            idle = int(c.get("inactive", -1)) if int(c.get("inactive", -1)) >= 0 else int(c.get("idle", 0))
            if name != keep and int(c.get("pending", 0)) == 0 and idle > min_idle_ms:
                # DELCONSUMER returns the pending count it dropped: 0 unless one was delivered meanwhile
                if self.r.xgroup_delconsumer(self.stream, self.group, name):
                    log.warning("consumer %s removed with entries delivered since the check", name)
                gone.append(name)
        return gone

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

    def resend(self, payloads: Sequence[bytes]) -> None:
        pipe = self.r.pipeline(transaction=True)
        for p in payloads:
            pipe.xadd(self.stream, {"e": p})
        pipe.execute()

    def on_release(self, flush: Callable[[], object]) -> None:
        return None

    def close(self) -> None:
        return None

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


class _Partition:
    """Delivery state of one assigned partition: offsets delivered and not yet acknowledged, offsets
    acknowledged before delivery (a restarted consumer's manifest recovery), and the commit point."""

    __slots__ = ("outstanding", "preacked", "next", "committed")

    def __init__(self) -> None:
        self.outstanding: set[int] = set()
        self.preacked: set[int] = set()
        self.next: int | None = None  # one past the highest offset delivered
        self.committed: int | None = None

    def commit_point(self) -> int | None:
        """Kafka commits a position, not entries: everything below the oldest unacknowledged offset."""
        if self.outstanding:
            return min(self.outstanding)
        return self.next


class KafkaBus:
    """Kafka (confluent-kafka): events keyed by product id on ``event_topic(settings.event_stream)``;
    duplicate event ids dropped at publish by Redis markers (as on Redis Streams); offsets committed only
    for entries applied and archived (``ack``).

    How the Redis Streams semantics map onto Kafka:

    * ``ack``: Kafka commits a position per partition, not single entries, so an entry acknowledged out of
      order (a poison entry dead-lettered while older good ones wait for the archive) moves the committed
      offset only up to the oldest entry still unacknowledged; a crash redelivers from there and the
      processor's per-event-id markers count nothing twice.
    * ``read(pending=True)``: nothing; after a restart the group's committed offsets are the redelivery.
      The consumer name is the static member id (``group.instance.id``): a consumer restarted under the
      same name takes its partitions back at once, without waiting for a rebalance.
    * ``claim``: nothing to do by hand. A consumer that dies without coming back loses its partitions when
      its session times out (``session.timeout.ms`` = ``stream_claim_idle_ms``, at least 1 s) and the
      group rebalances them to the live consumers, which read the uncommitted entries again.
    * ``on_release``: before partitions are revoked in a rebalance, the processor's buffer is archived and
      acknowledged (so the next owner neither re-archives nor waits); entries of revoked partitions still
      in flight are dropped from this consumer's books.
    * ``trim``: retention is the broker's (``log.retention.*``): nothing to trim by hand.
    * ``lag``: in a consumer, ``lag`` = entries not yet delivered to it (high watermark - position) and
      ``pending`` = delivered, not acknowledged; elsewhere (the API's metrics) ``lag`` = entries the group has
      not committed and ``pending`` = 0.
    """

    def __init__(self, bootstrap: str, topic: str, group: str, dedupe: redis.Redis | None = None,
                 ttl_s: int = 7 * 24 * 3600, timeout_s: float = 5.0, partitions: int = 4,
                 replication_factor: int = 1, session_timeout_ms: int = 30_000):
        try:
            import confluent_kafka  # noqa: F401
        except ImportError as exc:
            raise ConfigError("event_bus=kafka needs the confluent-kafka package (pip install confluent-kafka)",
                              field="event_bus") from exc
        from confluent_kafka import Producer

        self.bootstrap, self.topic, self.group, self.dedupe = bootstrap, topic, group, dedupe
        self.ttl, self.timeout = ttl_s, timeout_s
        self.partitions, self.replication_factor = partitions, replication_factor
        self.session_timeout_ms = max(int(session_timeout_ms), 1000)
        self.producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                                  "linger.ms": 5, "logger": log})
        self.consumer: Any = None
        self.consumer_name: str | None = None
        self._admin: Any = None  # offsets for lag (also in a process that consumes nothing: the API)
        self._parts: dict[int, _Partition] = {}
        self._assigned = False
        self._early: list[BusEntry] = []  # read while waiting for the first assignment
        self._release: Any = None
        self._topic_ready = False

    # ---- topic and group -------------------------------------------------------------------------
    def ensure_topic(self) -> None:
        """Create the events topic with ``partitions`` partitions when it does not exist (once per bus)."""
        if self._topic_ready:
            return
        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka.admin import NewTopic

        wait = max(self.timeout, 30.0)  # once per process, at start: a broker just started may be slow
        fut = self._admin_client().create_topics([NewTopic(self.topic, self.partitions, self.replication_factor)],
                                                 operation_timeout=wait, request_timeout=wait)[self.topic]
        try:
            fut.result(timeout=wait + 1)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise ConnectionError(f"kafka: cannot create topic {self.topic}: {exc}") from exc
        except Exception as exc:  # the future's own timeout
            raise ConnectionError(f"kafka: cannot create topic {self.topic}: {exc}") from exc
        self._topic_ready = True

    def ensure_group(self) -> None:
        self.ensure_topic()

    def on_release(self, flush: Any) -> None:
        self._release = flush

    def _join(self, consumer: str) -> None:
        from confluent_kafka import Consumer

        if self.consumer is not None:
            if consumer != self.consumer_name:
                raise ValueError(f"this KafkaBus consumes as {self.consumer_name!r}, not {consumer!r}")
            return
        self.ensure_topic()
        self.consumer_name = consumer
        self.consumer = Consumer({
            "bootstrap.servers": self.bootstrap, "group.id": self.group, "group.instance.id": consumer,
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "session.timeout.ms": self.session_timeout_ms,
            "heartbeat.interval.ms": max(self.session_timeout_ms // 4, 250),
            # librdkafka refuses a poll interval below the session timeout (a long claim timeout is valid)
            "max.poll.interval.ms": max(300_000, self.session_timeout_ms),
            "enable.partition.eof": False, "logger": log})
        self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)
        # wait for the first assignment (a dead member of the same group may hold the partitions until its
        # session times out), so a processor's idle timer starts only once it can receive anything
        deadline = time.monotonic() + max(30.0, 3 * self.session_timeout_ms / 1000.0)
        while not self._assigned and time.monotonic() < deadline:
            self._early += self._consume(500, 0.1)
        # ... and, when the group has a backlog, for its first entries (offset look-ups and the first fetch
        # take a few round trips), so that an empty read means "nothing to do", as on Redis Streams
        deadline = time.monotonic() + 10.0
        while self._assigned and not self._early and time.monotonic() < deadline and self._group_backlog() > 0:
            self._early += self._consume(500, 0.1)

    def _on_assign(self, _consumer: Any, partitions: list[Any]) -> None:
        for tp in partitions:
            self._parts.setdefault(tp.partition, _Partition())
        self._assigned = True

    def _on_lost(self, _consumer: Any, partitions: list[Any]) -> None:
        """This consumer's session expired (it stalled): the partitions already belong to another member,
        so nothing can be committed any more; its books are dropped. Entries still in the processor's
        buffer are archived by it later, and their new owner archives them too (applied once, thanks to the
        markers; the lake may then hold such an entry twice)."""
        self._drop(partitions)

    def _drop(self, partitions: list[Any]) -> None:
        for tp in partitions:
            self._parts.pop(tp.partition, None)
        self._early = [e for e in self._early if int(e.id.split(":")[0]) in self._parts]

    def _on_revoke(self, _consumer: Any, partitions: list[Any]) -> None:
        if self._release is not None and any(self._parts.get(tp.partition) for tp in partitions):
            try:
                self._release()  # archive and acknowledge what this consumer holds, while it still may commit
            except Exception as exc:  # never let a callback kill librdkafka's poll; the next owner redelivers
                log.warning("kafka: flush before rebalance failed: %s", exc)
        self._drop(partitions)

    # ---- publish ---------------------------------------------------------------------------------
    def _produce(self, items: list[tuple[bytes | None, bytes]]) -> None:
        errors: list[Any] = []

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(err)

        for key, value in items:
            while True:
                try:
                    self.producer.produce(self.topic, key=key, value=value, on_delivery=delivered)
                    break
                except BufferError:  # local queue full: let deliveries drain
                    self.producer.poll(0.05)
        left = self.producer.flush(self.timeout)
        if left or errors:
            raise ConnectionError(f"kafka append failed: {errors[:1] or f'{left} undelivered'}")

    def publish(self, events: Sequence[dict[str, Any]]) -> tuple[int, int]:
        if not events:
            return 0, 0
        new, dup = list(events), 0
        if self.dedupe is not None:
            pipe = self.dedupe.pipeline(transaction=False)
            for e in events:
                pipe.set(seen_event_key(e["event_id"], self.topic), "1", nx=True, ex=self.ttl)
            marked = pipe.execute()
            new = [e for e, ok in zip(events, marked, strict=True) if ok]
            dup = len(events) - len(new)
        if not new:
            return 0, dup
        try:
            self._produce([(str(e["product_id"]).encode(), encode_event(e)) for e in new])
        except ConnectionError:
            if self.dedupe is not None:  # not appended: a retry must not be taken for a duplicate
                self.dedupe.delete(*[seen_event_key(e["event_id"], self.topic) for e in new])
            raise
        return len(new), dup

    def resend(self, payloads: Sequence[bytes]) -> None:
        self._produce([(None, p) for p in payloads])

    # ---- consume ---------------------------------------------------------------------------------
    def _consume(self, count: int, timeout_s: float) -> list[BusEntry]:
        out = []
        # like XREADGROUP BLOCK: wait for the first entry only, then take what is already here
        # (consume(n, timeout) alone would wait the whole timeout for n entries)
        first = self.consumer.poll(timeout_s)
        if first is None:
            return out
        msgs = [first] + (self.consumer.consume(num_messages=count - 1, timeout=0) if count > 1 else [])
        for m in msgs:
            if m.error():
                log.warning("kafka: %s", m.error())
                continue
            part = self._parts.get(m.partition())
            if part is None:  # revoked while this batch was in flight: the next owner reads it
                continue
            off = m.offset()
            part.next = off + 1
            if off in part.preacked:  # archived before a crash (manifest): acknowledge, do not redeliver
                part.preacked.discard(off)
                continue
            part.outstanding.add(off)
            out.append(entry_of(f"{m.partition()}:{off}", m.value() or b""))
        return out

    def read(self, consumer: str, count: int, block_ms: int, pending: bool = False,
             after: str = "0") -> list[BusEntry]:
        if pending:
            self._join(consumer)
            return []
        self._join(consumer)
        if self._early:
            out, self._early = self._early[:count], self._early[count:]
            return out
        out = self._consume(count, block_ms / 1000.0)
        self._commit()  # pre-acknowledged entries skipped above move the commit point too
        return out

    def claim(self, consumer: str, min_idle_ms: int, count: int) -> list[BusEntry]:
        return []

    def reap(self, keep: str, min_idle_ms: int) -> list[str]:
        return []  # Kafka's group coordinator drops members whose session timed out

    def ack(self, ids: Sequence[str]) -> None:
        for mid in ids:
            p, o = map(int, mid.split(":"))
            part = self._parts.get(p)
            if part is None:
                if self.consumer is None or not self._assigned:
                    self._parts[p] = part = _Partition()  # recovery before the assignment: keep it
                else:
                    continue  # not ours any more: its next owner redelivers and the markers dedupe
            if o in part.outstanding:
                part.outstanding.discard(o)
            elif part.next is None or o >= part.next:
                part.preacked.add(o)
        self._commit()

    def _commit(self) -> None:
        from confluent_kafka import TopicPartition

        if self.consumer is None:
            return
        offsets = []
        for p, part in self._parts.items():
            at = part.commit_point()
            if at is not None and at != part.committed:
                offsets.append((p, at))
        if offsets:
            self.consumer.commit(offsets=[TopicPartition(self.topic, p, at) for p, at in offsets],
                                 asynchronous=False)
            for p, at in offsets:
                self._parts[p].committed = at

    def trim(self) -> int:
        return 0

    # ---- lag ---------------------------------------------------------------------------------------
    def _admin_client(self) -> Any:
        from confluent_kafka.admin import AdminClient

        if self._admin is None:
            self._admin = AdminClient({"bootstrap.servers": self.bootstrap, "logger": log})
        return self._admin

    def _offsets(self, partitions: Sequence[int] | None = None) -> dict[int, tuple[int, int, int]]:
        """{partition: (earliest, latest, committed by the group or -1)}, in three batched requests."""
        from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
        from confluent_kafka.admin import OffsetSpec

        admin = self._admin_client()
        if partitions is None:
            md = admin.list_topics(self.topic, timeout=self.timeout).topics.get(self.topic)
            if md is None or md.error is not None:
                return {}
            partitions = sorted(md.partitions)
        if not partitions:
            return {}
        tps = [TopicPartition(self.topic, p) for p in partitions]
        kw = {"request_timeout": self.timeout}
        low = admin.list_offsets({tp: OffsetSpec.earliest() for tp in tps}, **kw)
        high = admin.list_offsets({tp: OffsetSpec.latest() for tp in tps}, **kw)
        group = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(self.group, tps)], **kw)[self.group]
        committed = {tp.partition: tp.offset for tp in group.result(self.timeout).topic_partitions}
        return {tp.partition: (low[tp].result(self.timeout).offset, high[tp].result(self.timeout).offset,
                               committed.get(tp.partition, -1)) for tp in tps}

    def _group_backlog(self) -> int:
        """Entries of this consumer's partitions that the group has not committed."""
        parts = [tp.partition for tp in self.consumer.assignment()]
        return sum(max(0, hi - (c if c >= 0 else lo)) for lo, hi, c in self._offsets(parts).values())

    def lag(self) -> dict[str, int]:
        if self.consumer is not None:
            total = 0
            for p, (lo, hi, c) in self._offsets([tp.partition for tp in self.consumer.assignment()]).items():
                part = self._parts.get(p)
                pos = part.next if part is not None and part.next is not None else (c if c >= 0 else lo)
                total += max(0, hi - pos)
            early = len(self._early)  # taken from the broker while joining, not yet handed out
            return {"lag": total + early, "pending": sum(len(p.outstanding) for p in self._parts.values()) - early}
        total = sum(max(0, hi - (c if c >= 0 else lo)) for lo, hi, c in self._offsets().values())
        return {"lag": total, "pending": 0}

    def close(self) -> None:
        """Leave the consumer (a static member: its partitions wait ``session.timeout.ms`` for it to come
        back under the same name) and flush the producer."""
        if self.consumer is not None:
            self.consumer.close()
        self.consumer = self._admin = None
        self._parts.clear()
        self._assigned = False
        self.producer.flush(self.timeout)


def make_bus(client: redis.Redis, settings: Settings | None = None) -> EventBus:
    s = settings or get_settings()
    if s.event_bus == "kafka":
        if not s.kafka_bootstrap:
            raise ConfigError("event_bus=kafka needs JAIKOD_KAFKA_BOOTSTRAP", field="kafka_bootstrap")
        return KafkaBus(s.kafka_bootstrap, event_topic(s.event_stream), s.event_group, dedupe=client,
                        ttl_s=s.event_dedupe_ttl_s, timeout_s=s.kafka_timeout_s, partitions=s.kafka_partitions,
                        replication_factor=s.kafka_replication_factor, session_timeout_ms=s.stream_claim_idle_ms)
    return RedisStreamsBus(client, s)
