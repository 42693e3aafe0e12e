"""The feature store: one layout, two stores (offline Parquet, online Redis), written by batch and
read by online. This module *is* the contract between them.

Online layout (Redis, all keys under ``jk:``; ``<v>`` a snapshot version, ``{...}`` a hash tag):

======================================  ========================================================
``jk:snapshot:current``                 version id of the live daily snapshot (the one pointer)
``jk:snapshot:versions``                list of versions, newest first (old ones are deleted)
``jk:s:<v>:u:<user_id>``                float32 row of USER_DAILY (packed, little-endian)
``jk:s:<v>:p:<product_id>``             float32 row of PRODUCT_DAILY
``jk:s:<v>:pm:ids`` / ``:pm:rows``       the whole product table (int64 ids, float32 rows): the
                                        in-memory/on-device mirror the service loads per version
``jk:s:<v>:pm:seller`` / ``:pm:region``  int64 seller ids, int32 region codes (aligned with ids)
``jk:s:<v>:ctx``                        float32 row of CONTEXT_DAILY
``jk:s:<v>:holidays``                   set of YYYY-MM-DD holiday dates
``jk:s:<v>:popular:<region>``           int64 product ids, most popular first, per region
``jk:s:<v>:meta``                       hash: created_at, as_of, n_users, n_products
``jk:trending``                         int64 product ids, "Trending Globally" (survives versions)
``jk:rt:p:{<product_id>}``              BITFIELD, big-endian i32: product real-time ring buffers
``jk:rt:u:{<user_id>}``                 BITFIELD, big-endian i32: user real-time ring buffer
``jk:rt:u:{<user_id>}:q``               current search query (string, TTL 30 min)
``jk:rt:seen:p:{<product_id>}:<h>``     the product half of an event applied (TTL 7 days; ``h`` = keyed
                                        hash of the event id)
``jk:rt:seen:u:{<user_id>}:<h>``        the user half of an event applied (clicks, queries; TTL 7 days)
``jk:seller:<seller_id>``               hash: the seller's trust inputs (:class:`SellerRecord`)
``jk:{overrides}:version``              counter bumped on every override change (services re-read)
``jk:{overrides}:boost``                set: force-boosted product ids
``jk:{overrides}:banned_categories``    set: banned category codes
``jk:{overrides}:banned_sellers``       set: banned seller ids
``jk:{overrides}:sponsored``            set: the sponsored inventory (product ids)
``jk:{live}:listings`` / ``:version``   intake listings gone live, and their version
======================================  ========================================================

Hash tags (Redis Cluster; harmless on one server): a Lua script or a MULTI touches one slot only, so the
keys written together share a tag -- a product's ring and the markers of the events applied to it, a
user's ring, query and markers, the override sets and their version. Reads of one request (the user round
trip, the candidates' rings) go out as one pipeline / MGET that a cluster client splits into one round
trip per node (:mod:`gpu_core.redis_client`).

Real-time windows are bucketed ring buffers (see :mod:`kernels.windows`): the same definition is
used by the offline ETL, so a point-in-time training row equals what the service reads. This module
holds the layout and the raw reads (int32 slots); turning ring slots into feature values is
:mod:`engines.realtime` (window sums are kernels, and ``gpu_core`` imports no kernel).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis

from gpu_core.errors import FeatureStoreError
from gpu_core.pii import pseudonym
from gpu_core.redis_client import load_scripts, run_script
from gpu_core.schema import (
    CONTEXT_DAILY,
    PRODUCT_DAILY,
    USER_DAILY,
    FeatureView,
)


@dataclass(frozen=True)
class Window:
    width_s: int
    n_buckets: int

    def bucket(self, ts_s: float) -> int:
        return int(ts_s // self.width_s)


PRODUCT_WINDOW = Window(300, 12)  # views/impressions last hour: 12 x 5 min
USER_WINDOW = Window(60, 5)  # session clicks last 5 min: 5 x 1 min
LAST_VIEWED_TTL_S = 1800

# Product real-time BITFIELD layout (i32 slots)
P_BIDS = 0  # 12 bucket ids
P_IMPR = PRODUCT_WINDOW.n_buckets  # 12 impression counts
P_CLICK = 2 * PRODUCT_WINDOW.n_buckets  # 12 click counts
P_SOLD = 3 * PRODUCT_WINDOW.n_buckets  # 1 = sold out
P_BOOST = P_SOLD + 1  # 1 = boosted now
P_SLOTS = P_BOOST + 1
# User real-time BITFIELD layout
U_BIDS = 0
U_CLICK = USER_WINDOW.n_buckets
U_LAST_CAT = 2 * USER_WINDOW.n_buckets  # category code + 1 (0 = none)
U_LAST_MIN = U_LAST_CAT + 1  # minute bucket of the last view
U_SLOTS = U_LAST_MIN + 1

POINTER = "jk:snapshot:current"
VERSIONS = "jk:snapshot:versions"
TRENDING = "jk:trending"
SEEN_TTL_S = 7 * 24 * 3600
QUERY_TTL_S = 1800


class LiveListingKeys:
    """Intake listings accepted as ``live`` since they were taken in (``POST /v1/listings``, the review
    backlog, a moderator's approval): the set of their ids and a version every service reads in its user
    round trip, so each API worker adds them to its product mirror and indexes from the next request
    (``online.state.ServiceState.sync_live``). The nightly snapshot does not hold them (they are not in the
    lake's products table); each worker adds them again over every new snapshot."""

    IDS = "jk:{live}:listings"  # one hash tag: marked live in one MULTI
    VERSION = "jk:{live}:version"


def mark_live(r: Any, listing_id: int) -> None:
    """Announce an intake listing that became ``live`` (one transaction: the id, then the version)."""
    pipe = r.pipeline(transaction=True)
    pipe.sadd(LiveListingKeys.IDS, int(listing_id))
    pipe.incr(LiveListingKeys.VERSION)
    pipe.execute()


class OverrideKeys:
    """Admin overrides (written by the admin API and by materialisation, read by every service)."""

    # one hash tag: a change and its version bump are one MULTI
    VERSION = "jk:{overrides}:version"
    BOOST = "jk:{overrides}:boost"
    BANNED_CATEGORIES = "jk:{overrides}:banned_categories"
    BANNED_SELLERS = "jk:{overrides}:banned_sellers"
    SPONSORED = "jk:{overrides}:sponsored"
    SETS = (BOOST, BANNED_CATEGORIES, BANNED_SELLERS, SPONSORED)


def seller_key(seller_id: int) -> str:
    return f"jk:seller:{int(seller_id)}"


def rt_product_key(product_id: int) -> str:
    return f"jk:rt:p:{{{int(product_id)}}}"


def rt_user_key(user_id: int) -> str:
    return f"jk:rt:u:{{{int(user_id)}}}"


def user_query_key(user_id: int) -> str:
    return f"jk:rt:u:{{{int(user_id)}}}:q"


def applied_key(event_id: str, product_id: int) -> str:
    """The idempotency marker of an event's product half: the id's keyed hash (:mod:`gpu_core.pii`), never
    the id, in the product's slot (the script that checks it writes the product's ring)."""
    return f"jk:rt:seen:p:{{{int(product_id)}}}:{pseudonym(event_id)}"


def user_applied_key(event_id: str, user_id: int) -> str:
    """The idempotency marker of an event's user half, in the user's slot."""
    return f"jk:rt:seen:u:{{{int(user_id)}}}:{pseudonym(event_id)}"


def applied_keys(event: Mapping[str, Any]) -> list[str]:
    """Both halves' markers of an event (removed when Redis refused to apply it, so a replay applies it)."""
    return [applied_key(event["event_id"], int(event["product_id"])),
            user_applied_key(event["event_id"], int(event["user_id"]))]


@dataclass(frozen=True)
class SellerRecord:
    """``jk:seller:{id}``: the inputs of the seller trust score, written by materialisation."""

    seller_id: int
    verified_id: bool
    reports: int
    joined_ms: int
    banned: bool

    def to_hash(self) -> dict[str, int]:
        return {"verified_id": int(self.verified_id), "reports": int(self.reports),
                "joined_ms": int(self.joined_ms), "banned": int(self.banned)}

    @classmethod
    def from_hash(cls, seller_id: int, raw: Mapping[bytes | str, bytes | str]) -> SellerRecord | None:
        """The record, or None when the seller has none (an empty hash)."""
        if not raw:
            return None
        d = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
             for k, v in raw.items()}
        return cls(int(seller_id), d.get("verified_id") == "1", int(d.get("reports", 0)),
                   int(d.get("joined_ms", 0)), d.get("banned") == "1")

    def age_days(self, now_ms: int) -> float:
        return max(0.0, (now_ms - self.joined_ms) / 86_400_000)


def read_seller(r: redis.Redis, seller_id: int) -> SellerRecord | None:
    return SellerRecord.from_hash(seller_id, r.hgetall(seller_key(seller_id))) if seller_id >= 0 else None


def write_sellers(pipe: Any, records: Iterable[SellerRecord]) -> None:
    for rec in records:
        pipe.hset(seller_key(rec.seller_id), mapping=rec.to_hash())


def snap_key(version: str, *parts: object) -> str:
    return ":".join(["jk:s", version, *map(str, parts)])


def pack_rows(rows: np.ndarray) -> list[bytes]:
    rows = np.ascontiguousarray(rows, dtype="<f4")
    return [r.tobytes() for r in rows]


def unpack_rows(blobs: Sequence[bytes | None], view: FeatureView) -> tuple[np.ndarray, np.ndarray]:
    """MGET result -> (float32 [n, width], found mask). Missing rows take the view's defaults."""
    n, w = len(blobs), view.width
    found = np.fromiter((b is not None for b in blobs), dtype=bool, count=n)
    out = np.empty((n, w), dtype=np.float32)
    out[:] = default_row(view)
    if found.any():
        buf = b"".join(b for b in blobs if b is not None)
        out[found] = np.frombuffer(buf, dtype="<f4").reshape(-1, w)
    return out, found


def default_row(view: FeatureView) -> np.ndarray:
    return view.pack({}, 1)[0]


# ----------------------------------------------------------------------------------------------
# Real-time update: two Lua scripts, each atomic and idempotent per event id -- the product half (its
# window counts and flags) and the user half (session clicks, last category, query), each with its own
# marker in its own slot, so both run on a Redis Cluster (a script touches one slot) and a crash between
# them re-applies only the half that is missing. Their slot numbers are the layout constants above
# (BITFIELD ``#k`` addresses the k-th i32), so the scripts cannot drift from the decoders.
_RING = """
local function ring(key, B, bucket, count_base)
  local slot = bucket % B
  local cur = redis.call('BITFIELD', key, 'GET', 'i32', '#' .. slot)[1]
  if cur > bucket then return end  -- older than the window the slot now holds: outside it
  if cur < bucket then
    redis.call('BITFIELD', key, 'SET', 'i32', '#' .. slot, bucket,
      'SET', 'i32', '#' .. (B + slot), 0, 'SET', 'i32', '#' .. (2 * B + slot), 0)
  end
  redis.call('BITFIELD', key, 'INCRBY', 'i32', '#' .. (count_base + slot), 1)
end
"""
_APPLY_PRODUCT_TEMPLATE = """
-- KEYS: seen (product half), product rt
-- ARGV: event_type, product bucket, seen_ttl, sold, boosted
--       (sold / boosted: '0', '1' or '' for "the event does not say"; set once per event id like the rest)
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[3])) == false then return 0 end
local etype = ARGV[1]
""" + _RING + """
local pb = tonumber(ARGV[2])
if etype == 'impression' then
  ring(KEYS[2], {PB}, pb, {P_IMPR})
elseif etype == 'click' then
  ring(KEYS[2], {PB}, pb, {P_CLICK})
elseif etype == 'order' then
  redis.call('BITFIELD', KEYS[2], 'SET', 'i32', '#{P_SOLD}', 1)
end
if ARGV[4] ~= nil and ARGV[4] ~= '' then redis.call('BITFIELD', KEYS[2], 'SET', 'i32', '#{P_SOLD}', tonumber(ARGV[4])) end
if ARGV[5] ~= nil and ARGV[5] ~= '' then redis.call('BITFIELD', KEYS[2], 'SET', 'i32', '#{P_BOOST}', tonumber(ARGV[5])) end
return 1
"""
_APPLY_USER_TEMPLATE = """
-- KEYS: seen (user half), user rt, user query
-- ARGV: event_type, user minute bucket, category+1, query, seen_ttl
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[5])) == false then return 0 end
""" + _RING + """
local um = tonumber(ARGV[2])
if ARGV[1] == 'click' then
  ring(KEYS[2], {UB}, um, {U_CLICK})
  local last = redis.call('BITFIELD', KEYS[2], 'GET', 'i32', '#{U_LAST_MIN}')[1]
  if um >= last then
    redis.call('BITFIELD', KEYS[2], 'SET', 'i32', '#{U_LAST_CAT}', tonumber(ARGV[3]), 'SET', 'i32', '#{U_LAST_MIN}', um)
  end
end
if ARGV[4] ~= '' then redis.call('SET', KEYS[3], ARGV[4], 'EX', {QUERY_TTL_S}) end
return 1
"""


def _fill(template: str) -> str:
    assert P_BIDS == 0 and U_BIDS == 0 and P_CLICK == 2 * PRODUCT_WINDOW.n_buckets, "ring layout changed"
    return (template.replace("{PB}", str(PRODUCT_WINDOW.n_buckets))
            .replace("{UB}", str(USER_WINDOW.n_buckets)).replace("{P_IMPR}", str(P_IMPR))
            .replace("{P_CLICK}", str(P_CLICK)).replace("{U_CLICK}", str(U_CLICK))
            .replace("{U_LAST_MIN}", str(U_LAST_MIN)).replace("{U_LAST_CAT}", str(U_LAST_CAT))
            .replace("{P_SOLD}", str(P_SOLD)).replace("{P_BOOST}", str(P_BOOST))
            .replace("{QUERY_TTL_S}", str(QUERY_TTL_S)))


def apply_product_script() -> str:
    """The Lua source of an event's product half, generated from the slot layout."""
    return _fill(_APPLY_PRODUCT_TEMPLATE)


def apply_user_script() -> str:
    """The Lua source of an event's user half (clicks and queries only), generated from the slot layout."""
    return _fill(_APPLY_USER_TEMPLATE)


def touches_user(event_type: str, query: str) -> bool:
    """Does an event change the user's real-time state (its user half runs)?"""
    return event_type == "click" or bool(query)


def flag_ops(*, sold: bool | None = None, boosted: bool | None = None) -> list[Any]:
    """BITFIELD arguments that set a listing's sold / boosted flags."""
    ops: list[Any] = []
    if sold is not None:
        ops += ["SET", "i32", f"#{P_SOLD}", int(sold)]
    if boosted is not None:
        ops += ["SET", "i32", f"#{P_BOOST}", int(boosted)]
    return ops


class OnlineStore:
    """Online feature store on Redis: versioned daily snapshots + real-time ring buffers."""

    def __init__(self, client: redis.Redis):
        self.r = client
        self._apply_product = client.register_script(apply_product_script())
        self._apply_user = client.register_script(apply_user_script())
        self.scripts = (self._apply_product, self._apply_user)
        load_scripts(client, self.scripts)  # a cluster's pipelines cannot load them

    # ---- snapshots ---------------------------------------------------------------------------
    def current_version(self) -> str | None:
        v = self.r.get(POINTER)
        return v.decode() if v is not None else None

    def write_snapshot(
        self,
        version: str,
        *,
        user_ids: np.ndarray,
        user_rows: np.ndarray,
        product_ids: np.ndarray,
        product_rows: np.ndarray,
        product_seller: np.ndarray,
        product_region: np.ndarray,
        context_row: np.ndarray,
        holidays: Iterable[str] = (),
        popular_by_region: Mapping[int, np.ndarray] | None = None,
        trending: np.ndarray | None = None,
        meta: Mapping[str, Any] | None = None,
        keep: int = 2,
        chunk: int = 20_000,
    ) -> None:
        """Write a whole version, then flip the pointer (readers never see a mix); drop old ones."""
        r = self.r
        for ids, rows, kind in ((user_ids, user_rows, "u"), (product_ids, product_rows, "p")):
            blobs = pack_rows(rows)
            for i in range(0, len(blobs), chunk):  # a cluster client splits each MSET by slot
                r.mset({snap_key(version, kind, int(k)): b for k, b in
                        zip(ids[i:i + chunk], blobs[i:i + chunk], strict=True)})
        pipe = r.pipeline(transaction=False)
        pipe.set(snap_key(version, "pm", "ids"), np.asarray(product_ids, dtype="<i8").tobytes())
        pipe.set(snap_key(version, "pm", "rows"), np.ascontiguousarray(product_rows, dtype="<f4").tobytes())
        pipe.set(snap_key(version, "pm", "seller"), np.asarray(product_seller, dtype="<i8").tobytes())
        pipe.set(snap_key(version, "pm", "region"), np.asarray(product_region, dtype="<i4").tobytes())
        pipe.set(snap_key(version, "ctx"), np.asarray(context_row, dtype="<f4").tobytes())
        hol = list(holidays)
        if hol:
            pipe.sadd(snap_key(version, "holidays"), *hol)
        for region, ids in (popular_by_region or {}).items():
            pipe.set(snap_key(version, "popular", int(region)), np.asarray(ids, dtype="<i8").tobytes())
        info = {"created_at": int(time.time() * 1000), "n_users": len(user_ids), "n_products": len(product_ids)}
        info.update(meta or {})
        pipe.hset(snap_key(version, "meta"), mapping={k: str(v) for k, v in info.items()})
        pipe.execute()
        if trending is not None:
            self.set_trending(trending)
        # the switch: one pointer write
        r.set(POINTER, version)
        r.lpush(VERSIONS, version)
        for old in r.lrange(VERSIONS, keep, -1):
            self.delete_version(old.decode())
        r.ltrim(VERSIONS, 0, keep - 1)

    def delete_version(self, version: str) -> int:
        n = 0
        for batch in _chunks(self.r.scan_iter(match=snap_key(version, "*"), count=10_000), 10_000):
            n += self.r.unlink(*batch)
        return n

    def set_trending(self, ids: np.ndarray) -> None:
        self.r.set(TRENDING, np.asarray(ids, dtype="<i8").tobytes())

    def trending(self) -> np.ndarray:
        b = self.r.get(TRENDING)
        return np.frombuffer(b, dtype="<i8").copy() if b else np.empty(0, dtype=np.int64)

    def popular(self, version: str, region: int) -> np.ndarray:
        b = self.r.get(snap_key(version, "popular", int(region)))
        return np.frombuffer(b, dtype="<i8").copy() if b else np.empty(0, dtype=np.int64)

    def read_rows(self, version: str, kind: str, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(rows, found) of the daily view ``kind`` ('u' or 'p') for ``ids``, one MGET."""
        view = USER_DAILY if kind == "u" else PRODUCT_DAILY
        blobs = self.r.mget([snap_key(version, kind, int(i)) for i in ids]) if len(ids) else []
        return unpack_rows(blobs, view)

    def load_product_mirror(self, version: str) -> dict[str, np.ndarray]:
        """The whole product snapshot of ``version`` (ids, rows, seller, region)."""
        keys = [snap_key(version, "pm", k) for k in ("ids", "rows", "seller", "region")]
        ids, rows, seller, region = self.r.mget(keys)
        if ids is None or rows is None:
            raise FeatureStoreError(f"snapshot {version!r} has no product table (key {keys[0]})")
        ids_a = np.frombuffer(ids, dtype="<i8").copy()
        return {
            "ids": ids_a,
            "rows": np.frombuffer(rows, dtype="<f4").reshape(len(ids_a), PRODUCT_DAILY.width).copy(),
            "seller": np.frombuffer(seller, dtype="<i8").copy(),
            "region": np.frombuffer(region, dtype="<i4").copy(),
        }

    def context_row(self, version: str) -> np.ndarray:
        b = self.r.get(snap_key(version, "ctx"))
        return np.frombuffer(b, dtype="<f4").copy() if b else default_row(CONTEXT_DAILY)

    # ---- real-time ---------------------------------------------------------------------------
    def apply_event(self, event_id: str, event_type: str, ts_ms: int, user_id: int, product_id: int,
                    category: int, query: str = "", pipe: Any = None, *, sold: bool | None = None,
                    boosted: bool | None = None) -> Any:
        """Apply one event to the real-time state, once per event id (idempotent): its window counts, the
        user's last category and query, and the listing flags it carries (``sold`` / ``boosted``; a
        redelivered event sets no flag again, so a replay cannot undo a later event's flag). Two scripts (the
        product half first, then the user half when the event touches the user); without ``pipe`` the
        result is the product half's: 1 applied now, 0 applied before."""
        ts = ts_ms / 1000.0
        client = pipe if pipe is not None else self.r
        out = run_script(self._apply_product, [applied_key(event_id, product_id), rt_product_key(product_id)],
                         [event_type, PRODUCT_WINDOW.bucket(ts), SEEN_TTL_S, "" if sold is None else int(bool(sold)),
                          "" if boosted is None else int(bool(boosted))], client)
        if touches_user(event_type, query):
            run_script(self._apply_user,
                       [user_applied_key(event_id, user_id), rt_user_key(user_id), user_query_key(user_id)],
                       [event_type, USER_WINDOW.bucket(ts), int(category) + 1, query or "", SEEN_TTL_S], client)
        return out

    def set_flags(self, product_id: int, *, sold: bool | None = None, boosted: bool | None = None,
                  pipe: Any = None) -> None:
        ops = flag_ops(sold=sold, boosted=boosted)
        if ops:
            (pipe if pipe is not None else self.r).execute_command("BITFIELD", rt_product_key(product_id), *ops)

    def read_product_rt_raw(self, ids: Sequence[int]) -> np.ndarray:
        """The product ring slots of ``ids``, int64 [n, P_SLOTS], one MGET."""
        return decode_bitfields(self.r.mget([rt_product_key(i) for i in ids]) if len(ids) else [], P_SLOTS)

    def read_user_rt_raw(self, user_id: int) -> tuple[np.ndarray, str]:
        """(user ring slots int64 [U_SLOTS], current search query)."""
        blob, q = self.r.mget([rt_user_key(user_id), user_query_key(user_id)])
        return decode_bitfields([blob], U_SLOTS)[0], q.decode() if q else ""

    # ---- the serving round trip ---------------------------------------------------------------
    def user_step(self, user_id: int, version: str | None, pipe: Any = None) -> Any:
        """Queue the user round trip on ``pipe``: snapshot pointer, overrides and live-listings versions, the user's daily row
        (when a version is known), real-time slots, current query. :meth:`parse_user_step` reads it."""
        pipe = pipe if pipe is not None else self.r.pipeline(transaction=False)
        pipe.get(POINTER)
        pipe.get(OverrideKeys.VERSION)
        pipe.get(LiveListingKeys.VERSION)
        pipe.get(rt_user_key(user_id))
        pipe.get(user_query_key(user_id))
        if version is not None:
            pipe.get(snap_key(version, "u", user_id))
        return pipe

    @staticmethod
    def parse_user_step(result: Sequence[Any]) -> dict[str, Any]:
        pointer, ov_version, live_version, rt_blob, query = result[:5]
        return {"pointer": pointer.decode() if pointer else None, "overrides_version": int(ov_version or 0),
                "live_version": int(live_version or 0),
                "user_rt": decode_bitfields([rt_blob], U_SLOTS)[0], "query": query.decode() if query else "",
                "user_row": result[5] if len(result) > 5 else None}


def decode_bitfields(blobs: Sequence[bytes | None], slots: int) -> np.ndarray:
    """Raw BITFIELD strings (big-endian i32, possibly short or missing) -> int64 [n, slots]."""
    size = 4 * slots
    if not len(blobs):
        return np.zeros((0, slots), dtype=np.int64)
    zero = b"\0" * size
    buf = b"".join(zero if not b else (b if len(b) == size else b[:size].ljust(size, b"\0")) for b in blobs)
    return np.frombuffer(buf, dtype=">i4").reshape(len(blobs), slots).astype(np.int64)


def _chunks(it: Iterable[Any], n: int):
    buf = []
    for x in it:
        buf.append(x)
        if len(buf) >= n:
            yield buf
            buf = []
    if buf:
        yield buf
