"""Stage 6, polish: sponsored listings (from the sponsored inventory, among the candidates that passed
the filters, best score first; replay pins the recorded ones) at fixed 1-based slots (default 4 and
12), never duplicated in the organic list; top N. The seller-run rule holds across the slots: the same
kernel as re-rank, with the sponsored items pinned at their positions."""

from __future__ import annotations

import numpy as np

from gpu_core.device import to_host
from kernels.rerank import seller_run_limit
from kernels.slots import inject_slots
from online.candidates import CandidateBatch, RequestContext


class PolishStage:
    name = "polish"
    budget_ms = 0.5

    def run(self, ctx: RequestContext, batch: CandidateBatch, state) -> CandidateBatch:
        s = state.settings
        idx = to_host(batch.idx)
        ids_all = state.mirror.ids[idx]
        order = to_host(batch.order).astype(np.int64)  # organic candidate positions, best first
        slots = tuple(x for x in s.sponsored_slots if x <= ctx.limit)
        sponsored = self.sponsored_positions(ctx, batch, state, ids_all, len(slots)) if slots else order[:0]
        final, flags = inject_slots(order, sponsored, slots=slots, n=ctx.limit, xp=np)
        final, flags = np.asarray(final, dtype=np.int64), np.asarray(flags, dtype=bool)
        if flags.any():  # keep the seller-run rule across the pinned sponsored items
            seller = state.mirror.seller[idx]
            pool = order[~np.isin(order, final[flags])]
            fixed = {int(i): int(seller[final[i]]) for i in np.flatnonzero(flags)}
            fill = np.asarray(seller_run_limit(pool, seller, s.max_per_seller_run, xp=np, fixed=fixed,
                                               length=len(final)), dtype=np.int64)
            final[~flags] = fill[: int((~flags).sum())]
        batch.final_pos = final
        batch.final_ids = ids_all[final] if len(final) else np.empty(0, np.int64)
        batch.sponsored = flags
        return batch

    @staticmethod
    def sponsored_positions(ctx: RequestContext, batch: CandidateBatch, state, ids_all: np.ndarray,
                            n_slots: int) -> np.ndarray:
        """Candidate positions of the sponsored items to place, best first."""
        if ctx.pinned_sponsored is not None:  # replay: the items that were served
            pos = {int(p): i for i, p in enumerate(ids_all)}
            return np.asarray([pos[int(p)] for p in ctx.pinned_sponsored if int(p) in pos], dtype=np.int64)
        if not len(state.overrides.sponsored):
            return np.empty(0, np.int64)
        alive = to_host(batch.alive)
        score = to_host(batch.score)
        cand = np.flatnonzero(state.sponsored_mask()[to_host(batch.idx)] & alive)
        return cand[np.argsort(-score[cand], kind="stable")][:n_slots]
