"""Seller trust score from its inputs, with the points of each rule (for the audit breakdown).

    >>> score, parts = seller_trust(verified, reports, age_days, xp=numpy)
"""

from __future__ import annotations

BASE_POINTS = 50.0
VERIFIED_POINTS = 10.0  # "+10 verified ID"
REPORT_POINTS = -5.0  # "-5 per report"
AGE_POINTS_PER_30D = 1.0  # "+1 per 30 days on JaiKod", capped
AGE_POINTS_CAP = 12.0
BANNED_POINTS = -100.0


def seller_trust(verified, reports, age_days, banned=None, xp=None):
    """(score in [0, 1], dict of rule -> points arrays). Score = clip(sum(points), 0, 100) / 100."""
    if xp is None:
        from array_api_compat import array_namespace

        xp = array_namespace(verified, reports, age_days)
    f = xp.float32
    parts = {
        "base": xp.full(xp.asarray(reports).shape, BASE_POINTS, dtype=f),
        "verified_id": xp.astype(xp.asarray(verified, dtype=xp.bool), f) * VERIFIED_POINTS,
        "reports": xp.asarray(reports, dtype=f) * REPORT_POINTS,
        "account_age": xp.clip(xp.floor(xp.asarray(age_days, dtype=f) / 30.0) * AGE_POINTS_PER_30D, 0.0,
                               AGE_POINTS_CAP),
    }
    if banned is not None:
        parts["banned"] = xp.astype(xp.asarray(banned, dtype=xp.bool), f) * BANNED_POINTS
    total = parts["base"] + parts["verified_id"] + parts["reports"] + parts["account_age"]
    if banned is not None:
        total = total + parts["banned"]
    return xp.astype(xp.clip(total, 0.0, 100.0) / 100.0, f), parts
