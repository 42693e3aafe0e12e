"""Stage 4, scoring: the model matrix from :func:`kernels.features.assemble_matrix` (the function
training used) over the hydrated columns plus the request's user/context columns, then pCTR, pCVR and
FinalScore = pCTR*w1 + pCVR*w2 + SellerTrust*w3 + boosted*BoostMultiplier from
:func:`engines.ranker.score_matrix` (the function the trainer's evaluation uses). The model that
scored is recorded on the context (``ctx.model``): SHAP and the response's ``model_version`` name it.

A batch that already carries a matrix (replay: the recorded one) is scored as it is. No hydrated
features (feature store slow) or no model -> generic popularity scores (``model_unavailable``)."""

from __future__ import annotations

from engines.ranker import Ranker, score_matrix
from gpu_core.registry import PRODUCTION
from kernels.features import assemble_matrix
from online.candidates import CandidateBatch, Fallback, RequestContext


class ScoringStage:
    name = "scoring"
    budget_ms = 3.0

    @staticmethod
    def model_for(ctx: RequestContext, state) -> Ranker | None:
        if ctx.pinned_model is not None:
            return ctx.pinned_model
        return state.models.get(ctx.arm) or state.models.get(PRODUCTION)

    @staticmethod
    def matrix(ctx: RequestContext, batch: CandidateBatch, xp):
        """The model matrix of ``batch`` (None when it was not hydrated)."""
        if batch.X is not None:
            return batch.X
        if batch.cols is None:
            return None
        return assemble_matrix({**batch.cols, **ctx.user.columns}, xp=xp)

    def run(self, ctx: RequestContext, batch: CandidateBatch, state) -> CandidateBatch:
        xp = state.be.xp
        model = self.model_for(ctx, state)
        X = self.matrix(ctx, batch, xp)
        if X is None or model is None:
            if model is None:
                ctx.fallback(Fallback.MODEL_UNAVAILABLE)
            pop = xp.take(state.mirror.cols["popularity"], batch.idx, axis=0)
            batch.score = xp.where(batch.alive, pop, -xp.inf)
            return batch
        ctx.model = model
        batch.X = X
        s = score_matrix(model, X, state.weights, xp)
        batch.p_ctr, batch.p_cvr = s.p_ctr, s.p_cvr
        batch.score = xp.where(batch.alive, s.final, -xp.inf)
        return batch
