from __future__ import annotations

import math

import numpy as np
import pytest

from kernels.filters import banned_seller_mask, category_ban_mask, distance_mask, in_stock_mask
from kernels.geo import haversine_km

BANGKOK = (13.7563, 100.5018)
CHIANG_MAI = (18.7883, 98.9853)


def test_in_stock_mask(xp):
    np.testing.assert_array_equal(
        np.asarray(in_stock_mask(xp.asarray([3, 0, 1, -1]))), [True, False, True, False]
    )
    np.testing.assert_array_equal(np.asarray(in_stock_mask(xp.asarray([True, False]))), [True, False])
    np.testing.assert_array_equal(np.asarray(in_stock_mask(xp.asarray([0.0, 0.5]))), [False, True])


def test_banned_seller_mask_matches_isin(xp):
    rng = np.random.default_rng(3)
    sellers = rng.integers(0, 500, size=2000)
    banned = np.unique(rng.integers(0, 500, size=40))
    got = np.asarray(banned_seller_mask(xp.asarray(sellers), xp.asarray(banned)))
    np.testing.assert_array_equal(got, ~np.isin(sellers, banned))
    assert got.sum() < len(sellers)  # some were banned


def test_banned_seller_mask_edges(xp):
    sellers = xp.asarray([0, 5, 9, 10])
    empty = xp.asarray(np.zeros(0, dtype=np.int64))
    assert np.asarray(banned_seller_mask(sellers, empty)).all()
    # ids below / above every banned id, and the first and last banned ids
    got = np.asarray(banned_seller_mask(sellers, xp.asarray([5, 10])))
    np.testing.assert_array_equal(got, [True, False, True, False])


def test_category_ban_mask_unsorted(xp):
    cat = xp.asarray([0, 1, 2, 3, 4, 2], dtype=xp.int32)
    got = np.asarray(category_ban_mask(cat, xp.asarray([3, 1], dtype=xp.int32)))
    np.testing.assert_array_equal(got, [True, False, True, False, True, True])


def test_distance_mask_is_inclusive_at_the_boundary(xp):
    item_lat = xp.asarray([CHIANG_MAI[0], BANGKOK[0]])
    item_lon = xp.asarray([CHIANG_MAI[1], BANGKOK[1]])
    exact = float(haversine_km(BANGKOK[0], BANGKOK[1], CHIANG_MAI[0], CHIANG_MAI[1], xp=np))
    keep, dist = distance_mask(BANGKOK[0], BANGKOK[1], item_lat, item_lon, exact, xp=xp)
    assert float(np.asarray(dist)[0]) == exact
    np.testing.assert_array_equal(np.asarray(keep), [True, True])
    below = math.nextafter(exact, 0.0)
    keep, _ = distance_mask(BANGKOK[0], BANGKOK[1], item_lat, item_lon, below, xp=xp)
    np.testing.assert_array_equal(np.asarray(keep), [False, True])


def test_distance_mask_default_radius_and_missing_location(xp):
    lat = xp.asarray([CHIANG_MAI[0], 13.80, float("nan")])
    lon = xp.asarray([CHIANG_MAI[1], 100.55, 100.0])
    keep, dist = distance_mask(BANGKOK[0], BANGKOK[1], lat, lon, 500.0, xp=xp)
    np.testing.assert_array_equal(np.asarray(keep), [False, True, False])
    assert np.asarray(dist)[0] == pytest.approx(585, abs=5)


def test_distance_mask_per_item_limit(xp):
    lat = xp.asarray([CHIANG_MAI[0], CHIANG_MAI[0]])
    lon = xp.asarray([CHIANG_MAI[1], CHIANG_MAI[1]])
    keep, _ = distance_mask(BANGKOK[0], BANGKOK[1], lat, lon, xp.asarray([100.0, 1000.0]), xp=xp)
    np.testing.assert_array_equal(np.asarray(keep), [False, True])


def test_widened_radius_doubles_until_it_holds_the_wanted_matches(xp):
    from kernels.filters import widened_radius_km

    d = xp.asarray([130.0, 90.0, float("nan"), 700.0, 260.0])
    assert widened_radius_km(d, 50.0, 1, xp=xp) == 100.0  # the nearest (90 km) needs one doubling
    assert widened_radius_km(d, 50.0, 2, xp=xp) == 200.0
    assert widened_radius_km(d, 50.0, 4, xp=xp) == 800.0  # 4 with a location; 700 km -> 800
    assert widened_radius_km(d, 50.0, 20, xp=xp) == 800.0  # the NaN (no location) never counts
    assert widened_radius_km(d, 1000.0, 3, xp=xp) == 1000.0  # already inside: the user's own radius
    assert widened_radius_km(xp.asarray([float("nan")]), 50.0, 5, xp=xp) == 50.0
