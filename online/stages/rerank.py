"""Stage 5, re-rank: the best candidates by final score; high fraud-risk listings demoted below the
rest; no more than ``max_per_seller_run`` listings of one seller in a row (:func:`kernels.rerank.
seller_run_limit`, the kernel polish applies again across the sponsored slots)."""

from __future__ import annotations

from kernels.rerank import demote_mask, seller_run_limit
from kernels.scoring import top_k_indices
from online.candidates import CandidateBatch, RequestContext


class RerankStage:
    name = "rerank"
    budget_ms = 1.5

    def run(self, ctx: RequestContext, batch: CandidateBatch, state) -> CandidateBatch:
        xp = state.be.xp
        s = state.settings
        k = min(batch.n, max(4 * (ctx.limit + len(s.sponsored_slots)), 100))
        order = top_k_indices(batch.score, k, mask=batch.alive, xp=xp)
        fraud = xp.take(state.mirror.cols["fraud_score"], batch.idx, axis=0)
        risky = fraud >= s.fraud_threshold
        n_risky = int(xp.sum(xp.take(risky, order, axis=0)))
        if n_risky:
            ctx.record_removed("fraud_demoted", n_risky)  # demoted below the rest, not dropped
            order = demote_mask(order, risky, xp=xp)
        seller = xp.take(state.mirror.seller_dev, batch.idx, axis=0)
        batch.order = seller_run_limit(order, seller, max_run=s.max_per_seller_run, xp=xp)
        return batch
