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
        idx = to_host(batch.idx)
        ids_all = state.mirror.ids[idx]
        order = to_host(batch.order).astype(np.int64)
        organic = ids_all[order]
        sponsored_ids = np.empty(0, np.int64)
        slots = tuple(x for x in s.sponsored_slots if x <= ctx.limit)
        if len(state.overrides.sponsored) and slots:
            alive = to_host(batch.alive)
            score = to_host(batch.score)
            cand = np.flatnonzero(state.sponsored_mask()[idx] & alive)
            cand = cand[np.argsort(-score[cand], kind="stable")][: len(slots)]
            sponsored_ids = ids_all[cand]
        final, flags = inject_slots(organic, sponsored_ids, slots=slots, n=ctx.limit, xp=np)
        final, flags = np.asarray(final, dtype=np.int64), np.asarray(flags, dtype=bool)
        batch.final_ids = np.asarray(enforce_seller_runs(final, flags, organic, ids_all,
                                                         state.mirror.seller[idx],
                                                         s.max_per_seller_run), dtype=np.int64)
        batch.sponsored = flags
        sorter = np.argsort(ids_all, kind="stable")
        at = np.clip(np.searchsorted(ids_all[sorter], batch.final_ids), 0, max(len(ids_all) - 1, 0))
        found = ids_all[sorter][at] == batch.final_ids if len(ids_all) else np.zeros(len(batch.final_ids), bool)
        batch.final_pos = np.where(found, sorter[at] if len(ids_all) else -1, -1).astype(np.int64)
        return batch


def enforce_seller_runs(final: np.ndarray, flags: np.ndarray, organic: np.ndarray, ids_all: np.ndarray,
                        seller_all: np.ndarray, max_run: int) -> list[int]:
    """:func:`keep_seller_runs` with the seller lookup built only when the served list breaks the rule."""
    sorter = np.argsort(ids_all, kind="stable")
    sellers = seller_all[sorter[np.searchsorted(ids_all[sorter], final)]] if len(final) else seller_all[:0]
    if not _has_long_run(sellers, max_run):
        return [int(p) for p in final]
    seller_of = dict(zip(ids_all.tolist(), seller_all.tolist(), strict=True))
    taken = set(final[flags].tolist())
    pool = [int(p) for p in organic if int(p) not in taken]
    return keep_seller_runs(final, flags, pool, seller_of, max_run)


def _has_long_run(sellers: np.ndarray, max_run: int) -> bool:
    """True when some seller appears more than ``max_run`` times in a row."""
    same = np.concatenate([[False], sellers[1:] == sellers[:-1]])
    run = 0
    for s in same:  # <= limit (50) steps
        run = run + 1 if s else 0
        if run >= max_run:
            return True
    return False


def keep_seller_runs(final: np.ndarray, flags: np.ndarray, pool: list[int], seller_of: dict[int, int],
                     max_run: int) -> list[int]:
    """Refill the organic positions of ``final`` so that the served list, sponsored slots included, has no
    more than ``max_run`` items of one seller in a row.

    Re-rank already limits runs in the organic order, but a sponsored item placed in its slot (or taken
    out of the organic order) can join two runs. Each organic position takes the best remaining organic
    item (``pool``, in ranked order) whose seller does not make a run longer than ``max_run`` with the
    items before it and the sponsored item right after it; if none does, the best remaining one.
    Unchanged when the injected list already satisfies the rule.
    """
    sellers = [seller_of[int(p)] for p in final]

    def runs_ok(seq: list[int]) -> bool:
        run = 0
        for i, sl in enumerate(seq):
            run = run + 1 if i and sl == seq[i - 1] else 1
            if run > max_run:
                return False
        return True

    if runs_ok(sellers):
        return [int(p) for p in final]
    out: list[int] = []
    out_sellers: list[int] = []
    remaining = list(pool)
    for i, (pid, sp) in enumerate(zip(final, flags, strict=True)):
        if sp:
            out.append(int(pid))
            out_sellers.append(seller_of[int(pid)])
            continue
        choice = 0
        for j, cand in enumerate(remaining):
            sl = seller_of[cand]
            before = 0
            while before < len(out_sellers) and out_sellers[-1 - before] == sl:
                before += 1
            after = 1 if i + 1 < len(final) and flags[i + 1] and seller_of[int(final[i + 1])] == sl else 0
            if before + 1 + after <= max_run:
                choice = j
                break
        pick = remaining.pop(choice)
        out.append(pick)
        out_sellers.append(seller_of[pick])
    return out
