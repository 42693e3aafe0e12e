"""Replayable responses: the sampled, PII-free request log (format: :mod:`gpu_core.replay_log`) and
``jaikod replay REQUEST_ID``.

Replay runs the pipeline's own stage objects: the recorded batch (candidates, alive mask, served
matrix) goes through scoring, re-rank and polish with the recorded model version and sponsored items
pinned, so "same ranking" means the serving code reproduced itself, not that a second copy agreed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engines.search.stored import redact
from gpu_core.clock import frozen
from gpu_core.device import to_host
from gpu_core.errors import JaikodError
from gpu_core.registry import RANKER
from gpu_core.replay_log import ReplayRecord, load
from kernels.features import MODEL_FEATURES
from online.candidates import CandidateBatch, RequestContext, Source
from online.pipeline import RankingPipeline
from online.state import load_model_dir


def record_of(ctx: RequestContext, batch: CandidateBatch, mirror_ids: np.ndarray, settings_digest: str) -> ReplayRecord:
    """The replay record of a served request (``batch`` as it left the pipeline)."""
    X = to_host(batch.X) if batch.X is not None else np.zeros((0, len(MODEL_FEATURES)), np.float32)
    return ReplayRecord(
        kind=ctx.kind, user_id=ctx.user_id, limit=ctx.limit, now_ms=ctx.now_ms,
        query=ctx.query_plan.stored if ctx.query_plan is not None else redact(ctx.query),  # no typed text
        device_type=ctx.device_type, geo_from_request=ctx.lat is not None,
        snapshot_version=ctx.snapshot_version or "", model_version=ctx.model_version, arm=ctx.arm,
        settings_digest=settings_digest, fallbacks=list(ctx.fallbacks), features=list(MODEL_FEATURES),
        candidate_ids=mirror_ids[to_host(batch.idx)], alive=to_host(batch.alive).astype(bool), X=X,
        served_ids=np.asarray(batch.final_ids, np.int64), served_sponsored=np.asarray(batch.sponsored, bool))


def _context(request_id: str, rec: ReplayRecord) -> RequestContext:
    return RequestContext(request_id=request_id, kind=rec.kind, user_id=rec.user_id, lat=None, lon=None,
                          device_type=rec.device_type, limit=rec.limit, query=rec.query, now_ms=rec.now_ms,
                          deadline_s=float("inf"), arm=rec.arm)


def rescore(pipeline: RankingPipeline, request_id: str, rec: ReplayRecord, model: Any) -> CandidateBatch:
    """The recorded batch through the serving stages from scoring on (model and sponsored items pinned)."""
    state = pipeline.state
    mirror = state.mirror
    idx = mirror.index_of(rec.candidate_ids)
    if (idx < 0).any():
        raise JaikodError("some candidates of the record are no longer in the live snapshot", field="candidate_ids")
    ctx = _context(request_id, rec)
    ctx.pinned_model = model
    ctx.pinned_sponsored = rec.served_ids[rec.served_sponsored]
    batch = CandidateBatch.of(state.be.xp, idx, np.full(len(idx), Source.POPULAR, np.int8), rec.alive)
    batch.X = state.be.xp.asarray(rec.X)
    return pipeline.run(ctx, batch, start="scoring")


def replay_request(state, request_id: str, pipeline: RankingPipeline | None = None) -> dict[str, Any]:
    """Re-score a logged request and say whether the same ranking comes out, or which input changed.

    1. The stored matrix is scored again with the recorded model version (from the registry) through the
       serving stages (scoring, re-rank, polish with the recorded sponsored items): ``same_ranking``.
    2. The same candidates are hydrated again *now* by the serving stages (current snapshot and real-time
       state, at the request's original time): ``changed_features`` lists the columns whose values differ,
       and the snapshot, model alias and settings digest are compared with the recorded ones.
    """
    pipeline = pipeline or RankingPipeline(state)
    rec = load(state.redis, request_id)
    if rec is None:
        raise JaikodError(f"no replay record for request {request_id!r} (not sampled, or expired)",
                          field="request_id")
    name, _, version = rec.model_version.partition("/")
    if name != RANKER or state.registry is None:
        raise JaikodError(f"recorded model {rec.model_version!r} cannot be loaded from the registry",
                          field="model_version")
    ref = state.registry.version(RANKER, version)
    model = load_model_dir(state.registry.download(ref), ref, state.be)
    mirror = state.ensure_snapshot(state.store.current_version())
    # 1. re-score the recorded matrix
    final = rescore(pipeline, request_id, rec, model).final_ids
    same_ranking = bool(np.array_equal(final, rec.served_ids))
    # 2. hydrate again now, same time and candidates
    changed: dict[str, int] = {}
    with frozen(rec.now_ms):
        ctx = _context(request_id, rec)
        pipeline.run(ctx, None, start="user", stop="user")
        idx = mirror.index_of(rec.candidate_ids)
        b = CandidateBatch.of(state.be.xp, idx, np.full(len(idx), Source.POPULAR, np.int8), rec.alive)
        pipeline.run(ctx, b, start="hydration", stop="hydration")
        X_now = pipeline.stage("scoring").matrix(ctx, b, state.be.xp)
        if X_now is not None:
            X_now = to_host(X_now)
            alive = rec.alive
            for j, f in enumerate(rec.features):
                diff = ~np.isclose(X_now[alive, j], rec.X[alive, j], rtol=1e-6, atol=1e-6)
                if diff.any():
                    changed[f] = int(diff.sum())
    prod = state.registry.get(RANKER, rec.arm)
    now_label = prod.label if prod else None
    return {
        "request_id": request_id, "same_ranking": same_ranking, "served": [int(x) for x in rec.served_ids],
        "rescored": [int(x) for x in final], "model_version": rec.model_version,
        "model_alias_now": now_label, "model_changed": now_label != rec.model_version,
        "snapshot_version": rec.snapshot_version, "snapshot_now": mirror.version,
        "snapshot_changed": mirror.version != rec.snapshot_version,
        "settings_changed": state.settings.digest() != rec.settings_digest, "matrix_sha256": rec.X_sha256,
        "matrix_sha256_ok": rec.matrix_ok(), "changed_features": changed,
    }
