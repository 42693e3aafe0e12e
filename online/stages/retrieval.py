"""Stage 1, retrieval.

A **search** is answered from the keyword index alone (:class:`engines.search.index.SearchIndex`): the
query is understood once (segmentation, tags, synonyms, keyboard-layout and spelling fixes; the plan
is kept on ``ctx.query_plan`` for hydration's relevance features and for the response), listings must
hold every informative term, and each step of the fallback chain is named in ``fallbacks_used``
(``keyboard_layout_fixed``, ``fuzzy_match``, ``relaxed_to_rarest_term``, ``condition_only_query``). A
query that matches nothing answers ``no_match`` with **no items** — never the feed, never popular
listings. Only when the keyword index itself is down does a search fall back to the user's vector and
the region's popular listings (``keyword_index_down``, ``popular_in_region``).

A **feed** is vector search (user vector; faiss, or Milvus with the hard rules as a filter expression:
banned categories and sellers, the user's distance as a lat/lon box, so the pool comes back eligible), seasoned with keyword hits of the session's last
query, filled with the region's popular listings; merged and de-duplicated to at most
the retrieval pool (``n_candidates · retrieval_pool_factor``: the distance filter drops about half of a
nationwide pool, so the filter stage cuts the survivors to ``n_candidates`` and scoring runs over ~1,000
that pass the hard rules); each candidate remembers the path that found it (:class:`~online.candidates.Source`).
Vector index failing -> keyword only; both failing or empty -> popular listings of the user's region.
"""

from __future__ import annotations

import logging

import numpy as np

from engines.index import HardRules
from gpu_core.geo import region_of
from kernels.geo import bounding_box
from online.candidates import CandidateBatch, Fallback, RequestContext, Source

log = logging.getLogger(__name__)


class RetrievalStage:
    name = "retrieval"
    budget_ms = 3.0

    def run(self, ctx: RequestContext, batch: CandidateBatch | None, state) -> CandidateBatch:
        n = state.settings.n_candidates
        pool = self.pool_size(state.settings)
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
                if ctx.kind == "search":
                    return self.search(ctx, state, pool)
                kw = state.indexes.keyword  # the session's last query (its stored form) seasons the feed
                ids = kw.retrieve(kw.plan_recorded(query), n // 5).ids
                keyword_ok = True
                ids_parts.append(ids)
                src_parts.append(np.full(len(ids), Source.KEYWORD, np.int8))
            except Exception as exc:
                log.warning("keyword index failed: %s", exc)
                ctx.fallback(Fallback.KEYWORD_INDEX_DOWN)
        uvec = user.vector
        if uvec is not None and np.any(uvec):
            try:
                if state.indexes.vector is None:
                    raise RuntimeError(state.indexes.error or "vector index not loaded")
                index = state.indexes.vector
                ids, _ = index.search(uvec, pool, self.rules(ctx, state) if index.applies_rules else None)
                vector_ok = True
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
        # fill (or, when both paths failed, replace) with the region's popular listings
        if total < (n if ctx.kind == "feed" else 2 * ctx.limit):
            if total == 0 and (query or (uvec is not None and np.any(uvec))):
                ctx.fallback(Fallback.POPULAR_IN_REGION)
            ids = self.popular(ctx, state)
            ids_parts.append(ids)
            src_parts.append(np.full(len(ids), Source.POPULAR, np.int8))
        ids = np.concatenate(ids_parts) if ids_parts else np.empty(0, np.int64)
        src = np.concatenate(src_parts) if src_parts else np.empty(0, np.int8)
        _, first = np.unique(ids, return_index=True)  # de-duplicate, keep the first (best) source
        first = np.sort(first)[:pool]
        idx = state.mirror.index_of(ids[first])
        ok = idx >= 0
        return CandidateBatch.of(state.be.xp, idx[ok], src[first][ok])

    @staticmethod
    def rules(ctx: RequestContext, state) -> HardRules:
        """The hard rules an index can apply while it searches (Milvus): the admin bans and the user's
        distance as a box around the disc. The filter stage applies them exactly afterwards."""
        ov = state.overrides
        geo = ctx.user.geo
        box = bounding_box(geo[0], geo[1], ctx.user.max_distance_km) if geo is not None else None
        return HardRules(tuple(ov.banned_categories.tolist()), tuple(ov.banned_sellers.tolist()), box)

    @staticmethod
    def pool_size(settings) -> int:
        """How many candidates retrieval hands to the filters (which keep at most ``n_candidates``)."""
        return max(settings.n_candidates, int(round(settings.n_candidates * settings.retrieval_pool_factor)))

    @staticmethod
    def search(ctx: RequestContext, state, n: int) -> CandidateBatch:
        """A search's candidates: the keyword index's hits for the understood query, or none."""
        index = state.indexes.keyword
        plan = index.plan(ctx.query)
        ctx.query_plan = plan
        hits = index.retrieve(plan, n, min_hits=state.settings.search_min_hits)
        for step in hits.steps:
            ctx.fallback(Fallback(step))
        idx = state.mirror.index_of(hits.ids)
        ok = idx >= 0
        return CandidateBatch.of(state.be.xp, idx[ok], np.full(int(ok.sum()), Source.KEYWORD, np.int8))

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
