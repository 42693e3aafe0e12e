"""Candidate filter masks (True = keep), vectorised over any array-API namespace.

>>> keep = in_stock_mask(stock) & banned_seller_mask(seller_idx, banned_sorted)
>>> near, dist_km = distance_mask(u_lat, u_lon, item_lat, item_lon, max_km=500.0)
>>> km = widened_radius_km(dist_km, 50.0, want=20)   # a search with every match beyond 50 km
"""

from __future__ import annotations

from typing import Any

from kernels._xp import get_xp, isin_sorted
from kernels.geo import haversine_km


def in_stock_mask(stock: Any, xp: Any = None) -> Any:
    """Keep listings in stock: a boolean ``stock`` is returned as is, a numeric one as ``stock > 0``."""
    xp = get_xp(stock, xp=xp)
    stock = xp.asarray(stock)
    if xp.isdtype(stock.dtype, "bool"):
        return stock
    return stock > 0


def banned_seller_mask(seller_idx: Any, banned_sellers_sorted: Any, xp: Any = None) -> Any:
    """Keep candidates whose seller id is not in ``banned_sellers_sorted`` (1-D, ascending ints).

    Binary search (``searchsorted``) per candidate: O(n log b), portable to every array-API namespace.
    An unsorted ban list gives wrong answers; sort it once when the ban list is loaded.
    """
    xp = get_xp(seller_idx, banned_sellers_sorted, xp=xp)
    seller_idx = xp.asarray(seller_idx)
    banned = xp.asarray(banned_sellers_sorted)
    return xp.logical_not(isin_sorted(seller_idx, xp.reshape(banned, (-1,)), xp))


def distance_mask(
    user_lat: Any, user_lon: Any, item_lat: Any, item_lon: Any, max_km: Any, xp: Any = None
) -> tuple[Any, Any]:
    """``(keep, distance_km)``: keep a listing when its great-circle distance is ``<= max_km``.

    The comparison is inclusive (a listing exactly ``max_km`` away is kept). The user's position and
    ``max_km`` broadcast against the item arrays. A NaN coordinate gives a NaN distance, which fails
    the comparison: listings without a location are dropped by this filter.
    """
    xp = get_xp(user_lat, user_lon, item_lat, item_lon, max_km, xp=xp)
    dist = haversine_km(user_lat, user_lon, xp.asarray(item_lat), xp.asarray(item_lon), xp=xp)
    limit = max_km if isinstance(max_km, int | float) else xp.asarray(max_km)
    return dist <= limit, dist


def widened_radius_km(distance_km: Any, max_km: float, want: int, xp: Any = None) -> float:
    """The smallest radius ``max_km * 2**k`` (k >= 0) holding at least ``min(want, listings with a
    location)`` of the listings at ``distance_km``: how far a search whose every match lies beyond the
    user's distance widens it (a doubling step is a radius a client can say: "within 400 km"). NaN
    distances (no location) never count; none with a location -> ``max_km``."""
    xp = get_xp(distance_km, xp=xp)
    d = xp.reshape(xp.asarray(distance_km), (-1,))
    d = xp.sort(d[~xp.isnan(d)])
    k = min(int(want), int(d.shape[0]))
    base = max(float(max_km), 1.0)
    if k <= 0:
        return float(max_km)
    need = float(d[k - 1])
    r = base
    while r < need:
        r *= 2.0
    return r


def category_ban_mask(category: Any, banned_categories: Any, xp: Any = None) -> Any:
    """Keep candidates whose category code is not in ``banned_categories`` (any order)."""
    xp = get_xp(category, banned_categories, xp=xp)
    category = xp.asarray(category)
    banned = xp.sort(xp.reshape(xp.asarray(banned_categories), (-1,)))
    return xp.logical_not(isin_sorted(category, banned, xp))
