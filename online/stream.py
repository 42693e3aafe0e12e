"""The stream processor (``jaikod stream`` / ``python -m online.stream``): one consumer of the event
bus's consumer group (several processes share the work).

For every batch of entries, in one Redis ``MULTI`` (:class:`online.apply.EventApplier`, the step the Flink
job runs too): the real-time features and the listing flags an event carries (stock, boost)
(:meth:`OnlineStore.apply_event`, the batch ETL's window definitions, idempotent per event id) and the
per-model-version CTR counters (idempotent per event id, ``jk:mv:*``). So an
event is visible to ``/v1/feed`` as soon as it is read (well under 1 s), and a redelivery after a
crash counts nothing twice.

Raw events are archived to the Parquet lake in micro-batches,
``<lake>/events/date=YYYY-MM-DD/stream-<uuid>.parquet`` (written to a hidden temp file, fsynced,
renamed), so the nightly ETL sees them. On an object-store lake (``s3://``) the hidden temp file is one
object PUT and the rename a server-side copy, each atomic and durable when it returns
(:func:`gpu_core.lake.stage_file` / :func:`~gpu_core.lake.commit_file`); a PUT or copy that fails raises
out of the flush before any ack, so its entries stay pending and are archived again. An entry is acknowledged (``XACK``) only after it has been
applied *and* archived, and trimmed (``XTRIM MINID``) only once acknowledged. Between the rename and
the ack the file is listed in a manifest (``jk:stream:manifest``): a consumer that restarts (or takes
over a dead one's entries) acknowledges the entries of a renamed file instead of archiving them again,
so the lake holds every event once.

Poison never stops the processor: an entry that is no valid event (:func:`gpu_core.streams.event_problem`),
or that Redis refuses to apply, or that cannot be written to Parquet, is moved to the dead-letter stream
(``jk:stream:dead``, with its reason), acknowledged, counted (``dead_lettered`` in ``jk:stream:stats``,
``jaikod_stream_dead_letters`` on ``/metrics``) and logged by id and reason (never its content); the rest
of its batch goes on. ``jaikod stream dead-letter list|replay|drop`` works through them (:class:`DeadLetters`).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import redis

from gpu_core import ops
from gpu_core.lake import commit_file, lake_path, staged_path
from gpu_core.pii import SealError
from gpu_core.redis_client import connect
from gpu_core.settings import Settings, get_settings
from gpu_core.streams import (
    DEAD_LETTER,
    MANIFEST,
    STREAM_STATS,
    dead_letter_payload,
    dead_letter_size,
)
from online.apply import EventApplier, stage_archive
from online.bus import BusEntry, EventBus, make_bus

log = logging.getLogger("jaikod.stream")


class StreamProcessor:
    def __init__(self, client: redis.Redis, lake: Path | str, consumer: str | None = None,
                 settings: Settings | None = None, bus: EventBus | None = None):
        self.s = settings or get_settings()
        self.r = client
        self.lake = lake_path(lake)  # a folder or s3://bucket/prefix
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.bus = bus or make_bus(client, self.s)
        self.bus.on_release(self.flush)  # Kafka rebalance: archive and acknowledge before the hand-over
        self.applier = EventApplier(client, self.s)
        self.store = self.applier.store
        self.buffer: list[BusEntry] = []
        self.buffer_since: float | None = None
        self.applied = 0
        self.duplicates = 0
        self.archived = 0
        self.dead_lettered = 0
        self._refused: set[str] = set()  # ids dead-lettered by the last apply (not buffered for the archive)
        self._last_claim = 0.0
        self._last_reap = 0.0
        self.reaped: list[str] = []  # consumers this processor removed from the group (dead ones)
        self.started_ms = int(time.time() * 1000)
        self.last_applied_ms: int | None = None
        self.last_event_ts_ms: int | None = None
        self._last_beat = 0.0
        self._last_aof = 0.0

    # ---- dead letters ------------------------------------------------------------------------
    def dead_letter(self, entries: list[tuple[BusEntry, str]]) -> int:
        """Move poison entries to the dead-letter stream with their reasons, then acknowledge them."""
        if not entries:
            return 0
        self.applier.dead_letter(entries)
        self.bus.ack([entry.id for entry, _ in entries])
        self.dead_lettered += len(entries)
        return len(entries)

    def screen(self, entries: list[BusEntry]) -> list[BusEntry]:
        """The entries that are valid events; the others go to the dead-letter stream."""
        good, poison = self.applier.split(entries)
        self.dead_letter(poison)
        return good

    # ---- apply -------------------------------------------------------------------------------
    def apply(self, entries: list[BusEntry]) -> int:
        """Apply entries to the online store in one MULTI (:meth:`EventApplier.apply`); number newly applied
        (not seen before). Entries Redis refuses are dead-lettered and acknowledged."""
        if not entries:
            return 0
        done = self.applier.apply(entries)
        if done.refused:
            self.bus.ack([entry.id for entry in done.refused])
            self.dead_lettered += len(done.refused)
            self._refused.update(entry.id for entry in done.refused)
        self.applied += done.new
        self.duplicates += done.duplicates
        if done.new:
            self.last_applied_ms = int(time.time() * 1000)
            kept = [e for e in entries if e.id not in self._refused]
            self.last_event_ts_ms = int(kept[-1].event["ts"])
        return done.new

    # ---- archive -----------------------------------------------------------------------------
    def flush(self) -> int:
        """Archive the buffered entries to the lake, then acknowledge and trim them."""
        if not self.buffer:
            return 0
        entries, self.buffer, self.buffer_since = self.buffer, [], None
        files, unarchivable = stage_archive(self.lake, entries)
        if unarchivable:
            self.dead_letter([(entry, "cannot be archived to Parquet") for entry in entries
                              if entry.id in unarchivable])
            entries = [entry for entry in entries if entry.id not in unarchivable]
        ids = [entry.id for entry in entries]
        if not files:
            return 0
        # manifest first (so a crash after a rename is recognised), then the renames, then ack
        rel = [str(final.relative_to(self.lake)) for final in files]
        info = orjson.dumps({"consumer": self.consumer, "at": time.time(), "ids": ids, "files": rel})
        self.r.hset(MANIFEST, rel[0], info)
        for final in files:
            commit_file(final)
        self._ack(ids, rel[0], len(entries), len(files))
        self.archived += len(entries)
        try:
            self.bus.trim()
        except redis.RedisError as exc:
            log.warning("trim failed: %s", exc)
        return len(entries)

    def _ack(self, ids: list[str], manifest_key: str, n: int, n_files: int) -> None:
        self.bus.ack(ids)
        pipe = self.r.pipeline(transaction=True)
        pipe.hdel(MANIFEST, manifest_key)
        pipe.hincrby(STREAM_STATS, "archived", n)
        pipe.hincrby(STREAM_STATS, "files", n_files)
        pipe.execute()

    def recover(self, own_only: bool = False) -> int:
        """Resolve manifests left by a crash: ack entries whose files were renamed, forget the others."""
        n = 0
        now = time.time()
        for key, raw in self.r.hgetall(MANIFEST).items():
            m = orjson.loads(raw)
            mine = m["consumer"] == self.consumer
            if own_only and not mine:
                continue
            stale = mine or now - m["at"] > self.s.stream_claim_idle_ms / 1000.0
            if not stale:
                continue
            exists = [(self.lake / f).exists() for f in m["files"]]
            if any(exists):
                # a rename happened; finish the rest (renames are per day, all tmp files were written)
                for f, ok in zip(m["files"], exists, strict=True):
                    if not ok:
                        commit_file(self.lake / f)
                self._ack(m["ids"], key.decode(), len(m["ids"]), len(m["files"]))
                n += len(m["ids"])
            else:
                for f in m["files"]:
                    staged_path(self.lake / f).unlink(missing_ok=True)
                self.r.hdel(MANIFEST, key)
        if n:
            self.bus.trim()
        return n

    # ---- the loop ----------------------------------------------------------------------------
    def beat(self, every_s: float = 1.0) -> None:
        """Report this consumer in ``jk:ops:stream`` (read by /readyz and the admin status), at most
        once per ``every_s``; never fails the loop."""
        now = time.monotonic()
        if now - self._last_beat < every_s:
            return
        self._last_beat = now
        try:
            ops.write_beat(self.r, ops.ConsumerBeat(
                self.consumer, os.getpid(), self.started_ms, int(time.time() * 1000), self.applied,
                self.duplicates, self.archived, self.last_applied_ms, self.last_event_ts_ms))
        except redis.RedisError as exc:
            log.warning("heartbeat failed: %s", exc)

    def _take(self, entries: list[BusEntry]) -> None:
        entries = self.screen(entries)
        if not entries:
            return
        self.apply(entries)
        if self._refused:
            entries = [e for e in entries if e.id not in self._refused]
            self._refused.clear()
        if not entries:
            return
        if self.buffer_since is None:
            self.buffer_since = time.monotonic()
        self.buffer.extend(entries)

    def _maybe_flush(self) -> None:
        if self.buffer and (len(self.buffer) >= self.s.stream_archive_events or
                            time.monotonic() - (self.buffer_since or 0) >= self.s.stream_archive_interval_s):
            self.flush()

    def start(self) -> None:
        self.bus.ensure_group()
        self.recover(own_only=True)
        after = "0"
        while True:  # own entries delivered before a restart and never acknowledged
            entries = self.bus.read(self.consumer, self.s.stream_batch, 0, pending=True, after=after)
            if not entries:
                break
            self._take(entries)
            after = entries[-1].id
            self._maybe_flush()

    def rewrite_aof(self) -> bool:
        """``BGREWRITEAOF`` when Redis keeps an AOF, every ``aof_rewrite_interval_s``: entries trimmed from
        the event bus (and expired markers) then leave the file on disk too. True when one was started."""
        every = self.s.aof_rewrite_interval_s
        now = time.monotonic()
        if every <= 0 or now - self._last_aof < every:
            return False
        self._last_aof = now
        try:
            if self.r.config_get("appendonly").get("appendonly") != "yes":
                return False
            self.r.bgrewriteaof()
            return True
        except redis.RedisError as exc:  # one already running, or CONFIG/BGREWRITEAOF not allowed here
            log.info("aof rewrite not started: %s", exc)
            return False

    def reap(self, now: float) -> list[str]:
        """Every ``stream_consumer_reap_idle_s / 4`` (at most once a minute): consumers idle longer than
        ``stream_consumer_reap_idle_s`` with nothing pending leave the group; never fails the loop."""
        idle_s = self.s.stream_consumer_reap_idle_s
        if idle_s <= 0 or now - self._last_reap < min(idle_s / 4, 60.0):
            return []
        self._last_reap = now
        try:
            gone = self.bus.reap(self.consumer, int(idle_s * 1000))
        except redis.RedisError as exc:
            log.warning("consumer reap failed: %s", exc)
            return []
        if gone:
            log.info(orjson.dumps({"event": "consumers_removed", "consumers": gone}).decode())
            self.reaped.extend(gone)
        return gone

    def step(self) -> int:
        """One read (blocking up to stream_block_ms), apply, and archive when due; entries read."""
        self.rewrite_aof()
        now = time.monotonic()
        got: list[BusEntry] = []
        if now - self._last_claim >= max(self.s.stream_claim_idle_ms / 2000.0, 0.05):
            self._last_claim = now
            self.recover()
            got = self.bus.claim(self.consumer, self.s.stream_claim_idle_ms, self.s.stream_batch)
            held = {b.id for b in self.buffer}
            got = [e for e in got if e.id not in held]
        if not got:
            got = self.bus.read(self.consumer, self.s.stream_batch, self.s.stream_block_ms)
        self._take(got)
        self.reap(now)
        self._maybe_flush()
        return len(got)

    def _drained(self, idle_s: float, max_idle_s: float) -> bool:
        """Idle for ``max_idle_s`` and nothing on the bus left to deliver to this consumer. A broker may
        hand over the partitions' entries one fetch at a time (Kafka), so a quiet spell alone is not "all
        read"; past ten quiet spells it stops anyway (entries held by another live consumer)."""
        if idle_s < max_idle_s:
            return False
        if idle_s >= 10 * max_idle_s:
            return True
        try:
            return self.bus.lag()["lag"] == 0
        except Exception:  # noqa: BLE001 - a lag probe that fails never keeps a drain running
            return True

    def run(self, stop: threading.Event | None = None, max_idle_s: float | None = None) -> dict[str, int]:
        stop = stop or threading.Event()
        self.start()
        idle_since = time.monotonic()
        try:
            while not stop.is_set():
                self.beat()
                if self.step():
                    idle_since = time.monotonic()
                elif max_idle_s is not None and not self.buffer and self._drained(time.monotonic() - idle_since,
                                                                                  max_idle_s):
                    break
            self.flush()
        finally:
            try:
                ops.remove_beat(self.r, self.consumer)
            except redis.RedisError:
                pass
        return {"applied": self.applied, "duplicates": self.duplicates, "archived": self.archived,
                "dead_lettered": self.dead_lettered}


class Replayed(NamedTuple):
    """What :meth:`DeadLetters.replay` did: entries re-sent (and removed), ids of those whose sealed payload
    did not open (left in place: damaged, or sealed under another PII key)."""

    resent: int
    unopened: list[str]


class DeadLetters:
    """The dead-letter stream: list, replay (re-send to the event bus, for events fixed by a later
    release or refused by a transient cause) and drop. An entry replayed that is still poison comes back.
    Payloads rest sealed (:func:`gpu_core.streams.dead_letter_fields`): ``list`` never opens them, ``replay``
    opens each one just before it re-sends it."""

    def __init__(self, client: redis.Redis, settings: Settings | None = None):
        self.r = client
        self.s = settings or get_settings()

    def list(self, count: int = 100) -> list[dict[str, Any]]:
        out = []
        for eid, f in self.r.xrange(DEAD_LETTER, count=count):
            out.append({"id": eid.decode(), "source_id": f.get(b"source_id", b"").decode(),
                        "reason": f.get(b"reason", b"").decode(errors="replace"),
                        "at_ms": int(f.get(b"at_ms", b"0") or 0), "bytes": dead_letter_size(f)})
        return out

    def _select(self, ids: list[str] | None) -> list[tuple[str, dict]]:
        if ids:
            got = []
            for i in ids:
                got += [(eid.decode(), f) for eid, f in self.r.xrange(DEAD_LETTER, min=i, max=i)]
            return got
        return [(eid.decode(), f) for eid, f in self.r.xrange(DEAD_LETTER)]

    def replay(self, ids: list[str] | None = None) -> Replayed:
        """Re-send the payloads (all, or ``ids``) to the event bus exactly as they were on it and remove them
        here. An entry whose payload does not open is logged by id and left in place."""
        picked = self._select(ids)
        bus = make_bus(self.r, self.s)
        resent, unopened = 0, []
        try:
            for eid, f in picked:  # re-sent first, then removed: a crash between re-sends it twice (deduped)
                try:
                    payload = dead_letter_payload(f)
                except SealError as exc:
                    log.warning(orjson.dumps({"event": "dead_letter_unopened", "id": eid, "reason": str(exc)}).decode())
                    unopened.append(eid)
                    continue
                bus.resend([payload])
                self.r.xdel(DEAD_LETTER, eid)
                resent += 1
        finally:
            bus.close()
        return Replayed(resent, unopened)

    def drop(self, ids: list[str] | None = None) -> int:
        picked = [eid for eid, _ in self._select(ids)]
        return int(self.r.xdel(DEAD_LETTER, *picked)) if picked else 0


def run_stream(consumer: str | None = None, lake: Path | None = None, max_idle_s: float | None = None,
               on_start: Any = None) -> dict[str, int]:
    """Run a stream processor until SIGTERM/SIGINT (or ``max_idle_s`` without events)."""
    s = get_settings()
    client = connect(s.redis_url, socket_timeout=10.0, socket_connect_timeout=5.0)
    proc = StreamProcessor(client, lake or s.lake_dir, consumer, s)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if on_start is not None:
        on_start(proc)
    try:
        return proc.run(stop, max_idle_s)
    finally:
        proc.bus.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m online.stream", description=__doc__.split("\n\n")[0])
    ap.add_argument("--consumer", help="consumer name in the group (default host-pid; reuse it on restart)")
    ap.add_argument("--lake", type=lake_path, help="Parquet lake: a folder or s3://bucket/prefix "
                                                   "(default $JAIKOD_HOME/lake)")
    ap.add_argument("--max-idle-s", type=float, default=None, help="exit after this long without events")
    a = ap.parse_args(argv)
    logging.basicConfig(level=os.environ.get("JAIKOD_LOG_LEVEL", "INFO"), format="%(message)s")
    out = run_stream(a.consumer, a.lake, a.max_idle_s,
                     on_start=lambda p: log.info(orjson.dumps({"event": "stream_started",
                                                               "consumer": p.consumer}).decode()))
    log.info(orjson.dumps({"event": "stream_stopped", **out}).decode())


if __name__ == "__main__":
    main()
