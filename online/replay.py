"""Replayable responses: a sampled, PII-free request log in Redis and ``jaikod replay REQUEST_ID``.

Each sampled ``/v1/feed`` or ``/v1/search`` response stores, under ``jk:replay:{request_id}`` (TTL
``replay_ttl_s``): the request's shape (kind, user id, query, limit, time), the candidate ids after
filters, the feature-snapshot version, the model version, the settings digest, the hydrated feature
matrix (float32, zlib) and its SHA-256, and the organic ranking served. No names, phones, chat text or
coordinates: location only enters as the ``distance_km`` column. The same records are the
"features as served" for skew checks against the offline feature tables.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import numpy as np

from gpu_core.device import to_host
from gpu_core.replay_log import KEY, digest, load  # noqa: F401  (the log format is a gpu_core contract)
from gpu_core.schema import MODEL_FEATURES


def record(ctx, batch, ids: np.ndarray, settings_digest: str) -> dict[str, bytes | str]:
    X = to_host(batch.X) if batch.X is not None else np.zeros((0, len(MODEL_FEATURES)), np.float32)
    alive = to_host(batch.alive)
    rec: dict[str, Any] = {
        "kind": ctx.kind, "user_id": str(ctx.user_id), "query": ctx.query, "limit": str(ctx.limit),
        "now_ms": str(ctx.now_ms), "snapshot_version": ctx.snapshot_version or "",
        "model_version": ctx.model_version, "arm": ctx.arm, "settings_digest": settings_digest,
        "fallbacks": json.dumps(ctx.fallbacks), "device_type": str(ctx.device_type),
        "geo_from_request": "1" if ctx.lat is not None else "0",
        "features": json.dumps(list(MODEL_FEATURES)),
        "candidate_ids": np.asarray(ids, dtype="<i8").tobytes(),
        "alive": np.packbits(alive.astype(bool)).tobytes(), "n": str(len(alive)),
        "X": zlib.compress(np.ascontiguousarray(X, dtype="<f4").tobytes(), 1), "X_sha256": digest(X),
        "served_ids": np.asarray(batch.final_ids, dtype="<i8").tobytes(),
        "served_sponsored": np.asarray(batch.sponsored, dtype=bool).tobytes(),
    }
    return rec


def replay_request(state, request_id: str) -> dict[str, Any]:
    """Re-score a logged request and say whether the same ranking comes out, or which input changed.

    1. The stored matrix is scored again with the recorded model version (from the registry) and the
       organic ranking is rebuilt (final score, re-rank, recorded sponsored items): ``same_ranking``.
    2. The same candidates are hydrated again *now* (current snapshot and real-time state, at the
       request's original time): ``changed_features`` lists the columns whose values differ, and the
       snapshot, model alias and settings digest are compared with the recorded ones.
    """
    from gpu_core.clock import frozen
    from gpu_core.errors import JaikodError
    from gpu_core.registry import RANKER
    from online.candidates import CandidateBatch, RequestContext
    from online.pipeline import RankingPipeline
    from online.stages import HydrationStage, RerankStage
    from online.state import load_model_dir

    rec = load(state.redis, request_id)
    if rec is None:
        raise JaikodError(f"no replay record for request {request_id!r} (not sampled, or expired)",
                          field="request_id")
    name, _, version = rec["model_version"].partition("/")
    if name != RANKER or state.registry is None:
        raise JaikodError(f"recorded model {rec['model_version']!r} cannot be loaded from the registry",
                          field="model_version")
    from gpu_core.registry import ModelRef

    mv = state.registry.client.get_model_version(RANKER, version)
    ref = ModelRef(RANKER, version, None, mv.source, mv.run_id, {})
    model = load_model_dir(state.registry.download(ref), ref, state.be)
    xp = state.be.xp
    ids = rec["candidate_ids"]
    mirror = state.ensure_snapshot(state.store.current_version())
    idx = mirror.index_of(ids)
    if (idx < 0).any():
        raise JaikodError("some candidates of the record are no longer in the live snapshot", field="candidate_ids")
    # 1. re-score the recorded matrix
    pipe = RankingPipeline(state)
    ctx = RequestContext(request_id=request_id, kind=rec["kind"], user_id=rec["user_id"], lat=None, lon=None,
                         device_type=rec["device_type"], limit=rec["limit"], query=rec["query"], now_ms=rec["now_ms"],
                         deadline_s=float("inf"))
    batch = CandidateBatch(xp=xp, idx=xp.asarray(idx.astype(np.int32)), retrieval_score=xp.zeros(len(idx)),
                           from_keyword=xp.zeros(len(idx), dtype=xp.bool), alive=xp.asarray(rec["alive"]))
    from online.stages.scoring import predict

    s = state.settings
    X = xp.asarray(rec["X"])
    feats = rec["features"]
    p_ctr = xp.asarray(predict(model.ctr, X, model.best_ctr), dtype=xp.float32)
    p_cvr = xp.asarray(predict(model.cvr, X, model.best_cvr), dtype=xp.float32)
    from kernels.scoring import final_score

    score = final_score(p_ctr, p_cvr, X[:, feats.index("seller_trust_score")], X[:, feats.index("is_boosted_now")],
                        s.w_ctr, s.w_cvr, s.w_trust, s.boost_multiplier, xp=xp)
    batch.score = xp.where(batch.alive, score, -xp.inf)
    RerankStage().run(ctx, batch, state)
    # ... and polished as served: the recorded sponsored items in their slots, seller runs enforced
    from kernels.slots import inject_slots
    from online.stages.polish import enforce_seller_runs

    cand_ids = mirror.ids[to_host(batch.idx)]
    organic = cand_ids[to_host(batch.order).astype(np.int64)]
    sponsored = rec["served_ids"][rec["served_sponsored"]]
    slots = tuple(x for x in s.sponsored_slots if x <= rec["limit"])
    final, flags = inject_slots(organic, sponsored, slots=slots, n=rec["limit"], xp=np)
    final = np.asarray(enforce_seller_runs(np.asarray(final, np.int64), np.asarray(flags, bool), organic, cand_ids,
                                           mirror.seller[to_host(batch.idx)], s.max_per_seller_run), np.int64)
    same_ranking = bool(np.array_equal(final, rec["served_ids"]))
    # 2. hydrate again now, same time and candidates
    changed: dict[str, int] = {}
    with frozen(rec["now_ms"]):
        ctx2 = RequestContext(request_id=request_id, kind=rec["kind"], user_id=rec["user_id"], lat=None, lon=None,
                              device_type=rec["device_type"], limit=rec["limit"], query=rec["query"],
                              now_ms=rec["now_ms"], deadline_s=float("inf"))
        pipe.load_user(ctx2)
        b2 = CandidateBatch(xp=xp, idx=xp.asarray(idx.astype(np.int32)), retrieval_score=xp.zeros(len(idx)),
                            from_keyword=xp.zeros(len(idx), dtype=xp.bool), alive=xp.asarray(rec["alive"]))
        HydrationStage().run(ctx2, b2, state)
        if b2.cols is not None:
            from gpu_core.schema import assemble_matrix

            X_now = to_host(assemble_matrix(b2.cols, xp=xp))
            alive = rec["alive"]
            for j, f in enumerate(feats):
                diff = ~np.isclose(X_now[alive, j], rec["X"][alive, j], rtol=1e-6, atol=1e-6)
                if diff.any():
                    changed[f] = int(diff.sum())
    prod = state.registry.get(RANKER, rec["arm"])
    return {
        "request_id": request_id, "same_ranking": same_ranking, "served": [int(x) for x in rec["served_ids"]],
        "rescored": [int(x) for x in final], "model_version": rec["model_version"],
        "model_alias_now": prod.label if prod else None, "model_changed": (prod.label if prod else None)
        != rec["model_version"], "snapshot_version": rec["snapshot_version"],
        "snapshot_now": mirror.version, "snapshot_changed": mirror.version != rec["snapshot_version"],
        "settings_changed": s.digest() != rec["settings_digest"], "matrix_sha256": rec["X_sha256"],
        "matrix_sha256_ok": digest(rec["X"]) == rec["X_sha256"], "changed_features": changed,
    }
