"""Thai geography shared by the world generator, the batch jobs and the service.

Regions are the nearest of these cities; "popular in your region" lists are keyed by region index.
"""

from __future__ import annotations

import numpy as np

# (name, lat, lon, relative population weight)
CITIES: tuple[tuple[str, float, float, float], ...] = (
    ("Bangkok", 13.7563, 100.5018, 10.0),
    ("Chiang Mai", 18.7883, 98.9853, 2.0),
    ("Phuket", 7.8804, 98.3923, 1.2),
    ("Khon Kaen", 16.4419, 102.8360, 1.2),
    ("Nakhon Ratchasima", 14.9799, 102.0978, 1.3),
    ("Hat Yai", 7.0084, 100.4747, 1.1),
    ("Udon Thani", 17.4138, 102.7870, 0.9),
    ("Pattaya", 12.9236, 100.8825, 1.0),
    ("Chiang Rai", 19.9105, 99.8406, 0.6),
    ("Surat Thani", 9.1382, 99.3215, 0.6),
    ("Ubon Ratchathani", 15.2287, 104.8564, 0.7),
    ("Nakhon Si Thammarat", 8.4304, 99.9631, 0.6),
)
CITY_LAT = np.array([c[1] for c in CITIES], dtype=np.float64)
CITY_LON = np.array([c[2] for c in CITIES], dtype=np.float64)
CITY_WEIGHT = np.array([c[3] for c in CITIES], dtype=np.float64) / sum(c[3] for c in CITIES)
N_REGIONS = len(CITIES)


def region_of(lat, lon) -> np.ndarray:
    """Index of the nearest city (equirectangular distance is enough to pick the nearest)."""
    lat = np.asarray(lat, dtype=np.float64)[..., None]
    lon = np.asarray(lon, dtype=np.float64)[..., None]
    dx = (lon - CITY_LON) * np.cos(np.radians(lat))
    dy = lat - CITY_LAT
    return np.argmin(dx * dx + dy * dy, axis=-1).astype(np.int32)


def valid_latlon(lat: float, lon: float) -> bool:
    return -90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0
