"""Stage 1, retrieval: faiss vector search (user vector) + BM25 keyword search (query), merged and
de-duplicated to at most ``n_candidates``; each candidate remembers the path that found it
(:class:`~online.candidates.Source`). Vector index failing -> keyword only; both failing or empty ->
popular listings of the user's region (the snapshot's list, else the in-process one)."""

from __future__ import annotations

import logging

import numpy as np

from gpu_core.geo import region_of
from online.candidates import CandidateBatch, Fallback, RequestContext, Source

log = logging.getLogger(__name__)


class RetrievalStage:
    name = "retrieval"
    budget_ms = 3.0

    def run(self, ctx: RequestContext, batch: CandidateBatch | None, state) -> CandidateBatch:
        n = state.settings.n_candidates
        ids_parts: list[np.ndarray] = []
        src_parts: list[np.ndarray] = []
        user = ctx.user
        query = ctx.query or user.session_query
        vector_ok = keyword_ok = False
        vector_failed = False
        if query:
            try:
                if state.indexes.keyword is None:
                    raise RuntimeError(state.indexes.error or "keyword index not loaded")
                ids, _ = state.indexes.keyword.search(query, n)
                keyword_ok = True
                if ctx.kind == "feed":  # the session's last query only seasons the feed
                    ids = ids[: n // 5]
                ids_parts.append(ids)
                src_parts.append(np.full(len(ids), Source.KEYWORD, np.int8))
            except Exception as exc:
                log.warning("keyword index failed: %s", exc)
                ctx.fallback(Fallback.KEYWORD_INDEX_DOWN)
        uvec = user.vector
        # a search is answered from its keyword hits; the user's vector only widens a search with few hits
        narrow = ctx.kind == "search" and sum(len(p) for p in ids_parts) >= 2 * ctx.limit
        if uvec is not None and np.any(uvec):
            try:
                if state.indexes.vector is None:
                    raise RuntimeError(state.indexes.error or "vector index not loaded")
                ids, _ = state.indexes.vector.search(uvec, n)
                vector_ok = True
                if narrow:
                    ids = ids[:0]
                ids_parts.append(ids)
                src_parts.append(np.full(len(ids), Source.VECTOR, np.int8))
            except Exception as exc:
                log.warning("vector index failed: %s", exc)
                ctx.fallback(Fallback.VECTOR_INDEX_DOWN)
                vector_failed = True
        elif not user.known:
            ctx.fallback(Fallback.COLD_START)
        if vector_failed and keyword_ok and not vector_ok:
            ctx.fallback(Fallback.KEYWORD_ONLY)
        total = sum(len(p) for p in ids_parts)
        # fill (or, when both paths failed, replace) with the region's popular listings; a search with
        # enough hits is not diluted by listings that do not match it
        if total < (n if ctx.kind == "feed" else 2 * ctx.limit):
            if total == 0 and (query or (uvec is not None and np.any(uvec))):
                ctx.fallback(Fallback.POPULAR_IN_REGION)
            ids = self.popular(ctx, state)
            ids_parts.append(ids)
            src_parts.append(np.full(len(ids), Source.POPULAR, np.int8))
        ids = np.concatenate(ids_parts) if ids_parts else np.empty(0, np.int64)
        src = np.concatenate(src_parts) if src_parts else np.empty(0, np.int8)
        _, first = np.unique(ids, return_index=True)  # de-duplicate, keep the first (best) source
        first = np.sort(first)[:n]
        idx = state.mirror.index_of(ids[first])
        ok = idx >= 0
        return CandidateBatch.of(state.be.xp, idx[ok], src[first][ok])

    @staticmethod
    def popular(ctx: RequestContext, state) -> np.ndarray:
        region = int(region_of(*ctx.user.geo)) if ctx.user.geo is not None else 0
        if not ctx.feature_store_ok:
            return state.mirror.trending
        try:
            ids = state.store.popular(state.mirror.version, region)
            if len(ids):
                return ids
        except Exception as exc:
            log.warning("popular list unavailable: %s", exc)
        return state.mirror.trending
