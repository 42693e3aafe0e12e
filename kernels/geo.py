"""Great-circle distance, vectorised over any array-API namespace.

    >>> haversine_km(13.75, 100.50, 18.79, 98.99, xp=numpy)  # Bangkok -> Chiang Mai, ~580 km
"""

from __future__ import annotations

import math

EARTH_RADIUS_KM = 6371.0088


def haversine_km(lat1, lon1, lat2, lon2, xp):
    """Distance in km between (lat1, lon1) and (lat2, lon2), broadcasting like ``xp`` does."""
    r = math.pi / 180.0
    lat1 = xp.asarray(lat1) * r
    lat2 = xp.asarray(lat2) * r
    dlat = lat2 - lat1
    dlon = (xp.asarray(lon2) - xp.asarray(lon1)) * r
    a = xp.sin(dlat / 2.0) ** 2 + xp.cos(lat1) * xp.cos(lat2) * xp.sin(dlon / 2.0) ** 2
    a = xp.clip(a, 0.0, 1.0)
    return 2.0 * EARTH_RADIUS_KM * xp.asin(xp.sqrt(a))
