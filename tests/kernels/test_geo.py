from __future__ import annotations

import numpy as np
import pytest

from kernels.geo import haversine_km

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
