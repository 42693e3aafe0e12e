"""Stage 1b, force-boosted candidates: a listing an admin force-boosted (``POST /v1/admin/overrides``
``{"action": "boost"}``) joins every feed's candidates even when retrieval did not return it, so the
boost takes effect; the filters that follow still apply (a banned seller or category, a listing beyond
the user's distance or sold is removed as any other). Searches are left to their query: a boosted
listing that does not match it is not added. Candidates retrieval found keep their own source."""

from __future__ import annotations

import numpy as np

from gpu_core.device import to_host
from online.candidates import CandidateBatch, RequestContext, Source


class BoostedStage:
    name = "boosted"
    budget_ms = 0.5

    def run(self, ctx: RequestContext, batch: CandidateBatch, state) -> CandidateBatch:
        boost = state.overrides.boost
        if ctx.kind != "feed" or not len(boost):
            return batch
        idx = state.mirror.index_of(boost)
        have = to_host(batch.idx)
        add = idx[(idx >= 0) & ~np.isin(idx, have)]
        if not len(add):
            return batch
        return CandidateBatch.of(state.be.xp, np.concatenate([have, add]),
                                 np.concatenate([to_host(batch.source), np.full(len(add), Source.BOOSTED, np.int8)]))
