"""Sponsored slot injection at fixed 1-based positions.

>>> ids, is_sponsored = inject_slots(organic_ids, sponsored_ids, slots=(4, 12), n=20)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kernels._xp import get_xp, isin_sorted


def _first_occurrences(a: Any, xp: Any) -> Any:
    """``a`` without repeated values, first occurrences kept in order (small 1-D arrays)."""
    n = a.shape[0]
    if n < 2:
        return a
    eq = xp.astype(a[:, None] == a[None, :], xp.int8)
    dup = xp.any(xp.tril(eq, k=-1) != 0, axis=1)  # equals an earlier entry
    return a[xp.logical_not(dup)]


def inject_slots(
    organic: Any, sponsored: Any, slots: Sequence[int] = (4, 12), n: int = 20, xp: Any = None
) -> tuple[Any, Any]:
    """``(ids, is_sponsored)``: the final list of at most ``n`` ids with sponsored ids at fixed slots.

    - ``organic``: ranked ids, best first. ``sponsored``: ranked sponsored ids; the i-th distinct
      sponsored id goes to the i-th slot (slots are 1-based positions, taken in ascending order).
    - A sponsored id placed in a slot is removed from the organic list (no duplicates); organic order
      is otherwise kept. A sponsored id that is not placed stays wherever it is organically.
    - Fewer sponsored ids than slots: the unused slots are filled by organic items.
    - A slot beyond ``n``, or beyond the end of the list (not enough organic items to reach it), is
      skipped. Skipping a slot puts its sponsored id back into the organic pool, which can only
      lengthen the list; slots are dropped from the last one until every kept slot is reachable,
      so each placed sponsored id sits exactly at its slot position.
    """
    xp = get_xp(organic, sponsored, xp=xp)
    organic = xp.reshape(xp.asarray(organic), (-1,))
    sponsored = xp.astype(xp.reshape(xp.asarray(sponsored), (-1,)), organic.dtype)
    positions = sorted({int(p) for p in slots if 1 <= int(p) <= n})
    sponsored = _first_occurrences(sponsored, xp)
    used = positions[: min(len(positions), sponsored.shape[0])]

    while True:  # at most len(slots) rounds
        placed = sponsored[: len(used)]
        keep = xp.logical_not(isin_sorted(organic, xp.sort(placed), xp))
        org = organic[keep]
        n_org = int(xp.sum(xp.astype(keep, xp.int64)))
        # slot j (0-based in `used`) is reachable iff the organic items before it exist
        reachable = [p - 1 - j <= n_org for j, p in enumerate(used)]
        if all(reachable):
            break
        used = used[: reachable.index(False)]

    length = min(n, n_org + len(used))
    pos = xp.arange(length, dtype=xp.int64)
    is_sp = xp.zeros(length, dtype=xp.bool)
    sp_val = xp.zeros(length, dtype=organic.dtype)
    for j, p in enumerate(used):
        hit = pos == (p - 1)
        is_sp = xp.logical_or(is_sp, hit)
        sp_val = xp.where(hit, placed[j], sp_val)
    # organic rank at each non-slot position = position - number of slots before it
    slots_before = xp.cumulative_sum(xp.astype(is_sp, xp.int64), include_initial=True)[:-1]
    org_idx = xp.clip(pos - slots_before, 0, max(n_org - 1, 0))
    org_val = xp.take(org, org_idx) if n_org else xp.zeros(length, dtype=organic.dtype)
    return xp.where(is_sp, sp_val, org_val), is_sp
