"""The stream processor (``jaikod stream`` / ``python -m online.stream``): one consumer of the event
bus's consumer group (several processes share the work).

For every entry, in one Redis ``MULTI``: the real-time features (:meth:`OnlineStore.apply_event`, the
batch ETL's window definitions, idempotent per event id), the per-model-version CTR counters
(idempotent per event id, ``jk:mv:*``) and the listing flags an event carries (stock, boost). So an
event is visible to ``/v1/feed`` as soon as it is read (well under 1 s), and a redelivery after a
crash counts nothing twice.

Raw events are archived to the Parquet lake in micro-batches,
``<lake>/events/date=YYYY-MM-DD/stream-<uuid>.parquet`` (written to a hidden temp file, fsynced,
renamed), so the nightly ETL sees them. An entry is acknowledged (``XACK``) only after it has been
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
import datetime as dt
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import redis

from gpu_core import ops
from gpu_core.feature_store import OnlineStore, applied_key
from gpu_core.lake import commit_file, events_table, partition_dir, stage_file, staged_path
from gpu_core.pii import pseudonym
from gpu_core.schema import PRODUCT_DAILY
from gpu_core.settings import Settings, get_settings
from gpu_core.streams import (
    DEAD_LETTER,
    DEAD_LETTER_MAXLEN,
    MANIFEST,
    STREAM_STATS,
    VERSION_STATS,
    dead_letter_fields,
    encode_event,
    event_problem,
    version_seen_key,
)
from online.bus import BusEntry, EventBus, make_bus

log = logging.getLogger("jaikod.stream")

VERSION_TTL_S = 7 * 24 * 3600

# CTR per model version, once per event id. KEYS: marker, stats hash; ARGV: field, ttl
_COUNT_VERSION = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[2])) == false then return 0 end
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
return 1
"""


class ProductCategories:
    """product id -> category code, from the live snapshot's product table (reloaded when it moves)."""

    def __init__(self, store: OnlineStore, every_s: float = 5.0):
        self.store, self.every_s = store, every_s
        self.version: str | None = None
        self.ids = np.empty(0, np.int64)
        self.cats = np.empty(0, np.int32)
        self._checked = 0.0

    def refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.every_s:
            return
        self._checked = now
        v = self.store.current_version()
        if v is None or v == self.version:
            return
        try:
            m = self.store.load_product_mirror(v)
        except Exception as exc:
            log.warning("product categories not loaded: %s", exc)
            return
        order = np.argsort(m["ids"], kind="stable")
        self.ids = m["ids"][order]
        self.cats = PRODUCT_DAILY.unpack(m["rows"])["category"][order].astype(np.int32)
        self.version = v

    def of(self, pid: int) -> int:
        if not len(self.ids):
            return -1
        i = int(np.searchsorted(self.ids, pid))
        return int(self.cats[i]) if i < len(self.ids) and self.ids[i] == pid else -1


PSEUDONYMISED = ("event_id", "session_id")  # client-chosen ids: the lake keeps their keyed hash only


def _pseudonymised(e: dict[str, Any]) -> dict[str, str]:
    """The event's client-chosen ids as keyed hashes (stable, so the lake still de-duplicates and joins)."""
    return {k: pseudonym(e[k]) for k in PSEUDONYMISED if e.get(k)}


class StreamProcessor:
    def __init__(self, client: redis.Redis, lake: Path | str, consumer: str | None = None,
                 settings: Settings | None = None, bus: EventBus | None = None):
        self.s = settings or get_settings()
        self.r = client
        self.lake = Path(lake)
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.bus = bus or make_bus(client, self.s)
        self.bus.on_release(self.flush)  # Kafka rebalance: archive and acknowledge before the hand-over
        self.store = OnlineStore(client)
        self.categories = ProductCategories(self.store)
        self._count = client.register_script(_COUNT_VERSION)
        self.buffer: list[BusEntry] = []
        self.buffer_since: float | None = None
        self.applied = 0
        self.duplicates = 0
        self.archived = 0
        self.dead_lettered = 0
        self._refused: set[str] = set()  # ids dead-lettered by the last apply (not buffered for the archive)
        self._last_claim = 0.0
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
        at = int(time.time() * 1000)
        pipe = self.r.pipeline(transaction=True)
        for entry, reason in entries:
            payload = entry.raw or encode_event(entry.event)
            pipe.xadd(DEAD_LETTER, dead_letter_fields(payload, reason, entry.id, at), maxlen=DEAD_LETTER_MAXLEN,
                      approximate=True)
        pipe.hincrby(STREAM_STATS, "dead_lettered", len(entries))
        pipe.execute()
        self.bus.ack([entry.id for entry, _ in entries])
        for entry, reason in entries:
            log.warning(orjson.dumps({"event": "dead_lettered", "id": entry.id, "reason": reason}).decode())
        self.dead_lettered += len(entries)
        return len(entries)

    def screen(self, entries: list[BusEntry]) -> list[BusEntry]:
        """The entries that are valid events; the others go to the dead-letter stream."""
        good, poison = [], []
        for entry in entries:
            why = entry.problem or event_problem(entry.event)
            if why is None:
                good.append(entry)
            else:
                poison.append((entry, why))
        self.dead_letter(poison)
        return good

    # ---- apply -------------------------------------------------------------------------------
    def _queue_apply(self, pipe: Any, entry: BusEntry) -> int:
        """Queue one entry's commands on ``pipe``; the stack index of its apply-event result."""
        e = entry.event
        pid, etype = int(e["product_id"]), e["event_type"]
        at = len(pipe.command_stack)
        self.store.apply_event(e["event_id"], etype, int(e["ts"]), int(e["user_id"]), pid,
                               self.categories.of(pid), e.get("query") or "", pipe=pipe)
        mv = e.get("model_version")
        if mv and etype in ("impression", "click"):
            self._count(keys=[version_seen_key(etype, e["event_id"]), VERSION_STATS.format(mv)],
                        args=[f"{etype}s", VERSION_TTL_S], client=pipe)
        self.store.set_flags(pid, sold=None if e.get("in_stock") is None else not e["in_stock"],
                             boosted=None if e.get("boosted") is None else bool(e["boosted"]), pipe=pipe)
        return at

    def apply(self, entries: list[BusEntry]) -> int:
        """Apply entries to the online store in one MULTI; number newly applied (not seen before). An entry
        whose commands Redis refuses (say, a key of the wrong type) is dead-lettered and its idempotency
        markers removed, so a replay after the cause is fixed applies it; the others apply as usual."""
        if not entries:
            return 0
        self.categories.refresh()
        pipe = self.r.pipeline(transaction=True)
        starts = [self._queue_apply(pipe, entry) for entry in entries]
        res = pipe.execute(raise_on_error=False)
        ends = starts[1:] + [len(res)]
        applied: list[Any] = []
        poison = []
        for entry, a, b in zip(entries, starts, ends, strict=True):
            err = next((x for x in res[a:b] if isinstance(x, Exception)), None)
            if err is None:
                applied.append(res[a])
                continue
            poison.append((entry, f"redis refused the event: {str(err)[:200]}"))
            applied.append(None)
        if poison:
            e = [entry.event for entry, _ in poison]
            self.r.delete(*[applied_key(x["event_id"]) for x in e],
                          *[version_seen_key(x["event_type"], x["event_id"]) for x in e])
            self.dead_letter(poison)
            self._refused.update(entry.id for entry, _ in poison)
        new = sum(1 for v in applied if v == 1)
        entries = [e for e, v in zip(entries, applied, strict=True) if v is not None]
        pipe = self.r.pipeline(transaction=False)
        pipe.hincrby(STREAM_STATS, "applied", new)
        pipe.hincrby(STREAM_STATS, "duplicates", len(entries) - new)
        pipe.execute()
        self.applied += new
        self.duplicates += len(entries) - new
        if new:
            self.last_applied_ms = int(time.time() * 1000)
            self.last_event_ts_ms = int(entries[-1].event["ts"])
        return new

    # ---- archive -----------------------------------------------------------------------------
    def flush(self) -> int:
        """Archive the buffered entries to the lake, then acknowledge and trim them."""
        if not self.buffer:
            return 0
        entries, self.buffer, self.buffer_since = self.buffer, [], None
        by_day: dict[dt.date, list[dict]] = defaultdict(list)
        for entry in entries:
            e = entry.event
            day = dt.datetime.fromtimestamp(int(e["ts"]) / 1000, dt.UTC).date()
            by_day[day].append({**e, **_pseudonymised(e), "_bus_id": entry.id})
        files: list[Path] = []
        unarchivable: set[str] = set()
        for day, rows in sorted(by_day.items()):
            table, bad = self._table(rows)
            unarchivable.update(bad)
            if table is None:
                continue
            final = partition_dir(self.lake / "events", day) / f"stream-{uuid.uuid4().hex}.parquet"
            stage_file(table, final)
            files.append(final)
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

    @staticmethod
    def _table(rows: list[dict]) -> tuple[Any, list[str]]:
        """(Arrow table of the rows that convert, bus ids of the rows that do not)."""
        try:
            return events_table(rows), []
        except (pa.ArrowException, ValueError, TypeError, OverflowError):
            good, bad = [], []
            for row in rows:
                try:
                    events_table([row])
                    good.append(row)
                except (pa.ArrowException, ValueError, TypeError, OverflowError):
                    bad.append(row["_bus_id"])
            return (events_table(good) if good else None), bad

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
        self._maybe_flush()
        return len(got)

    def run(self, stop: threading.Event | None = None, max_idle_s: float | None = None) -> dict[str, int]:
        stop = stop or threading.Event()
        self.start()
        idle_since = time.monotonic()
        try:
            while not stop.is_set():
                self.beat()
                if self.step():
                    idle_since = time.monotonic()
                elif max_idle_s is not None and time.monotonic() - idle_since >= max_idle_s and not self.buffer:
                    break
            self.flush()
        finally:
            try:
                ops.remove_beat(self.r, self.consumer)
            except redis.RedisError:
                pass
        return {"applied": self.applied, "duplicates": self.duplicates, "archived": self.archived,
                "dead_lettered": self.dead_lettered}


class DeadLetters:
    """The dead-letter stream: list, replay (re-send to the event bus, for events fixed by a later
    release or refused by a transient cause) and drop. An entry replayed that is still poison comes back."""

    def __init__(self, client: redis.Redis, settings: Settings | None = None):
        self.r = client
        self.s = settings or get_settings()

    def list(self, count: int = 100) -> list[dict[str, Any]]:
        out = []
        for eid, f in self.r.xrange(DEAD_LETTER, count=count):
            out.append({"id": eid.decode(), "source_id": f.get(b"source_id", b"").decode(),
                        "reason": f.get(b"reason", b"").decode(errors="replace"),
                        "at_ms": int(f.get(b"at_ms", b"0") or 0), "bytes": len(f.get(b"e", b""))})
        return out

    def _select(self, ids: list[str] | None) -> list[tuple[str, dict]]:
        if ids:
            got = []
            for i in ids:
                got += [(eid.decode(), f) for eid, f in self.r.xrange(DEAD_LETTER, min=i, max=i)]
            return got
        return [(eid.decode(), f) for eid, f in self.r.xrange(DEAD_LETTER)]

    def replay(self, ids: list[str] | None = None) -> int:
        """Re-send the payloads (all, or ``ids``) to the event bus as they are and remove them here; number
        re-sent."""
        picked = self._select(ids)
        bus = make_bus(self.r, self.s)
        try:
            for eid, f in picked:  # re-sent first, then removed: a crash between re-sends it twice (deduped)
                bus.resend([f.get(b"e", b"")])
                self.r.xdel(DEAD_LETTER, eid)
        finally:
            bus.close()
        return len(picked)

    def drop(self, ids: list[str] | None = None) -> int:
        picked = [eid for eid, _ in self._select(ids)]
        return int(self.r.xdel(DEAD_LETTER, *picked)) if picked else 0


def run_stream(consumer: str | None = None, lake: Path | None = None, max_idle_s: float | None = None,
               on_start: Any = None) -> dict[str, int]:
    """Run a stream processor until SIGTERM/SIGINT (or ``max_idle_s`` without events)."""
    s = get_settings()
    client = redis.Redis.from_url(s.redis_url, socket_timeout=10.0, socket_connect_timeout=5.0)
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
    ap.add_argument("--lake", type=Path, help="Parquet lake (default $JAIKOD_HOME/lake)")
    ap.add_argument("--max-idle-s", type=float, default=None, help="exit after this long without events")
    a = ap.parse_args(argv)
    logging.basicConfig(level=os.environ.get("JAIKOD_LOG_LEVEL", "INFO"), format="%(message)s")
    out = run_stream(a.consumer, a.lake, a.max_idle_s,
                     on_start=lambda p: log.info(orjson.dumps({"event": "stream_started",
                                                               "consumer": p.consumer}).decode()))
    log.info(orjson.dumps({"event": "stream_stopped", **out}).decode())


if __name__ == "__main__":
    main()
