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

from kernels._xp import get_xp, to_host


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


def _greedy_run_limit(sellers: list[int], max_run: int) -> list[int]:
    """Positions (into ``sellers``, which is in rank order) of the re-ranked list.

    At each position take the best-ranked remaining item that (a) does not extend its seller's run
    beyond ``max_run`` and (b) leaves the rest arrangeable without a violation. With remaining count
    ``c_j`` per seller, ``N`` items left, and the current run ``r`` of seller ``s``, the rest is
    arrangeable iff ``c_j <= m*(N - c_j + 1)`` for every ``j != s`` and ``c_s <= m*(N - c_s) + m - r``
    (only the most frequent seller can bind). So (b) reduces to: when the most frequent remaining
    seller ``d`` satisfies ``c_d > m*(N - c_d)``, placing anything but ``d`` breaks feasibility, and
    ``d``'s best item is taken. This yields the lexicographically best (by original rank) sequence
    without violations whenever one exists. When none exists, the rule degrades to plain greedy and,
    once only the blocked seller's items remain, they are appended in rank order.
    """
    m = max_run
    n = len(sellers)
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

    def pop_head() -> tuple[int, int]:
        """Best remaining (position, seller), skipping stale heap entries."""
        while True:
            pos, s = heapq.heappop(heads)
            q = queues[s]
            if q and q[0] == pos:
                return pos, s

    def take(s: int) -> None:
        nonlocal last, run, left
        q = queues[s]
        out.append(q.popleft())
        counts[s] -= 1
        left -= 1
        run = run + 1 if s == last else 1
        last = s
        if q:
            heapq.heappush(heads, (q[0], s))
            heapq.heappush(by_count, (-counts[s], s))

    while left:
        while -by_count[0][0] != counts[by_count[0][1]]:  # drop stale count entries
            heapq.heappop(by_count)
        c_d, d = -by_count[0][0], by_count[0][1]
        blocked = last if run >= m else None
        if d != blocked and c_d > m * (left - c_d):
            take(d)  # only d keeps the rest arrangeable (its old head entry goes stale)
            continue
        pos, s = pop_head()
        if s == blocked:
            if left == len(queues[s]):  # only the blocked seller is left: append in rank order
                out.extend(queues[s])
                return out
            _, s2 = pop_head()  # the best item of another seller
            heapq.heappush(heads, (pos, s))
            s = s2
        take(s)
    return out


def seller_run_limit(order: Any, seller: Any, max_run: int = 3, xp: Any = None) -> Any:
    """Re-rank ``order`` so that no more than ``max_run`` consecutive items share a seller.

    ``seller`` is indexed by candidate index (``seller[order[i]]``). The ranking changes as little
    as possible: greedily, each position takes the best remaining item that does not extend a run
    beyond ``max_run`` and keeps the rest arrangeable (see :func:`_greedy_run_limit`); the result is
    the lexicographically best-ranked violation-free order when one exists, so the top item stays
    first whenever some violation-free order starts with it. If no violation-free order exists, the
    tail made of the last seller's items is appended in rank order.

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
    if not _max_run_exceeded(ranked_seller, max_run, xp):
        return order
    host_sellers = to_host(ranked_seller).tolist()
    positions = _greedy_run_limit(host_sellers, max_run)
    idx = xp.asarray(np.asarray(positions, dtype=np.int64))
    return xp.take(order, idx)


def demote_mask(order: Any, demote: Any, xp: Any = None) -> Any:
    """Move items flagged in ``demote`` (indexed by candidate index) to the end of ``order``.

    Relative order is preserved among kept items and among demoted items (stable partition).
    """
    xp = get_xp(order, demote, xp=xp)
    order = xp.reshape(xp.asarray(order), (-1,))
    flags = xp.take(xp.reshape(xp.asarray(demote), (-1,)), xp.astype(order, xp.int64))
    key = xp.astype(flags != 0, xp.int8) if not xp.isdtype(flags.dtype, "bool") else xp.astype(flags, xp.int8)
    return xp.take(order, xp.argsort(key, stable=True))
