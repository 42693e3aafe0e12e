"""The replay log's format, writer and reader together: one Redis hash per sampled ``/v1/feed`` or
``/v1/search`` response, ``jk:replay:{request_id}`` (TTL ``replay_ttl_s``). Written by the service,
read by ``jaikod replay`` and by the batch skew check (``batch/skew.py``).

A record holds the request's shape (kind, user id, query, limit, time, device), the candidate ids after
the filters with their alive mask, the feature-snapshot version, the model version and arm, the settings
digest, the fallbacks, the model matrix as served (float32, zlib) with its SHA-256, and the list served
(ids, sponsored flags). No names, phones, chat text or coordinates: location only enters as the
``distance_km`` column.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

KEY = "jk:replay:{}"


def replay_key(request_id: str) -> str:
    return KEY.format(request_id)


def digest(X: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(X, dtype="<f4").tobytes()).hexdigest()


@dataclass(frozen=True)
class ReplayRecord:
    kind: str
    user_id: int
    query: str
    limit: int
    now_ms: int
    device_type: int
    geo_from_request: bool
    snapshot_version: str
    model_version: str
    arm: str
    settings_digest: str
    fallbacks: list[str]
    features: list[str]  # the model matrix's column names, in order
    candidate_ids: np.ndarray  # int64 [n]
    alive: np.ndarray  # bool [n]
    X: np.ndarray  # float32 [n, len(features)]
    served_ids: np.ndarray  # int64, the served order
    served_sponsored: np.ndarray  # bool per served item
    X_sha256: str = ""

    def to_hash(self) -> dict[str, bytes | str]:
        X = np.ascontiguousarray(self.X, dtype="<f4")
        return {
            "kind": self.kind, "user_id": str(self.user_id), "query": self.query, "limit": str(self.limit),
            "now_ms": str(self.now_ms), "device_type": str(self.device_type),
            "geo_from_request": "1" if self.geo_from_request else "0", "snapshot_version": self.snapshot_version,
            "model_version": self.model_version, "arm": self.arm, "settings_digest": self.settings_digest,
            "fallbacks": json.dumps(self.fallbacks), "features": json.dumps(self.features),
            "candidate_ids": np.asarray(self.candidate_ids, dtype="<i8").tobytes(),
            "alive": np.packbits(np.asarray(self.alive, dtype=bool)).tobytes(), "n": str(len(self.alive)),
            "X": zlib.compress(X.tobytes(), 1), "X_sha256": digest(X),
            "served_ids": np.asarray(self.served_ids, dtype="<i8").tobytes(),
            "served_sponsored": np.asarray(self.served_sponsored, dtype=bool).tobytes(),
        }

    @classmethod
    def from_hash(cls, raw: dict[bytes, bytes]) -> ReplayRecord:
        r = {k.decode(): v for k, v in raw.items()}
        s = {k: v.decode() for k, v in r.items() if k not in ("candidate_ids", "alive", "X", "served_ids",
                                                                "served_sponsored")}
        n = int(s["n"])
        feats = json.loads(s["features"])
        return cls(
            kind=s["kind"], user_id=int(s["user_id"]), query=s["query"], limit=int(s["limit"]),
            now_ms=int(s["now_ms"]), device_type=int(s["device_type"]),
            geo_from_request=s.get("geo_from_request", "0") == "1", snapshot_version=s["snapshot_version"],
            model_version=s["model_version"], arm=s["arm"], settings_digest=s["settings_digest"],
            fallbacks=json.loads(s["fallbacks"]), features=feats,
            candidate_ids=np.frombuffer(r["candidate_ids"], dtype="<i8").copy(),
            alive=np.unpackbits(np.frombuffer(r["alive"], dtype=np.uint8))[:n].astype(bool),
            X=np.frombuffer(zlib.decompress(r["X"]), dtype="<f4").reshape(-1, len(feats)).copy(),
            served_ids=np.frombuffer(r["served_ids"], dtype="<i8").copy(),
            served_sponsored=np.frombuffer(r["served_sponsored"], dtype=bool).copy(),
            X_sha256=s["X_sha256"],
        )

    def matrix_ok(self) -> bool:
        return digest(self.X) == self.X_sha256

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def write(pipe: Any, request_id: str, record: ReplayRecord, ttl_s: int) -> Any:
    key = replay_key(request_id)
    return pipe.hset(key, mapping=record.to_hash()).expire(key, ttl_s)


def load(r: Any, request_id: str) -> ReplayRecord | None:
    raw = r.hgetall(replay_key(request_id))
    return ReplayRecord.from_hash(raw) if raw else None


def scan(r: Any, count: int = 1000):
    """Every record still in the log: (request_id, record)."""
    for key in r.scan_iter(match=KEY.format("*"), count=count):
        rec = load(r, key.decode().split(":", 2)[2])
        if rec is not None:
            yield key.decode().split(":", 2)[2], rec
