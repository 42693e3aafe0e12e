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
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from engines.index import HardRules
from gpu_core.geo import region_of
from kernels.geo import bounding_box
from online.candidates import CandidateBatch, Fallback, RequestContext, Source

log = logging.getLogger(__name__)
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _remote(index) -> bool:
    """Whether an index answers over the network (OpenSearch, Milvus): its calls wait, not compute."""
    return bool(getattr(index, "remote", False))


def _pool() -> ThreadPoolExecutor:
    """Threads for the feed's keyword call while the vector call runs (one per concurrent request)."""
    global _POOL
    if _POOL is None:
        with _POOL_LOCK:
            if _POOL is None:
                _POOL = ThreadPoolExecutor(max_workers=16, thread_name_prefix="retrieval")
    return _POOL


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
        seasoning = None  # the feed's keyword hits: (future or ids) of the session's last query
        uvec = user.vector
        wants_vector = uvec is not None and bool(np.any(uvec))
        if query:
            try:
                if state.indexes.keyword is None:
                    raise RuntimeError(state.indexes.error or "keyword index not loaded")
                if ctx.kind == "search":
                    return self.search(ctx, state, pool)
                kw = state.indexes.keyword  # the session's last query (its stored form) seasons the feed
                if wants_vector and (_remote(kw) or _remote(state.indexes.vector)):
                    # two network round trips (OpenSearch, Milvus): the keyword call runs beside the vector one
                    seasoning = _pool().submit(self.season, kw, query, n)
                else:
                    seasoning = self.season(kw, query, n)
            except Exception as exc:
                log.warning("keyword index failed: %s", exc)
                ctx.fallback(Fallback.KEYWORD_INDEX_DOWN)
        vector_ids = None
        if wants_vector:
            try:
                if state.indexes.vector is None:
                    raise RuntimeError(state.indexes.error or "vector index not loaded")
                index = state.indexes.vector
                vector_ids, _ = index.search(uvec, pool, self.rules(ctx, state) if index.applies_rules else None)
                vector_ok = True
            except Exception as exc:
                log.warning("vector index failed: %s", exc)
                ctx.fallback(Fallback.VECTOR_INDEX_DOWN)
                vector_failed = True
        if isinstance(seasoning, Future):
            try:
                seasoning = seasoning.result()
            except Exception as exc:
                log.warning("keyword index failed: %s", exc)
                ctx.fallback(Fallback.KEYWORD_INDEX_DOWN)
                seasoning = None
        if seasoning is not None:  # keyword hits first: the de-duplication keeps their source
            keyword_ok = True
            ids_parts.append(seasoning)
            src_parts.append(np.full(len(seasoning), Source.KEYWORD, np.int8))
        if vector_ids is not None:
            ids_parts.append(vector_ids)
            src_parts.append(np.full(len(vector_ids), Source.VECTOR, np.int8))
        if not wants_vector and not user.known:
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
    def season(kw, query: str, n: int) -> np.ndarray:
        """The feed's keyword hits for the session's last query (its stored form): n / 5 at most."""
        return kw.retrieve(kw.plan_recorded(query), n // 5).ids

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
