"""Contracts of the streaming and MLOps loop, shared by ``online`` (event API, stream processor,
canary, metrics) and ``batch`` (continuous training writes drift): Redis key names and the wire
format of an event on the bus.

======================================  ========================================================
``{settings.event_stream}``             Redis stream of accepted events, one field ``e`` (JSON)
``event_topic(settings.event_stream)``  the same events on Kafka (``event_bus=kafka``): the stream name with
                                        ``.`` for ``:``, message value = the JSON event, key = product id
``jk:ev:seen:{<stream>}:<h>``           event API dedupe marker (TTL settings.event_dedupe_ttl_s), in the
                                        stream's slot (the append script checks and appends in one slot)
``jk:mv:seen:{<version>}:<t>:<h>``      per-version CTR counted once per event (TTL 7 days)
``jk:mv:{<model_version>}``             hash: impressions, clicks (from events), requests, errors,
                                        fallbacks, lat:<bucket> (feed latency histogram, ms buckets)
``jk:canary``                           hash: state of the canary (staging version, last decision)
``jk:canary:log``                       list of JSON decisions, newest first
``jk:canary:lock``                      one worker's canary check at a time (SET NX PX)
``jk:canary:baseline``                  hash: production's ``jk:mv`` counters when the canary first saw
                                        the staging version (fields ``staging``, ``production``, counters)

``h(x)`` is the keyed hash of :func:`gpu_core.pii.pseudonym`: an event id is chosen by the client and may
carry user data (a phone number, a name), so no key name holds it in plaintext.
A poison payload can carry the same (and typed query text, a phone number in a session id): the
dead-letter stream keeps it sealed (:func:`gpu_core.pii.seal`, AES-256-GCM under a key derived from the PII
key, the bus position bound in), so a replay gets the exact bytes back and nothing rests in plaintext.
=======
``jk:{boost}:arms``                     hash: the auto-boost bandit's arms (listing -> Beta state)
``jk:{boost}:active``                   hash: listings boosted this round -> spend
``jk:{boost}:spend:<day>``              counter: THB spent by the autopilot that day
``jk:{drift}:psi``                      hash: feature -> PSI (training window vs last window)
``jk:{drift}:meta``                     hash: computed_at, train_window, last_window
``jk:{stream}:manifest``                hash: archive file -> JSON entry ids (archived, not acked)
``jk:{stream}:stats``                   hash: applied, archived, files, dead_lettered (counters)
``jk:{stream}:dead``                    Redis stream: poison events (fields ``s`` the raw payload
                                        sealed, ``reason``, ``source_id`` bus position, ``at_ms``;
                                        entries written before the seal hold ``e``, the payload as is)
``jk:{stream}:outbox``                  list: payloads the Flink job applied, awaiting the lake archive
``jk:{stream}:outbox:manifest``         hash: archive file -> JSON event ids (renamed, not yet marked)
``jk:{stream}:archived:<h>``            the Flink job's archive marker: the event is in the lake (TTL 7 d)
======================================  ========================================================

``h(x)`` is the keyed hash of :func:`gpu_core.pii.pseudonym`: an event id is chosen by the client and may
carry user data (a phone number, a name), so no key name holds it in plaintext. ``{...}`` is a hash tag
(Redis Cluster): keys written in one MULTI or script share it (:mod:`gpu_core.redis_client`).
A poison payload can carry the same (and typed query text, a phone number in a session id): the
dead-letter stream keeps it sealed (:func:`gpu_core.pii.seal`, AES-256-GCM under a key derived from the PII
key, the bus position bound in), so a replay gets the exact bytes back and nothing rests in plaintext.

An event on the bus is valid when :func:`event_problem` finds nothing: the event API's schema checks
the same rules at the edge, and the stream processor checks them again for whatever reached the bus by
another way (an old writer, a hand-made ``XADD``), so a poison event costs one dead-letter entry and
never stops the processor.
"""

from __future__ import annotations

from typing import Any

import orjson

SEEN_EVENT = "jk:ev:seen:{{{}}}:{}"  # stream, h(event_id)
VERSION_SEEN = "jk:mv:seen:{{{}}}:{}"  # model version, type:h(event_id)
VERSION_STATS = "jk:mv:{{{}}}"  # model version (its hash tag)
CANARY = "jk:canary"
CANARY_LOG = "jk:canary:log"
CANARY_LOCK = "jk:canary:lock"
CANARY_BASELINE = "jk:canary:baseline"
BOOST_ARMS = "jk:{boost}:arms"  # the autopilot's round: one MULTI over these three
BOOST_ACTIVE = "jk:{boost}:active"
BOOST_SPEND = "jk:{{boost}}:spend:{}"
DRIFT_PSI = "jk:{drift}:psi"
DRIFT_META = "jk:{drift}:meta"
MANIFEST = "jk:{stream}:manifest"  # the processors' bookkeeping: MULTIs over these
STREAM_STATS = "jk:{stream}:stats"
DEAD_LETTER = "jk:{stream}:dead"
DEAD_LETTER_MAXLEN = 100_000  # oldest poison entries are dropped beyond this (XADD MAXLEN ~)
OUTBOX = "jk:{stream}:outbox"
OUTBOX_MANIFEST = "jk:{stream}:outbox:manifest"
ARCHIVED = "jk:{{stream}}:archived:{}"
ARCHIVED_TTL_S = 7 * 24 * 3600

# feed latency histogram buckets (ms, upper bounds) kept per model version for the canary's p99
LATENCY_BUCKETS_MS: tuple[float, ...] = (5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000, 2000, 5000)

from gpu_core.ids import is_id  # noqa: E402
from gpu_core.lake import EVENT_FIELDS  # noqa: E402,F401  (the event schema is the lake contract's)
from gpu_core.pii import SEAL_OVERHEAD, pseudonym, seal, unseal  # noqa: E402
from gpu_core.schema import DEVICE_TYPES, EVENT_TYPES  # noqa: E402
from gpu_core.settings import Settings  # noqa: E402

MIN_TS_MS = 946_684_800_000  # 2000-01-01
MAX_POSITION = 10_000  # the lake's position column is int16
_STR_LIMITS = {"event_id": 128, "request_id": 64, "model_version": 128, "session_id": 64, "query": 200}


def event_problem(e: Any) -> str | None:
    """Why ``e`` cannot be applied and archived (None when it can): the wire contract of one event."""
    if not isinstance(e, dict):
        return f"event is a {type(e).__name__}, not an object"
    for k in ("event_id", "event_type", "ts", "user_id", "product_id"):
        if k not in e:
            return f"{k} missing"
    for k, n in _STR_LIMITS.items():
        v = e.get(k)
        if v is None and k != "event_id":
            continue
        if not isinstance(v, str) or len(v) > n or (k == "event_id" and not v):
            return f"{k} is not a string of at most {n} characters"
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            return f"{k} is not valid Unicode"
    if e["event_type"] not in EVENT_TYPES:
        return "event_type unknown"
    ts = e["ts"]
    if type(ts) is not int or ts < MIN_TS_MS or ts > 2**53:
        return "ts is not epoch milliseconds after 2000-01-01"
    for k in ("user_id", "product_id"):
        if not is_id(e[k]):
            return f"{k} is not an int64 id"
    pos = e.get("position")
    if pos is not None and (type(pos) is not int or not 0 <= pos <= MAX_POSITION):
        return f"position is not an integer in [0, {MAX_POSITION}]"
    if e.get("device_type") is not None and e["device_type"] not in DEVICE_TYPES:
        return "device_type unknown"
    for k in ("in_stock", "boosted"):
        if e.get(k) is not None and not isinstance(e[k], bool):
            return f"{k} is not a boolean"
    return None


def seen_event_key(event_id: str, stream: str) -> str:
    """The event API's dedupe marker of ``event_id`` on ``stream`` (keyed hash: no client-chosen id in a key
    name), tagged with the stream's name: the marker lives in the stream's slot."""
    if "{" in stream or "}" in stream:
        raise ValueError(f"event stream name {stream!r} must not hold braces (a hash tag is made of it)")
    return SEEN_EVENT.format(stream, pseudonym(event_id))


def archived_key(event_id: str) -> str:
    """The Flink job's marker of an event already written to the lake (keyed hash of its id)."""
    return ARCHIVED.format(pseudonym(event_id))


def version_seen_key(event_type: str, event_id: str, model_version: str) -> str:
    """The marker of an event counted in ``model_version``'s CTR, in the slot of that version's hash."""
    return VERSION_SEEN.format(model_version, f"{event_type[:1]}:{pseudonym(event_id)}")


def dead_letter_fields(payload: bytes, reason: str, source_id: str, at_ms: int) -> dict[str, bytes | str]:
    """One dead-letter entry: the raw payload as it was on the bus, sealed (a replay re-sends it unchanged;
    nothing of it rests in plaintext), with its reason (field names, never values), bus position and time."""
    return {"s": seal(payload, source_id.encode()), "reason": reason[:500], "source_id": source_id,
            "at_ms": str(at_ms)}


def dead_letter_payload(fields: dict[bytes, bytes], settings: Settings | None = None) -> bytes:
    """The raw bus payload of a dead-letter entry (its fields as XRANGE returns them); raises
    :class:`gpu_core.pii.SealError` when it does not open. An entry written before the seal gives its ``e``."""
    if b"s" in fields:
        return unseal(fields[b"s"], fields.get(b"source_id", b""), settings)
    return fields.get(b"e", b"")


def dead_letter_size(fields: dict[bytes, bytes]) -> int:
    """Bytes of the payload of a dead-letter entry, without opening it."""
    if b"s" in fields:
        return max(len(fields[b"s"]) - SEAL_OVERHEAD, 0)
    return len(fields.get(b"e", b""))


def event_topic(stream: str) -> str:
    """The Kafka topic that carries the events of the Redis stream name ``stream`` (``:`` is not allowed in a
    topic name). Every Kafka reader of the events (our bus adapter, the Flink job) takes it from here."""
    return stream.replace(":", ".")


def encode_event(event: dict[str, Any]) -> bytes:
    """One event -> the bus payload (JSON; ``ts`` in epoch ms)."""
    return orjson.dumps(event)


def decode_event(payload: bytes | str) -> dict[str, Any]:
    return orjson.loads(payload)


def latency_bucket(ms: float) -> str:
    """Name of the histogram bucket ``ms`` falls in (``le{bound}`` or ``inf``)."""
    for b in LATENCY_BUCKETS_MS:
        if ms <= b:
            return f"le{b:g}"
    return "inf"


def quantile_from_buckets(counts: dict[str, int], q: float) -> float:
    """Upper bound (ms) of the bucket holding quantile ``q`` of a latency histogram (inf if above all)."""
    total = sum(counts.values())
    if total <= 0:
        return 0.0
    need = q * total
    acc = 0
    for b in LATENCY_BUCKETS_MS:
        acc += counts.get(f"le{b:g}", 0)
        if acc >= need:
            return float(b)
    return float("inf")
