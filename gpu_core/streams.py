"""Contracts of the streaming and MLOps loop, shared by ``online`` (event API, stream processor,
canary, metrics) and ``batch`` (continuous training writes drift): Redis key names and the wire
format of an event on the bus.

======================================  ========================================================
``{settings.event_stream}``             Redis stream of accepted events, one field ``e`` (JSON)
``jk:ev:seen:{event_id}``               event API dedupe marker (TTL settings.event_dedupe_ttl_s)
``jk:mv:seen:{event_id}``               per-version CTR counted once per event (TTL 7 days)
``jk:mv:{model_version}``               hash: impressions, clicks (from events), requests, errors,
                                        fallbacks, lat:{bucket} (feed latency histogram, ms buckets)
``jk:canary``                           hash: state of the canary (staging version, last decision)
``jk:canary:log``                       list of JSON decisions, newest first
``jk:drift:psi``                        hash: feature -> PSI (training window vs last window)
``jk:drift:meta``                       hash: computed_at, train_window, last_window
``jk:stream:manifest``                  hash: archive file -> JSON entry ids (archived, not acked)
``jk:stream:stats``                     hash: applied, archived, files (counters of the processor)
======================================  ========================================================
"""

from __future__ import annotations

from typing import Any

import orjson

SEEN_EVENT = "jk:ev:seen:{}"
VERSION_SEEN = "jk:mv:seen:{}"
VERSION_STATS = "jk:mv:{}"
CANARY = "jk:canary"
CANARY_LOG = "jk:canary:log"
DRIFT_PSI = "jk:drift:psi"
DRIFT_META = "jk:drift:meta"
MANIFEST = "jk:stream:manifest"
STREAM_STATS = "jk:stream:stats"

# feed latency histogram buckets (ms, upper bounds) kept per model version for the canary's p99
LATENCY_BUCKETS_MS: tuple[float, ...] = (5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000, 2000, 5000)

from gpu_core.lake import EVENT_FIELDS  # noqa: E402,F401  (the event schema is the lake contract's)


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
