"""The lake archive of the Flink job: exactly once per event id, without a bus to acknowledge.

Our processor acknowledges a bus entry only once it is archived; the Flink job's progress is instead its
Kafka offsets, committed by Flink's checkpoints, which a Python function cannot hold back until a Parquet
file is written. So the job's workers, after a batch is applied (:class:`online.apply.EventApplier`),
append its payloads to an outbox in Redis (``jk:stream:outbox``, :func:`to_outbox`), and one archiver
(:class:`OutboxArchiver`, run by the job's driver) writes the outbox to the lake in micro-batches with the
same files as ours (:func:`online.apply.stage_archive`). Crash safety:

* a worker's batch counts as done for Flink (so a checkpoint can complete past it) only after its apply
  and its outbox append; a worker that dies before that is replayed from the last checkpoint, which
  re-applies nothing (the apply markers) and appends again;
* the archiver skips events whose archive marker (``jk:stream:archived:{h(id)}``) exists, so an event
  appended twice (a replay) is written once; it lists the files in ``jk:stream:outbox:manifest`` before
  the renames, then in one ``MULTI`` sets the markers, trims the outbox and drops the manifest entry;
* a restarted archiver first resolves the manifest: renamed files get their markers (the outbox entries
  are then skipped and trimmed), files never renamed are deleted (their entries are archived again).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import orjson
import redis

from gpu_core.lake import commit_file, staged_path
from gpu_core.settings import Settings, get_settings
from gpu_core.streams import ARCHIVED_TTL_S, OUTBOX, OUTBOX_MANIFEST, STREAM_STATS, archived_key, encode_event
from online.apply import EventApplier, stage_archive
from online.bus import BusEntry, entry_of

log = logging.getLogger("jaikod.stream")


def to_outbox(pipe: redis.client.Pipeline, entries: Sequence[BusEntry]) -> None:
    """Queue the entries' screened events on the outbox (``RPUSH``): the event as
    :meth:`online.apply.EventApplier.split` left it (typed query text already in its stored form), never
    the raw payload, so the lake the archiver writes holds what our processor's lake holds."""
    if entries:
        pipe.rpush(OUTBOX, *[encode_event(e.event) for e in entries])


class OutboxArchiver:
    """Drain ``jk:stream:outbox`` into the lake (see the module doc); one per deployment."""

    def __init__(self, client: redis.Redis, lake: Path | str, settings: Settings | None = None):
        self.s = settings or get_settings()
        self.r = client
        self.lake = Path(lake)
        self.applier = EventApplier(client, self.s)  # its dead-letter writer, for rows Parquet refuses
        self.archived = 0
        self.files = 0
        self._first_seen: float | None = None

    def recover(self) -> int:
        """Resolve manifest entries a crashed archiver left; events marked archived."""
        n = 0
        for key, raw in self.r.hgetall(OUTBOX_MANIFEST).items():
            m = orjson.loads(raw)
            if any((self.lake / f).exists() for f in m["files"]):
                for f in m["files"]:
                    commit_file(self.lake / f)
                self._mark(m["event_ids"], key, 0, len(m["event_ids"]), len(m["files"]))
                n += len(m["event_ids"])
                self.archived += len(m["event_ids"])
                self.files += len(m["files"])
            else:
                for f in m["files"]:
                    staged_path(self.lake / f).unlink(missing_ok=True)
                self.r.hdel(OUTBOX_MANIFEST, key)
        return n

    def _mark(self, event_ids: Sequence[str], manifest_key: bytes | str | None, trim: int, n: int,
              n_files: int) -> None:
        pipe = self.r.pipeline(transaction=True)
        for eid in event_ids:
            pipe.set(archived_key(eid), "1", ex=ARCHIVED_TTL_S)
        if trim:
            pipe.ltrim(OUTBOX, trim, -1)
        if manifest_key is not None:
            pipe.hdel(OUTBOX_MANIFEST, manifest_key)
        if n:
            pipe.hincrby(STREAM_STATS, "archived", n)
            pipe.hincrby(STREAM_STATS, "files", n_files)
        pipe.execute()

    def due(self) -> bool:
        """An archive is due: the outbox holds ``stream_archive_events`` or has been non-empty for
        ``stream_archive_interval_s``."""
        n = self.r.llen(OUTBOX)
        if not n:
            self._first_seen = None
            return False
        now = time.monotonic()
        if self._first_seen is None:
            self._first_seen = now
        return n >= self.s.stream_archive_events or now - self._first_seen >= self.s.stream_archive_interval_s

    def archive(self, limit: int | None = None) -> int:
        """Archive up to ``limit`` outbox entries (default ``stream_archive_events``); events written."""
        k = limit or self.s.stream_archive_events
        raw = self.r.lrange(OUTBOX, 0, k - 1)
        if not raw:
            return 0
        self._first_seen = None
        entries, ids = [], set()
        for i, payload in enumerate(raw):
            e = entry_of(f"outbox:{i}", payload)
            if e.problem is None and e.event["event_id"] not in ids:  # workers append valid events only
                ids.add(e.event["event_id"])
                entries.append(e)
        pipe = self.r.pipeline(transaction=False)
        for e in entries:
            pipe.exists(archived_key(e.event["event_id"]))
        entries = [e for e, done in zip(entries, pipe.execute(), strict=True) if not done]
        files, bad = stage_archive(self.lake, entries)
        if bad:
            self.applier.dead_letter([(e, "cannot be archived to Parquet") for e in entries if e.id in bad])
        keep = [e.event["event_id"] for e in entries if e.id not in bad]
        key = None
        if files:
            rel = [str(f.relative_to(self.lake)) for f in files]
            key = rel[0]
            self.r.hset(OUTBOX_MANIFEST, key, orjson.dumps({"at": time.time(), "event_ids": keep, "files": rel}))
            for f in files:
                commit_file(f)
        self._mark(keep, key, len(raw), len(keep), len(files))
        self.archived += len(keep)
        self.files += len(files)
        return len(keep)

    def drain(self) -> int:
        """Archive everything in the outbox now; events written."""
        n = 0
        while self.r.llen(OUTBOX):
            n += self.archive()
        return n
