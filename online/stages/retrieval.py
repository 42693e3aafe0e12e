"""Stage 1, retrieval: faiss vector search (user vector) + BM25 keyword search (query), merged and
de-duplicated to at most ``n_candidates``. Vector index failing -> keyword only; both failing or
empty -> popular listings of the user's region (the snapshot's list, else the in-process one)."""

from __future__ import annotations

import logging

import numpy as np

from gpu_core.geo import region_of
from online.candidates import CandidateBatch, RequestContext

log = logging.getLogger(__name__)


class RetrievalStage:
    name = "retrieval"
    budget_ms = 3.0

    def run(self, ctx: RequestContext, batch: CandidateBatch | None, state) -> CandidateBatch:
        n = state.settings.n_candidates
        mirror = state.mirror
        ids_parts, score_parts, kw_parts = [], [], []
        query = ctx.query or ctx.user.get("current_search_query", "")
        vector_ok = keyword_ok = False
        if query:
            try:
                if state.indexes.keyword is None:
                    raise RuntimeError(state.indexes.error or "keyword index not loaded")
                ids, scores = state.indexes.keyword.search(query, n)
                keyword_ok = True
                if ctx.kind == "feed":  # the session's last query only seasons the feed
                    ids, scores = ids[: n // 5], scores[: n // 5]
                ids_parts.append(ids)
                score_parts.append(scores / (scores[0] if len(scores) else 1.0) + 1.0)
                kw_parts.append(np.ones(len(ids), bool))
            except Exception as exc:
                log.warning("keyword index failed: %s", exc)
                ctx.fallback("keyword_index_down")
        uvec = ctx.user.get("user_embedding")
        # a search is answered from its keyword hits; the user's vector only widens a search with few hits
        narrow = ctx.kind == "search" and sum(len(p) for p in ids_parts) >= 2 * ctx.limit
        if uvec is not None and np.any(uvec):
            try:
                if state.indexes.vector is None:
                    raise RuntimeError(state.indexes.error or "vector index not loaded")
                ids, scores = state.indexes.vector.search(uvec, n)
                vector_ok = True
                if narrow:
                    ids, scores = ids[:0], scores[:0]
                ids_parts.append(ids)
                score_parts.append(scores.astype(np.float32))
                kw_parts.append(np.zeros(len(ids), bool))
            except Exception as exc:
                log.warning("vector index failed: %s", exc)
                ctx.fallback("vector_index_down")
        elif not ctx.user_known:
            ctx.fallback("cold_start")
        if not vector_ok and keyword_ok and "vector_index_down" in ctx.fallbacks:
            ctx.fallback("keyword_only")
        total = sum(len(p) for p in ids_parts)
        # fill (or, when both paths failed, replace) with the region's popular listings; a search with
        # enough hits is not diluted by listings that do not match it
        if total < (n if ctx.kind == "feed" else 2 * ctx.limit):
            if total == 0 and (query or (uvec is not None and np.any(uvec))):
                ctx.fallback("popular_in_region")
            ids = self.popular(ctx, state)
            ids_parts.append(ids)
            score_parts.append(np.zeros(len(ids), np.float32))
            kw_parts.append(np.zeros(len(ids), bool))
        ids = np.concatenate(ids_parts) if ids_parts else np.empty(0, np.int64)
        scores = np.concatenate(score_parts) if score_parts else np.empty(0, np.float32)
        kw = np.concatenate(kw_parts) if kw_parts else np.empty(0, bool)
        _, first = np.unique(ids, return_index=True)  # de-duplicate, keep the first (best) source
        first = np.sort(first)[:n]
        idx = mirror.index_of(ids[first])
        ok = idx >= 0
        xp = state.be.xp
        return CandidateBatch(xp=xp, idx=xp.asarray(idx[ok].astype(np.int32)),
                              retrieval_score=xp.asarray(scores[first][ok]), from_keyword=xp.asarray(kw[first][ok]),
                              alive=xp.ones(int(ok.sum()), dtype=xp.bool))

    @staticmethod
    def popular(ctx: RequestContext, state) -> np.ndarray:
        region = int(region_of(*ctx.geo)) if ctx.geo is not None else 0
        if "feature_store_slow" in ctx.fallbacks:
            return state.mirror.trending
        try:
            ids = state.store.popular(state.mirror.version, region)
            if len(ids):
                return ids
        except Exception as exc:
            log.warning("popular list unavailable: %s", exc)
        return state.mirror.trending
