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


def bounding_box(lat: float, lon: float, km: float, margin_deg: float = 1e-4) -> tuple[float, float, float, float]:
    """``(lat_min, lat_max, lon_min, lon_max)`` in degrees holding every point within ``km`` of (lat, lon):
    a superset of the :func:`haversine_km` disc (a cheap pre-filter, e.g. a vector database's filter
    expression; the exact distance rule still runs after it). Latitude spans ``km / R`` radians; longitude
    ``km / (R cos φ)`` with φ the box's latitude farthest from the equator (wider than the disc's true
    extent). A box that reaches a pole or crosses the ±180° meridian leaves longitude unbounded
    (``-180, 180``). ``margin_deg`` (~11 m) covers float32 coordinates and rounding."""
    dlat = math.degrees(km / EARTH_RADIUS_KM) + margin_deg
    lat_min, lat_max = lat - dlat, lat + dlat
    far = max(abs(lat_min), abs(lat_max))
    if far >= 90.0 or km / EARTH_RADIUS_KM >= math.pi / 2:
        return max(lat_min, -90.0), min(lat_max, 90.0), -180.0, 180.0
    dlon = math.degrees(km / (EARTH_RADIUS_KM * math.cos(math.radians(far)))) + margin_deg
    if lon - dlon < -180.0 or lon + dlon > 180.0:
        return lat_min, lat_max, -180.0, 180.0
    return lat_min, lat_max, lon - dlon, lon + dlon
