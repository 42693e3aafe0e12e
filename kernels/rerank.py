"""Re-ranking: seller diversity (no long runs of one seller) and demotion of flagged items.

    >>> order = seller_run_limit(order, seller_idx, max_run=3)
    >>> order = demote_mask(order, fraud_score > 0.8)

Both take ``order`` (a ranked array of candidate indices, best first) and a per-candidate array
indexed by candidate index (``seller[order[i]]`` is the seller at rank ``i``), and return a new order
that is a permutation of ``order``.
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from typing import Any

import numpy as np

from kernels._xp import get_xp, host_list


def _max_run_exceeded(ranked_seller: Any, max_run: int, xp: Any) -> bool:
    """Vectorised check: does any seller appear more than ``max_run`` times in a row?"""
    n = ranked_seller.shape[0]
    if n <= max_run:
        return False
    same = xp.astype(ranked_seller[1:] == ranked_seller[:-1], xp.int32)  # n-1 "equals next" flags
    cs = xp.cumulative_sum(same, include_initial=True)
    # a run of max_run+1 items = max_run consecutive "equals next" flags
    window = cs[max_run:] - cs[:-max_run]
    return bool(xp.any(window >= max_run))


def _greedy_run_limit(sellers: list[int], max_run: int, fixed: dict[int, int] | None = None,
                      length: int | None = None) -> list[int]:
    """Positions (into ``sellers``, the pool in rank order) of the items that fill the re-ranked list.

    ``fixed`` maps 0-based positions of the final list to the seller of an item pinned there (the
    sponsored slots); the pool fills every other position, up to ``length`` positions in all
    (default: the whole pool plus the pinned items). Runs are counted over the whole list, pinned
    items included.

    At each free position take the best-ranked remaining item whose seller does not make a run
    longer than ``max_run`` with the items before it and the pinned items right after it, and that
    leaves the rest arrangeable. With remaining count ``c_j`` per seller, ``N`` items left, and the
    current run ``r`` of seller ``s``, the rest is arrangeable iff ``c_j <= m*(N - c_j + 1)`` for every
    ``j != s`` and ``c_s <= m*(N - c_s) + m - r`` (only the most frequent seller can bind). So when the
    most frequent remaining seller ``d`` satisfies ``c_d > m*(N - c_d)``, placing anything but ``d``
    breaks feasibility, and ``d``'s best item is taken. Without pinned items this yields the
    lexicographically best (by original rank) sequence without violations whenever one exists. When
    every remaining seller is blocked, the best remaining item is taken (a violation nobody can avoid).
    """
    m = max_run
    fixed = dict(fixed or {})
    n = len(sellers)
    total = n + len(fixed) if length is None else length
    queues: dict[int, deque[int]] = {}
    for pos, s in enumerate(sellers):
        queues.setdefault(s, deque()).append(pos)
    counts = Counter(sellers)
    heads = [(q[0], s) for s, q in queues.items()]  # best remaining item per seller
    heapq.heapify(heads)
    by_count = [(-c, s) for s, c in counts.items()]  # lazy max-heap of remaining counts
    heapq.heapify(by_count)

    out: list[int] = []
    last, run, left = None, 0, n

    def step(s: int) -> None:
        nonlocal last, run
        run = run + 1 if s == last else 1
        last = s

    def pop_head() -> tuple[int, int] | None:
        """Best remaining (position, seller), skipping stale heap entries; None when none is left."""
        while heads:
            pos, s = heapq.heappop(heads)
            q = queues[s]
            if q and q[0] == pos:
                return pos, s
        return None

    def take(s: int) -> None:
        nonlocal left
        q = queues[s]
        out.append(q.popleft())
        counts[s] -= 1
        left -= 1
        step(s)
        if q:
            heapq.heappush(heads, (q[0], s))
            heapq.heappush(by_count, (-counts[s], s))

    def blocked_at(i: int) -> set[int]:
        """Sellers that would make a run longer than ``m`` at free position ``i`` (the run before it
        plus the pinned items of one seller right after it)."""
        t, a, j = None, 0, i + 1
        while j in fixed and (t is None or fixed[j] == t):
            t, a, j = fixed[j], a + 1, j + 1
        out_: set[int] = set()
        for s in {last, t} - {None}:
            if (run if s == last else 0) + 1 + (a if s == t else 0) > m:
                out_.add(s)
        return out_

    i = 0
    while i < total and (left or i in fixed):
        if i in fixed:
            step(fixed[i])
            i += 1
            continue
        while -by_count[0][0] != counts[by_count[0][1]]:  # drop stale count entries
            heapq.heappop(by_count)
        c_d, d = -by_count[0][0], by_count[0][1]
        blocked = blocked_at(i)
        if d not in blocked and c_d > m * (left - c_d):
            take(d)  # only d keeps the rest arrangeable (its old head entry goes stale)
            i += 1
            continue
        popped = [pop_head()]
        while popped[-1][1] in blocked and len(popped) <= len(blocked):
            nxt = pop_head()
            if nxt is None:
                break
            popped.append(nxt)
        choice = next((p for p in popped if p[1] not in blocked), popped[0])
        for p in popped:
            if p is not choice:
                heapq.heappush(heads, p)
        heapq.heappush(heads, choice)  # take() pops it from its queue and refreshes the heap
        take(choice[1])
        i += 1
    return out


def seller_run_limit(order: Any, seller: Any, max_run: int = 3, xp: Any = None, *,
                     fixed: dict[int, int] | None = None, length: int | None = None) -> Any:
    """Re-rank ``order`` so that no more than ``max_run`` consecutive items share a seller.

    ``seller`` is indexed by candidate index (``seller[order[i]]``). The ranking changes as little
    as possible: greedily, each position takes the best remaining item that does not extend a run
    beyond ``max_run`` and keeps the rest arrangeable (see :func:`_greedy_run_limit`); the result is
    the lexicographically best-ranked violation-free order when one exists, so the top item stays
    first whenever some violation-free order starts with it.

    ``fixed`` (0-based position -> seller) pins items of the final list, the sponsored slots of the
    polish stage: the result then lists the candidates that fill the *other* positions, in order, so
    that the whole list, pinned items included, keeps the rule (``length`` positions in all). The
    same kernel serves re-rank (nothing pinned) and polish (sponsored items pinned), so the served
    list and the re-ranked one follow one rule.

    Cost and device: the check "is there any run > max_run?" is vectorised on ``xp``; an order that
    passes it is returned unchanged without leaving the device. Otherwise the greedy pass is a Python
    loop over the positions (O(n log n), n <= ~1000 candidates at request time) on host copies of
    ``order`` and the ranked sellers (``cupy`` -> host -> ``cupy`` costs two small transfers); the
    result is returned on ``xp`` with ``order``'s dtype.
    """
    xp = get_xp(order, seller, xp=xp)
    order = xp.reshape(xp.asarray(order), (-1,))
    if max_run < 1:
        raise ValueError(f"max_run must be >= 1, got {max_run}")
    ranked_seller = xp.take(xp.reshape(xp.asarray(seller), (-1,)), xp.astype(order, xp.int64))
    if fixed:
        n_free = (order.shape[0] if length is None else max(0, length - len(fixed)))
        merged = _merge_fixed(host_list(ranked_seller)[:n_free], fixed, length)
        if not _max_run_exceeded(np.asarray(merged, dtype=np.int64), max_run, np):
            return order
    elif not _max_run_exceeded(ranked_seller, max_run, xp):
        return order
    host_sellers = host_list(ranked_seller)
    positions = _greedy_run_limit(host_sellers, max_run, fixed, length)
    if fixed:  # the fill of the free positions first, then the rest of the pool in rank order
        used = set(positions)
        positions = positions + [p for p in range(len(host_sellers)) if p not in used]
    idx = xp.asarray(np.asarray(positions, dtype=np.int64))
    return xp.take(order, idx)


def _merge_fixed(free_sellers: list[int], fixed: dict[int, int], length: int | None) -> list[int]:
    """The sellers of the final list: pinned sellers at their positions, ``free_sellers`` in between."""
    total = len(free_sellers) + len(fixed) if length is None else length
    out, it = [], iter(free_sellers)
    for i in range(total):
        if i in fixed:
            out.append(fixed[i])
        else:
            nxt = next(it, None)
            if nxt is None:
                break
            out.append(nxt)
    return out


def demote_mask(order: Any, demote: Any, xp: Any = None) -> Any:
    """Move items flagged in ``demote`` (indexed by candidate index) to the end of ``order``.

    Relative order is preserved among kept items and among demoted items (stable partition).
    """
    xp = get_xp(order, demote, xp=xp)
    order = xp.reshape(xp.asarray(order), (-1,))
    flags = xp.take(xp.reshape(xp.asarray(demote), (-1,)), xp.astype(order, xp.int64))
    key = xp.astype(flags != 0, xp.int8) if not xp.isdtype(flags.dtype, "bool") else xp.astype(flags, xp.int8)
    return xp.take(order, xp.argsort(key, stable=True))
