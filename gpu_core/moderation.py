"""Listing moderation contract shared by the online service and the batch jobs (both import it; neither
imports the other).

Redis layout:

======================================  ============================================================
``jk:{moderation}:listing:<id>``        hash: a listing taken in by ``POST /v1/listings`` (title, description,
                                        price_thb, category, seller_id, status, safety/fraud scores, flags)
``jk:listing:seq``                      counter of new listing ids (starts above the world's product ids)
``jk:listing:<id>:image``               raw image bytes of a new listing (for the admin console)
``jk:listings:review``                  stream: listings accepted without text analysis (post-hoc review)
``jk:{moderation}:queue``               stream: listings waiting for a moderator (group ``moderators``)
``jk:{moderation}:done:<entry>``        marker: this queue entry was decided (exactly-once guard)
``jk:{moderation}:labels``              stream: every decision (listing_id, decision, reason, moderator...)
``jk:{moderation}:label:<listing>``     hash: the latest decision of a listing
======================================  ============================================================

``{moderation}`` is a hash tag: the decision script writes the queue, the labels, the marker and the
listing in one slot of a Redis Cluster (so intake listings share one node; their images do not).

Queue semantics: an entry is *open* (never delivered), *claimed* (delivered to a moderator, in the
group's pending list, not acknowledged) or *decided* (acknowledged and deleted, its label written). A
decision is one Lua script: it sets the done marker, acknowledges and deletes the entry, appends the label
and updates the listing, all or nothing; a second decision of the same entry is refused. A service restart
loses nothing: open and claimed entries live in the stream and the pending list; claims idle longer than
``claim_timeout_ms`` can be taken over by another moderator.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import redis

QUEUE = "jk:{moderation}:queue"
GROUP = "moderators"
LABELS = "jk:{moderation}:labels"
REVIEW = "jk:listings:review"
REVIEW_GROUP = "batch-review"
LISTING_SEQ = "jk:listing:seq"
LISTING_ID_BASE = 1_000_000_000  # new listing ids never collide with the world's product ids
DECISIONS = ("approve", "reject")


def listing_key(listing_id: int | str) -> str:
    return f"jk:{{moderation}}:listing:{listing_id}"


def image_key(listing_id: int | str) -> str:
    return f"jk:listing:{listing_id}:image"


def label_key(listing_id: int | str) -> str:
    return f"jk:{{moderation}}:label:{listing_id}"


def done_key(entry_id: str) -> str:
    """The marker of a decided queue entry."""
    return f"jk:{{moderation}}:done:{entry_id}"


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def decode_hash(raw: dict) -> dict[str, str]:
    return {_s(k): _s(v) for k, v in raw.items()}


def new_listing_id(r: redis.Redis) -> int:
    r.set(LISTING_SEQ, LISTING_ID_BASE, nx=True)
    return int(r.incr(LISTING_SEQ))


class DecisionConflict(Exception):
    """The entry was already decided, or is not in the queue."""


@dataclass
class QueueItem:
    entry_id: str
    listing_id: str
    fields: dict[str, str]
    status: str  # open | claimed
    claimed_by: str | None = None
    idle_ms: int | None = None

    def as_dict(self) -> dict:
        flags = self.fields.get("flags")
        try:
            parsed = orjson.loads(flags) if flags else []
        except orjson.JSONDecodeError:
            parsed = [flags]
        if not parsed and self.fields.get("labels"):  # entries written by the vision service
            parsed = [{"kind": "image", "label": x} for x in self.fields["labels"].split(",") if x]
        return {"entry_id": self.entry_id, "listing_id": self.listing_id, "kind": self.fields.get("kind", ""),
                "safety_score": float(self.fields.get("safety_score", "nan")), "flags": parsed,
                "ts_ms": int(self.fields.get("ts_ms", 0) or 0), "status": self.status,
                "claimed_by": self.claimed_by, "idle_ms": self.idle_ms}


_DECIDE = """
-- KEYS: done marker, queue, labels stream, label hash, listing hash
-- ARGV: group, entry id, decision, reason, moderator, listing id, ts_ms, kind, safety
if redis.call('EXISTS', KEYS[1]) == 1 then return {0, 'already decided'} end
local found = redis.call('XRANGE', KEYS[2], ARGV[2], ARGV[2])
if #found == 0 then return {0, 'not in the queue'} end
redis.call('SET', KEYS[1], ARGV[3])
redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[2], ARGV[2])
local lid = redis.call('XADD', KEYS[3], '*', 'entry_id', ARGV[2], 'listing_id', ARGV[6], 'decision', ARGV[3],
  'reason', ARGV[4], 'moderator', ARGV[5], 'ts_ms', ARGV[7], 'kind', ARGV[8], 'safety_score', ARGV[9])
redis.call('HSET', KEYS[4], 'decision', ARGV[3], 'reason', ARGV[4], 'moderator', ARGV[5], 'ts_ms', ARGV[7],
  'label_id', lid, 'entry_id', ARGV[2])
if redis.call('EXISTS', KEYS[5]) == 1 then
  local st = 'live'
  if ARGV[3] == 'reject' then st = 'rejected' end
  redis.call('HSET', KEYS[5], 'status', st, 'moderation', ARGV[3])
end
return {1, lid}
"""


class ModerationQueue:
    """The durable moderation queue (Redis Streams + consumer group) and its decisions."""

    def __init__(self, r: redis.Redis, claim_timeout_ms: int = 15 * 60 * 1000):
        self.r = r
        self.claim_timeout_ms = claim_timeout_ms
        self._decide = r.register_script(_DECIDE)
        self.ensure_group()

    def ensure_group(self) -> None:
        try:
            self.r.xgroup_create(QUEUE, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    # ---- producers ---------------------------------------------------------------------------
    def enqueue(self, listing_id: int | str, kind: str, safety_score: float, flags: list[dict] | None = None) -> str:
        return _s(self.r.xadd(QUEUE, {"listing_id": str(listing_id), "kind": kind,
                                      "safety_score": f"{safety_score:.4f}",
                                      "flags": orjson.dumps(flags or []).decode(),
                                      "ts_ms": str(int(time.time() * 1000))}))

    # ---- readers -----------------------------------------------------------------------------
    def _pending(self) -> dict[str, tuple[str, int]]:
        try:
            rows = self.r.xpending_range(QUEUE, GROUP, min="-", max="+", count=10_000)
        except redis.ResponseError:
            self.ensure_group()
            return {}
        return {_s(p["message_id"]): (_s(p["consumer"]), int(p["time_since_delivered"])) for p in rows}

    def items(self, limit: int = 200) -> list[QueueItem]:
        """Open and claimed entries, oldest first."""
        pending = self._pending()
        out = []
        for eid, fields in self.r.xrange(QUEUE, "-", "+", count=limit):
            eid = _s(eid)
            f = decode_hash(fields)
            who = pending.get(eid)
            out.append(QueueItem(eid, f.get("listing_id", ""), f, "claimed" if who else "open",
                                 who[0] if who else None, who[1] if who else None))
        return out

    def depth(self) -> int:
        return int(self.r.xlen(QUEUE))

    def claim(self, moderator: str, count: int = 1) -> list[QueueItem]:
        """Entries for ``moderator``: its own still-claimed ones, then ones abandoned by others
        (idle > claim_timeout_ms), then new ones."""
        pending = self._pending()
        mine = [eid for eid, (who, _) in pending.items() if who == moderator]
        got: list[str] = mine[:count]
        if len(got) < count:
            res = self.r.xautoclaim(QUEUE, GROUP, moderator, self.claim_timeout_ms, "0-0", count=count - len(got))
            got += [_s(e[0]) for e in res[1] if e and e[1] is not None]
        if len(got) < count:
            res = self.r.xreadgroup(GROUP, moderator, {QUEUE: ">"}, count=count - len(got))
            for _stream, entries in res or []:
                got += [_s(e[0]) for e in entries]
        by_id = {i.entry_id: i for i in self.items(limit=10_000)}
        return [by_id[e] for e in got if e in by_id]

    def decide(self, entry_id: str, decision: str, moderator: str, reason: str = "") -> dict:
        """Approve or reject one entry, exactly once. Raises :class:`DecisionConflict` otherwise."""
        if decision not in DECISIONS:
            raise ValueError(f"decision must be one of {DECISIONS}")
        found = self.r.xrange(QUEUE, entry_id, entry_id)
        if not found:
            done = self.r.get(done_key(entry_id))
            raise DecisionConflict("already decided" if done else "not in the queue")
        f = decode_hash(found[0][1])
        listing_id = f.get("listing_id", "")
        ts = int(time.time() * 1000)
        ok, info = self._decide(
            keys=[done_key(entry_id), QUEUE, LABELS, label_key(listing_id), listing_key(listing_id)],
            args=[GROUP, entry_id, decision, reason, moderator, listing_id, ts, f.get("kind", ""),
                  f.get("safety_score", "")])
        if not int(ok):
            raise DecisionConflict(_s(info))
        if decision == "approve" and listing_id and self.r.exists(listing_key(listing_id)):
            from gpu_core.feature_store import mark_live

            mark_live(self.r, int(listing_id))  # retrievable from the next request
        return {"label_id": _s(info), "entry_id": entry_id, "listing_id": listing_id, "decision": decision,
                "reason": reason, "moderator": moderator, "ts_ms": ts, "kind": f.get("kind", ""),
                "safety_score": f.get("safety_score", "")}

    def labels(self, count: int = 100) -> list[dict]:
        return [{"label_id": _s(i), **decode_hash(f)} for i, f in self.r.xrevrange(LABELS, "+", "-", count=count)]


# ---- labels in the lake ---------------------------------------------------------------------------------
LABEL_COLUMNS = ("label_id", "entry_id", "listing_id", "decision", "reason", "moderator", "ts_ms", "kind",
                 "safety_score")


def labels_dir(lake: Path) -> Path:
    return Path(lake) / "labels" / "moderation"


def write_label_parquet(lake: Path, labels: list[dict]) -> list[Path]:
    """Append decisions to the Parquet labels table ``<lake>/labels/moderation/date=YYYY-MM-DD/``, one
    file per label named by its label id (idempotent: an existing file is left alone). Atomic per file."""
    import datetime as dt

    import pandas as pd

    out = []
    for lab in labels:
        ts = int(lab.get("ts_ms") or 0)
        day = dt.datetime.fromtimestamp(ts / 1000, dt.UTC).date().isoformat()
        folder = labels_dir(lake) / f"date={day}"
        path = folder / f"label-{str(lab['label_id']).replace('-', '_')}.parquet"
        if path.exists():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        row = {c: str(lab.get(c, "")) for c in LABEL_COLUMNS}
        row["ts_ms"] = ts
        row["approved"] = lab.get("decision") == "approve"
        tmp = folder / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
        pd.DataFrame([row]).to_parquet(tmp, index=False)
        tmp.rename(path)
        out.append(path)
    return out


def export_labels(r: redis.Redis, lake: Path, count: int = 100_000) -> int:
    """Write every label of the Redis stream that the lake does not have yet; returns how many."""
    labs = [{"label_id": _s(i), **decode_hash(f)} for i, f in r.xrange(LABELS, "-", "+", count=count)]
    return len(write_label_parquet(lake, labs))


def read_labels(lake: Path):
    """The labels table as a DataFrame (empty when none)."""
    import pandas as pd

    files = sorted(labels_dir(lake).glob("date=*/label-*.parquet"))
    if not files:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in (*LABEL_COLUMNS, "approved")})
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


# ---- post-hoc review backlog --------------------------------------------------------------------------
class ReviewBacklog:
    """Listings accepted without text analysis (service down or slow), reviewed later in batch."""

    def __init__(self, r: redis.Redis):
        self.r = r

    def ensure_group(self) -> None:
        try:
            self.r.xgroup_create(REVIEW, REVIEW_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def add(self, listing_id: int | str, reason: str) -> str:
        self.ensure_group()
        return _s(self.r.xadd(REVIEW, {"listing_id": str(listing_id), "reason": reason,
                                       "ts_ms": str(int(time.time() * 1000))}))

    def depth(self) -> int:
        """Entries not yet reviewed (acknowledged entries are deleted)."""
        return int(self.r.xlen(REVIEW)) if self.r.exists(REVIEW) else 0

    def take(self, consumer: str, count: int = 256, idle_ms: int = 60_000) -> list[tuple[str, dict[str, str]]]:
        """Abandoned entries of crashed reviewers first, then new ones."""
        self.ensure_group()
        got = []
        res = self.r.xautoclaim(REVIEW, REVIEW_GROUP, consumer, idle_ms, "0-0", count=count)
        got += [(_s(e[0]), decode_hash(e[1])) for e in res[1] if e and e[1] is not None]
        if len(got) < count:
            for _stream, entries in self.r.xreadgroup(REVIEW_GROUP, consumer, {REVIEW: ">"}, count=count - len(got)) or []:
                got += [(_s(e[0]), decode_hash(e[1])) for e in entries]
        return got

    def done(self, entry_ids: list[str]) -> None:
        if entry_ids:
            pipe = self.r.pipeline(transaction=True)
            pipe.xack(REVIEW, REVIEW_GROUP, *entry_ids)
            pipe.xdel(REVIEW, *entry_ids)
            pipe.execute()


def text_flags(analysis: dict, offensive_at: float = 0.5) -> list[dict]:
    """Moderation flags of a text analysis (the ``POST /v1/analyze-text`` body): offensive language,
    prohibited items, diversion attempts."""
    flags = []
    if float(analysis.get("offensive", 0.0)) >= offensive_at:
        flags.append({"kind": "text", "label": "offensive", "score": float(analysis["offensive"])})
    for p in analysis.get("prohibited", []):
        flags.append({"kind": "text", "label": f"prohibited:{p['item']}", "score": float(p["score"])})
    for k in sorted({d["kind"] for d in analysis.get("diversion", [])}):
        flags.append({"kind": "text", "label": f"diversion:{k}", "score": 1.0})
    return flags
