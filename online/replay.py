"""Replayable responses: a sampled, PII-free request log in Redis and ``jaikod replay REQUEST_ID``.

Each sampled ``/v1/feed`` or ``/v1/search`` response stores, under ``jk:replay:{request_id}`` (TTL
``replay_ttl_s``): the request's shape (kind, user id, query, limit, time), the candidate ids after
filters, the feature-snapshot version, the model version, the settings digest, the hydrated feature
matrix (float32, zlib) and its SHA-256, and the organic ranking served. No names, phones, chat text or
coordinates: location only enters as the ``distance_km`` column. The same records are the
"features as served" for skew checks against the offline feature tables.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from typing import Any

import numpy as np

from gpu_core.device import to_host
from gpu_core.schema import MODEL_FEATURES

KEY = "jk:replay:{}"


def digest(X: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(X, dtype="<f4").tobytes()).hexdigest()


def record(ctx, batch, ids: np.ndarray, settings_digest: str) -> dict[str, bytes | str]:
    X = to_host(batch.X) if batch.X is not None else np.zeros((0, len(MODEL_FEATURES)), np.float32)
    alive = to_host(batch.alive)
    rec: dict[str, Any] = {
        "kind": ctx.kind, "user_id": str(ctx.user_id), "query": ctx.query, "limit": str(ctx.limit),
        "now_ms": str(ctx.now_ms), "snapshot_version": ctx.snapshot_version or "",
        "model_version": ctx.model_version, "arm": ctx.arm, "settings_digest": settings_digest,
        "fallbacks": json.dumps(ctx.fallbacks), "device_type": str(ctx.device_type),
        "features": json.dumps(list(MODEL_FEATURES)),
        "candidate_ids": np.asarray(ids, dtype="<i8").tobytes(),
        "alive": np.packbits(alive.astype(bool)).tobytes(), "n": str(len(alive)),
        "X": zlib.compress(np.ascontiguousarray(X, dtype="<f4").tobytes(), 1), "X_sha256": digest(X),
        "served_ids": np.asarray(batch.final_ids, dtype="<i8").tobytes(),
        "served_sponsored": np.asarray(batch.sponsored, dtype=bool).tobytes(),
    }
    return rec


def load(r, request_id: str) -> dict[str, Any] | None:
    raw = r.hgetall(KEY.format(request_id))
    if not raw:
        return None
    raw = {k.decode(): v for k, v in raw.items()}
    n = int(raw["n"])
    feats = json.loads(raw["features"])
    X = np.frombuffer(zlib.decompress(raw["X"]), dtype="<f4").reshape(-1, len(feats))
    return {
        "kind": raw["kind"].decode(), "user_id": int(raw["user_id"]), "query": raw["query"].decode(),
        "limit": int(raw["limit"]), "now_ms": int(raw["now_ms"]),
        "snapshot_version": raw["snapshot_version"].decode(), "model_version": raw["model_version"].decode(),
        "arm": raw["arm"].decode(), "settings_digest": raw["settings_digest"].decode(),
        "fallbacks": json.loads(raw["fallbacks"]), "device_type": int(raw["device_type"]), "features": feats,
        "candidate_ids": np.frombuffer(raw["candidate_ids"], dtype="<i8"),
        "alive": np.unpackbits(np.frombuffer(raw["alive"], dtype=np.uint8))[:n].astype(bool),
        "X": X, "X_sha256": raw["X_sha256"].decode(),
        "served_ids": np.frombuffer(raw["served_ids"], dtype="<i8"),
        "served_sponsored": np.frombuffer(raw["served_sponsored"], dtype=bool),
    }
