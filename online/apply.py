"""Apply a batch of events to the online store and stage it for the lake: the one step both stream
processors run, ours (:mod:`online.stream`, over the event bus) and the Flink job (:mod:`online.flink_job`,
over Kafka), so the two cannot differ in what an event does.

:class:`EventApplier` screens entries (:func:`gpu_core.streams.event_problem`), applies a batch in one Redis
``MULTI`` (on a Redis Cluster: one pipeline, one round trip per node; every script is idempotent on its own) -- the real-time features and the listing flags an event carries (:meth:`OnlineStore.apply_event`: the
batch ETL's window definitions, idempotent per event id) and the per-model-version CTR counters
(idempotent per event id) -- and writes poison to the dead-letter stream. :func:`stage_archive` writes the
batch's Parquet files (one per UTC day, staged: :func:`gpu_core.lake.stage_file`); each processor commits
them with its own bookkeeping (ours: manifest + bus ack; Flink: manifest + per-event archive markers).

    >>> applier = EventApplier(redis.Redis(), settings)
    >>> good = applier.screen(entries)            # poison dead-lettered (the caller acknowledges it)
    >>> done = applier.apply(good)                # Applied(new=..., duplicates=..., refused=[...])
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import redis

from engines.search.stored import ensure_stored
from gpu_core.feature_store import OnlineStore, applied_keys
from gpu_core.lake import events_table, lake_path, partition_dir, stage_file, staged_path
from gpu_core.pii import pseudonym
from gpu_core.redis_client import has_noscript, is_cluster, load_scripts, raise_transient, run_script
from gpu_core.schema import PRODUCT_DAILY
from gpu_core.settings import Settings, get_settings
from gpu_core.streams import (
    DEAD_LETTER,
    DEAD_LETTER_MAXLEN,
    STREAM_STATS,
    VERSION_STATS,
    dead_letter_fields,
    encode_event,
    event_problem,
    version_seen_key,
)
from online.bus import BusEntry

log = logging.getLogger("jaikod.stream")

VERSION_TTL_S = 7 * 24 * 3600

# CTR per model version, once per event id. KEYS: marker, stats hash; ARGV: field, ttl
_COUNT_VERSION = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[2])) == false then return 0 end
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
return 1
"""

PSEUDONYMISED = ("event_id", "session_id")  # client-chosen ids: the lake keeps their keyed hash only


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


@dataclass
class Applied:
    """What one :meth:`EventApplier.apply` did: events applied for the first time, duplicates (seen
    before), and the entries Redis refused (dead-lettered, their idempotency markers removed)."""

    new: int = 0
    duplicates: int = 0
    refused: list[BusEntry] = field(default_factory=list)


class EventApplier:
    """Screen and apply batches of bus entries to the online store (see the module doc)."""

    def __init__(self, client: redis.Redis, settings: Settings | None = None):
        self.s = settings or get_settings()
        self.r = client
        self.store = OnlineStore(client)
        self.categories = ProductCategories(self.store)
        self._count = client.register_script(_COUNT_VERSION)
        self.scripts = (*self.store.scripts, self._count)
        load_scripts(client, self.scripts)

    def dead_letter(self, entries: Sequence[tuple[BusEntry, str]]) -> int:
        """Write poison entries to the dead-letter stream with their reasons (the caller acknowledges them)."""
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
        for entry, reason in entries:
            log.warning(orjson.dumps({"event": "dead_lettered", "id": entry.id, "reason": reason}).decode())
        return len(entries)

    @staticmethod
    def split(entries: Sequence[BusEntry]) -> tuple[list[BusEntry], list[tuple[BusEntry, str]]]:
        """(valid events, [(poison entry, reason)])."""
        good, poison = [], []
        for entry in entries:
            why = entry.problem or event_problem(entry.event)
            if why is None:
                q = entry.event.get("query")
                if q:  # the service stores queries understood; another producer's typed text is not kept
                    entry.event["query"] = ensure_stored(q)
                good.append(entry)
            else:
                poison.append((entry, why))
        return good, poison

    def _queue(self, pipe: Any, entry: BusEntry) -> int:
        """Queue one entry's commands on ``pipe``; the stack index of its apply-event result."""
        e = entry.event
        pid, etype = int(e["product_id"]), e["event_type"]
        at = len(pipe.command_stack)
        self.store.apply_event(e["event_id"], etype, int(e["ts"]), int(e["user_id"]), pid,
                               self.categories.of(pid), e.get("query") or "", pipe=pipe,
                               sold=None if e.get("in_stock") is None else not e["in_stock"],
                               boosted=None if e.get("boosted") is None else bool(e["boosted"]))
        mv = e.get("model_version")
        if mv and etype in ("impression", "click"):
            run_script(self._count, [version_seen_key(etype, e["event_id"], mv), VERSION_STATS.format(mv)],
                       [f"{etype}s", VERSION_TTL_S], pipe)
        return at

    def apply(self, entries: Sequence[BusEntry]) -> Applied:
        """Apply valid entries in one MULTI. An entry whose commands Redis refuses (say, a key of the wrong
        type) is dead-lettered and its idempotency markers removed, so a replay after the cause is fixed
        applies it; the others apply as usual. Counts go to ``jk:stream:stats``."""
        out = Applied()
        if not entries:
            return out
        self.categories.refresh()
        # a cluster has no MULTI across slots: one pipeline (each script is idempotent per event on its own,
        # so a batch cut short by a crash is completed by the redelivery)
        pipe = self.r.pipeline(transaction=not is_cluster(self.r))
        starts = [self._queue(pipe, entry) for entry in entries]
        res = pipe.execute(raise_on_error=False)
        if has_noscript(res):  # a master new since the scripts were loaded (a failover): those calls ran nothing
            load_scripts(self.r, self.scripts, strict=True)
            pipe = self.r.pipeline(transaction=False)
            for entry in entries:
                self._queue(pipe, entry)
            again = pipe.execute(raise_on_error=False)  # the calls that ran before find their markers: no-ops
            res = [b if isinstance(a, redis.exceptions.NoScriptError) else a for a, b in zip(res, again, strict=True)]
        raise_transient(res)  # the cluster was not there (a failover): the batch is retried, no entry blamed
        ends = starts[1:] + [len(res)]
        poison = []
        for entry, a, b in zip(entries, starts, ends, strict=True):
            err = next((x for x in res[a:b] if isinstance(x, Exception)), None)
            if err is not None:
                poison.append((entry, f"redis refused the event: {str(err)[:200]}"))
            elif res[a] == 1:
                out.new += 1
            else:
                out.duplicates += 1
        if poison:
            e = [entry.event for entry, _ in poison]
            self.r.delete(*[k for x in e for k in applied_keys(x)],
                          *[version_seen_key(x["event_type"], x["event_id"], x.get("model_version") or "")
                            for x in e])
            self.dead_letter(poison)
            out.refused = [entry for entry, _ in poison]
        pipe = self.r.pipeline(transaction=False)
        pipe.hincrby(STREAM_STATS, "applied", out.new)
        pipe.hincrby(STREAM_STATS, "duplicates", out.duplicates)
        pipe.execute()
        return out


def _lake_row(entry: BusEntry) -> dict[str, Any]:
    """The event as the lake keeps it: client-chosen ids as keyed hashes (stable, so the lake still
    de-duplicates and joins), plus its bus position (dropped by the schema, used to report failures)."""
    e = entry.event
    return {**e, **{k: pseudonym(e[k]) for k in PSEUDONYMISED if e.get(k)}, "_bus_id": entry.id}


def _table(rows: list[dict]) -> tuple[pa.Table | None, list[str]]:
    """(Arrow table of the rows that convert, bus ids of the rows that do not)."""
    errors = (pa.ArrowException, ValueError, TypeError, OverflowError)
    try:
        return events_table(rows), []
    except errors:
        good, bad = [], []
        for row in rows:
            try:
                events_table([row])
                good.append(row)
            except errors:
                bad.append(row["_bus_id"])
        return (events_table(good) if good else None), bad


def stage_archive(lake: Path, entries: Sequence[BusEntry]) -> tuple[list[Path], set[str]]:
    """Write the entries' events to staged Parquet files of the lake's events table, one per UTC day
    (``events/date=YYYY-MM-DD/stream-<uuid>.parquet``; :func:`gpu_core.lake.commit_file` renames them).
    Returns (the final paths, bus ids of entries that cannot be written to Parquet)."""
    by_day: dict[dt.date, list[dict]] = defaultdict(list)
    for entry in entries:
        day = dt.datetime.fromtimestamp(int(entry.event["ts"]) / 1000, dt.UTC).date()
        by_day[day].append(_lake_row(entry))
    files: list[Path] = []
    bad: set[str] = set()
    try:
        for day, rows in sorted(by_day.items()):
            table, unwritable = _table(rows)
            bad.update(unwritable)
            if table is None:
                continue
            final = partition_dir(lake_path(lake) / "events", day) / f"stream-{uuid.uuid4().hex}.parquet"
            files.append(final)
            stage_file(table, final)
    except BaseException:  # a full disk, an object store that refused the PUT: no staged file left behind
        for final in files:
            with contextlib.suppress(OSError):
                staged_path(final).unlink(missing_ok=True)
        raise
    return files, bad
