"""Stage 6, polish: sponsored listings (from the sponsored inventory, among the candidates that passed
the filters, best score first) at fixed 1-based slots (default 4 and 12), never duplicated in the
organic list; top N."""

from __future__ import annotations

import numpy as np

from gpu_core.device import to_host
from kernels.slots import inject_slots
from online.candidates import CandidateBatch, RequestContext


class PolishStage:
    name = "polish"
    budget_ms = 0.5

    def run(self, ctx: RequestContext, batch: CandidateBatch, state) -> CandidateBatch:
        s = state.settings
        ids_all = state.mirror.ids[to_host(batch.idx)]
        order = to_host(batch.order).astype(np.int64)
        organic = ids_all[order]
        sponsored_ids = np.empty(0, np.int64)
        inv = state.overrides.sponsored
        slots = tuple(x for x in s.sponsored_slots if x <= ctx.limit)
        if len(inv) and slots:
            alive = to_host(batch.alive)
            score = to_host(batch.score)
            cand = np.flatnonzero(np.isin(ids_all, inv) & alive)
            cand = cand[np.argsort(-score[cand], kind="stable")][: len(slots)]
            sponsored_ids = ids_all[cand]
        final, flags = inject_slots(organic, sponsored_ids, slots=slots, n=ctx.limit, xp=np)
        batch.final_ids = np.asarray(final, dtype=np.int64)
        batch.sponsored = np.asarray(flags, dtype=bool)
        sorter = np.argsort(ids_all, kind="stable")
        at = np.clip(np.searchsorted(ids_all[sorter], batch.final_ids), 0, max(len(ids_all) - 1, 0))
        found = ids_all[sorter][at] == batch.final_ids if len(ids_all) else np.zeros(len(batch.final_ids), bool)
        batch.final_pos = np.where(found, sorter[at] if len(ids_all) else -1, -1).astype(np.int64)
        return batch
