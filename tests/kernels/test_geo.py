from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.geo import EARTH_RADIUS_KM, bounding_box, haversine_km

BANGKOK = (13.7563, 100.5018)
CHIANG_MAI = (18.7883, 98.9853)
PHUKET = (7.8804, 98.3923)


def test_bangkok_to_chiang_mai(xp):
    d = haversine_km(
        xp.asarray(BANGKOK[0]),
        xp.asarray(BANGKOK[1]),
        xp.asarray(CHIANG_MAI[0]),
        xp.asarray(CHIANG_MAI[1]),
        xp=xp,
    )
    assert 580.0 <= float(d) <= 590.0


def test_symmetric_and_zero(xp):
    lat = xp.asarray([BANGKOK[0], CHIANG_MAI[0], PHUKET[0]])
    lon = xp.asarray([BANGKOK[1], CHIANG_MAI[1], PHUKET[1]])
    ab = np.asarray(haversine_km(lat[:, None], lon[:, None], lat[None, :], lon[None, :], xp=xp))
    assert ab.shape == (3, 3)
    np.testing.assert_allclose(ab, ab.T, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(np.diag(ab), 0.0)
    assert (ab[~np.eye(3, dtype=bool)] > 100.0).all()


def test_antipodes_are_half_circumference(xp):
    d = float(haversine_km(xp.asarray(0.0), xp.asarray(0.0), xp.asarray(0.0), xp.asarray(180.0), xp=xp))
    assert d == pytest.approx(np.pi * 6371.0088, rel=1e-12)


@settings(max_examples=300, deadline=None)
@given(lat=st.floats(-89.0, 89.0), lon=st.floats(-179.9, 179.9), km=st.floats(0.0, 3000.0),
       bearing=st.floats(0.0, 360.0), frac=st.floats(0.0, 1.0))
def test_bounding_box_holds_every_point_of_the_disc(lat, lon, km, bearing, frac):
    """A point at distance <= km (any bearing, float32 as the mirror stores it) lies inside the box."""
    d = km * frac / EARTH_RADIUS_KM
    p1, l1, b = np.radians(lat), np.radians(lon), np.radians(bearing)
    p2 = np.arcsin(np.sin(p1) * np.cos(d) + np.cos(p1) * np.sin(d) * np.cos(b))
    l2 = l1 + np.arctan2(np.sin(b) * np.sin(d) * np.cos(p1), np.cos(d) - np.sin(p1) * np.sin(p2))
    plat = np.float32(np.degrees(p2))
    plon = np.float32((np.degrees(l2) + 540.0) % 360.0 - 180.0)
    if haversine_km(lat, lon, float(plat), float(plon), xp=np) > km:  # float32 rounding moved it outside
        return
    lat_min, lat_max, lon_min, lon_max = bounding_box(lat, lon, km)
    assert lat_min <= plat <= lat_max and lon_min <= plon <= lon_max


def test_bounding_box_is_tight_enough_to_filter():
    """Bangkok, 500 km: Chiang Mai (~580 km) falls outside the latitude span; a box, not the whole country."""
    lat_min, lat_max, lon_min, lon_max = bounding_box(*BANGKOK, 500.0)
    assert lat_max < CHIANG_MAI[0] and lat_max - lat_min < 9.1 and lon_max - lon_min < 9.5
    assert bounding_box(0.0, 179.0, 500.0)[2:] == (-180.0, 180.0)  # crosses the antimeridian: lon unbounded
    assert bounding_box(88.0, 0.0, 500.0)[2:] == (-180.0, 180.0)  # reaches the pole
