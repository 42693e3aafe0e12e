"""Seller trust points and score, on numpy and array-api-strict."""

from __future__ import annotations

import numpy as np

from kernels.trust import seller_trust


def test_points_and_score(xp):
    verified = xp.asarray([True, False, True, False])
    reports = xp.asarray([0, 2, 1, 30])
    age_days = xp.asarray([400.0, 10.0, 65.0, 1000.0])
    banned = xp.asarray([False, False, True, False])
    score, parts = seller_trust(verified, reports, age_days, banned, xp=xp)
    np.testing.assert_allclose(np.asarray(parts["verified_id"]), [10, 0, 10, 0])
    np.testing.assert_allclose(np.asarray(parts["reports"]), [0, -10, -5, -150])
    np.testing.assert_allclose(np.asarray(parts["account_age"]), [12, 0, 2, 12])  # +1 per 30 days, capped at 12
    np.testing.assert_allclose(np.asarray(score), [0.72, 0.40, 0.0, 0.0], atol=1e-6)
    assert float(np.min(np.asarray(score))) >= 0.0 and float(np.max(np.asarray(score))) <= 1.0


def test_without_banned_column(xp):
    score, parts = seller_trust(xp.asarray([True]), xp.asarray([0]), xp.asarray([0.0]), xp=xp)
    assert "banned" not in parts
    np.testing.assert_allclose(np.asarray(score), [0.6], atol=1e-6)
