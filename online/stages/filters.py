"""Hard-rule filters: stage 2 (before hydration) drops banned sellers and categories (admin overrides)
and listings farther than the user's max distance (haversine, vectorised; exact at the boundary), then
keeps the first ``n_candidates`` survivors in retrieval order (retrieval returns a wider pool so that
~``n_candidates`` pass the hard rules; force-boosted candidates are never cut: ``beyond_n_candidates``); the
stock filter (after hydration, which reads the real-time stock flag) drops sold listings.

A search is never emptied silently: when every match lies beyond the user's distance, the radius doubles
until it holds ``limit`` matches (:func:`kernels.filters.widened_radius_km`; ``widened_radius``, the radius
in the response's ``widened_radius_km``, each item keeps its ``distance_km``); when the other hard rules
(banned seller or category, sold) remove every match, the answer has no items and says
``matches_filtered`` (``no_match`` is for a query nothing matches)."""

from __future__ import annotations

from kernels.filters import (
    banned_seller_mask,
    category_ban_mask,
    distance_mask,
    in_stock_mask,
    widened_radius_km,
)
from online.candidates import CandidateBatch, Fallback, RequestContext, Source


def _emptied(ctx: RequestContext, before: int, batch: CandidateBatch) -> None:
    """A search that had matches and has none left after a hard rule says so (``matches_filtered``)."""
    if ctx.kind == "search" and before and not batch.n_alive():
        ctx.fallback(Fallback.MATCHES_FILTERED)


class FilterStage:
    name = "filters"
    budget_ms = 1.0

    def run(self, ctx: RequestContext, batch: CandidateBatch, state) -> CandidateBatch:
        xp = state.be.xp
        m = state.mirror
        before = batch.n_alive()
        cat = xp.take(m.cols["category"], batch.idx, axis=0)
        seller = xp.take(m.seller_dev, batch.idx, axis=0)
        ov = state.overrides
        if len(ov.banned_sellers):
            batch.keep(banned_seller_mask(seller, xp.asarray(ov.banned_sellers), xp=xp), "banned_seller", ctx)
        if len(ov.banned_categories):
            batch.keep(category_ban_mask(xp.astype(cat, xp.int32), xp.asarray(ov.banned_categories), xp=xp),
                       "banned_category", ctx)
        geo = ctx.user.geo
        if geo is not None:
            # float64: float32 radians are off by ~1e-8 rad (~6 cm), enough to flip a listing at the boundary
            ll = xp.astype(xp.take(m.cols["latlong"], batch.idx, axis=0), xp.float64)
            max_km = ctx.user.max_distance_km
            mask, dist = distance_mask(geo[0], geo[1], ll[:, 0], ll[:, 1], max_km, xp=xp)
            if ctx.kind == "search" and batch.n_alive() and not bool(xp.any(mask & batch.alive)):
                km = widened_radius_km(dist[batch.alive], max_km, ctx.limit, xp=xp)
                mask = dist <= km
                ctx.widened_radius_km = km
                ctx.fallback(Fallback.WIDENED_RADIUS)
            batch.keep(mask, "too_far", ctx)
        n = state.settings.n_candidates
        if batch.n_alive() > n:
            boosted = batch.source == int(Source.BOOSTED)
            rank = xp.cumsum(xp.astype(batch.alive & ~boosted, xp.int32))  # 1-based among retrieved survivors
            batch.keep(boosted | (rank <= n), "beyond_n_candidates", ctx)
        _emptied(ctx, before, batch)
        batch.compact()
        return batch


class StockFilterStage:
    name = "stock"
    budget_ms = 0.5

    def run(self, ctx: RequestContext, batch: CandidateBatch, state) -> CandidateBatch:
        if batch.cols is None:  # not hydrated (feature store over budget): no real-time stock to check
            return batch
        before = batch.n_alive()
        batch.keep(in_stock_mask(batch.cols["stock_status"], xp=state.be.xp), "sold", ctx)
        _emptied(ctx, before, batch)
        batch.compact()
        return batch
