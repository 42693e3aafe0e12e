"""The replay log's format: written by the service (``online/replay.py``), read by ``jaikod replay`` and by
the batch skew check (``batch/skew.py``). One Redis hash per sampled request, ``jk:replay:{request_id}``."""

from __future__ import annotations

import hashlib
import json
import zlib
from typing import Any

import numpy as np

KEY = "jk:replay:{}"


def digest(X: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(X, dtype="<f4").tobytes()).hexdigest()


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
        "geo_from_request": raw.get("geo_from_request", b"0") == b"1",
    }


