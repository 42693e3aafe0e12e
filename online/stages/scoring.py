"""Stage 4, scoring: the model input matrix from :func:`gpu_core.schema.assemble_matrix` (the same
function training used), pCTR and pCVR from XGBoost ``inplace_predict`` (cupy arrays stay on the GPU),
and FinalScore = pCTR*w1 + pCVR*w2 + SellerTrust*w3 + boosted*BoostMultiplier.

No hydrated features (feature store slow) or no model -> generic popularity scores."""

from __future__ import annotations

import numpy as np

from gpu_core.schema import assemble_matrix
from kernels.scoring import final_score
from online.candidates import CandidateBatch, RequestContext


def predict(booster, X, best: int):
    return booster.inplace_predict(X, iteration_range=(0, best) if best > 0 else (0, 0))


class ScoringStage:
    name = "scoring"
    budget_ms = 3.0

    def run(self, ctx: RequestContext, batch: CandidateBatch, state) -> CandidateBatch:
        xp = state.be.xp
        s = state.settings
        model = state.models.get(ctx.arm) or state.models.get("production")
        cols = getattr(batch, "cols", None)
        if cols is None or model is None:
            if model is None:
                ctx.fallback("model_unavailable")
            pop = xp.take(state.mirror.cols["popularity"], batch.idx, axis=0)
            batch.score = xp.where(batch.alive, pop, -xp.inf)
            return batch
        ctx.model_version = model.label
        X = assemble_matrix(cols, xp=xp)
        batch.X = X
        p_ctr = xp.asarray(predict(model.ctr, X, model.best_ctr), dtype=xp.float32)
        p_cvr = xp.asarray(predict(model.cvr, X, model.best_cvr), dtype=xp.float32)
        batch.p_ctr, batch.p_cvr = p_ctr, p_cvr
        batch.boosted = cols["is_boosted_now"]
        score = final_score(p_ctr, p_cvr, cols["seller_trust_score"], batch.boosted, s.w_ctr, s.w_cvr, s.w_trust,
                            s.boost_multiplier, xp=xp)
        batch.score = xp.where(batch.alive, score, -xp.inf)
        return batch


def explain(model, X: np.ndarray, feature_names) -> list[dict]:
    """TreeSHAP contributions of the pCTR model (``pred_contribs``) for the rows of ``X``."""
    import xgboost as xgb

    d = xgb.DMatrix(X, feature_names=list(feature_names))
    it = (0, model.best_ctr) if model.best_ctr > 0 else (0, 0)
    contribs = model.ctr.predict(d, pred_contribs=True, iteration_range=it)
    margins = model.ctr.predict(d, output_margin=True, iteration_range=it)
    out = []
    for row, margin in zip(contribs, margins, strict=True):
        contrib = {name: float(v) for name, v in zip(feature_names, row[:-1], strict=True)}
        top = dict(sorted(contrib.items(), key=lambda kv: -abs(kv[1]))[:8])
        out.append({"bias": float(row[-1]), "margin": float(margin), "contributions": top,
                    "all_contributions": contrib})
    return out
