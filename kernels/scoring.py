"""Final score and top-k selection.

>>> s = final_score(p_ctr, p_cvr, trust, boosted, 0.5, 0.3, 0.2, 0.1)
>>> top = top_k_indices(s, 20, mask=keep)
"""

from __future__ import annotations

from typing import Any

from kernels._xp import get_xp


def final_score(
    p_ctr: Any,
    p_cvr: Any,
    seller_trust: Any,
    boosted: Any,
    w_ctr: float,
    w_cvr: float,
    w_trust: float,
    boost_multiplier: float,
    xp: Any = None,
) -> Any:
    """``FinalScore = pCTR*w_ctr + pCVR*w_cvr + SellerTrust*w_trust + boosted*boost_multiplier``.

    ``boosted`` may be boolean or numeric (0/1, or a boost strength); it is cast to the score dtype,
    which is the floating dtype of ``p_ctr`` (float32 stays float32).
    """
    xp = get_xp(p_ctr, p_cvr, seller_trust, boosted, xp=xp)
    p_ctr = xp.asarray(p_ctr)
    dtype = p_ctr.dtype if xp.isdtype(p_ctr.dtype, "real floating") else xp.float64
    p_ctr = xp.astype(p_ctr, dtype)
    p_cvr = xp.astype(xp.asarray(p_cvr), dtype)
    trust = xp.astype(xp.asarray(seller_trust), dtype)
    boost = xp.astype(xp.asarray(boosted), dtype)
    return p_ctr * w_ctr + p_cvr * w_cvr + trust * w_trust + boost * boost_multiplier


def relevance_tier(all_required: Any, coverage: Any, condition_match: Any, xp: Any = None) -> Any:
    """Relevance tier of a listing for a search (0..7, float32): ``4·all required terms matched +
    2·some matched + 1·every condition word matched``. FinalScore adds ``tier·gap`` with a gap larger than
    any score spread, so personalisation re-orders listings inside a tier but never lifts a listing
    that misses a query term above one that has them all. Every input is 0 for a feed (tier 0)."""
    xp = get_xp(all_required, coverage, condition_match, xp=xp)
    a = xp.astype(xp.asarray(all_required) > 0.5, xp.float32)
    c = xp.astype(xp.asarray(coverage) > 0, xp.float32)
    m = xp.astype(xp.asarray(condition_match) >= 1.0, xp.float32)
    return 4.0 * a + 2.0 * c + m


def top_k_indices(scores: Any, k: int, mask: Any = None, xp: Any = None) -> Any:
    """Indices (int64) of the ``k`` highest ``scores`` among ``mask == True``, best first.

    Ties keep index order (stable sort on the negated score). Fewer than ``k`` eligible entries give
    a shorter result. NaN scores rank last (they sort to the end on numpy, cupy and array-api-strict).
    """
    xp = get_xp(scores, mask, xp=xp)
    scores = xp.reshape(xp.asarray(scores), (-1,))
    if mask is None:
        cand = xp.arange(scores.shape[0], dtype=xp.int64)
        s = scores
    else:
        cand = xp.astype(xp.nonzero(xp.reshape(xp.asarray(mask), (-1,)))[0], xp.int64)
        s = xp.take(scores, cand)
    if not xp.isdtype(s.dtype, "real floating"):
        s = xp.astype(s, xp.float64)
    order = xp.argsort(-s, stable=True)
    k = max(0, min(int(k), order.shape[0]))
    return xp.take(cand, order[:k])
