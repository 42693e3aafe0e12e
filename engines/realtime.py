"""Real-time features from the online store's ring buffers: the slot layout of
:mod:`gpu_core.feature_store` read through the window kernels of :mod:`kernels.windows` (the same
window definition the offline ETL uses for training rows).

    >>> rt = product_realtime(store.read_product_rt_raw(ids), now_s)   # PRODUCT_REALTIME columns
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gpu_core.feature_store import (
    LAST_VIEWED_TTL_S,
    P_BIDS,
    P_BOOST,
    P_CLICK,
    P_IMPR,
    P_SOLD,
    PRODUCT_WINDOW,
    U_BIDS,
    U_CLICK,
    U_LAST_CAT,
    U_LAST_MIN,
    U_SLOTS,
    USER_WINDOW,
    OnlineStore,
)
from kernels.windows import ring_window_sum, smoothed_ctr


def product_window_counts(raw: np.ndarray, now_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(impressions, clicks) of the last hour per row of product ring slots ``raw`` [n, P_SLOTS]."""
    B = PRODUCT_WINDOW.n_buckets
    bids = raw[:, P_BIDS:P_BIDS + B]
    impr = ring_window_sum(bids, raw[:, P_IMPR:P_IMPR + B], now_s, PRODUCT_WINDOW.width_s, xp=np)
    clicks = ring_window_sum(bids, raw[:, P_CLICK:P_CLICK + B], now_s, PRODUCT_WINDOW.width_s, xp=np)
    return np.asarray(impr, np.int64), np.asarray(clicks, np.int64)


def product_realtime(raw: np.ndarray, now_s: float) -> dict[str, np.ndarray]:
    """Product ring slots [n, P_SLOTS] -> the PRODUCT_REALTIME columns at ``now_s``."""
    impr, clicks = product_window_counts(raw, now_s)
    return {
        "views_last_hour": clicks.astype(np.float32),
        "ctr_last_hour": smoothed_ctr(clicks.astype(np.float32), impr.astype(np.float32), xp=np),
        "is_boosted_now": raw[:, P_BOOST].astype(np.float32),
        "stock_status": (raw[:, P_SOLD] == 0).astype(np.float32),
    }


def user_realtime(raw: np.ndarray | None, query: str, now_s: float) -> dict[str, Any]:
    """User ring slots [U_SLOTS] (None: no state) -> the USER_REALTIME values at ``now_s``."""
    raw = np.zeros(U_SLOTS, np.int64) if raw is None else raw
    B = USER_WINDOW.n_buckets
    clicks = ring_window_sum(raw[None, U_BIDS:U_BIDS + B], raw[None, U_CLICK:U_CLICK + B], now_s,
                             USER_WINDOW.width_s, xp=np)
    fresh = USER_WINDOW.bucket(now_s) - raw[U_LAST_MIN] <= LAST_VIEWED_TTL_S // USER_WINDOW.width_s
    last = int(raw[U_LAST_CAT]) - 1 if (raw[U_LAST_CAT] > 0 and fresh) else -1
    return {"session_clicks_last_5m": float(clicks[0]), "last_viewed_category": last,
            "current_search_query": query or ""}


def read_product_rt(store: OnlineStore, ids: Sequence[int], now_s: float) -> dict[str, np.ndarray]:
    return product_realtime(store.read_product_rt_raw(ids), now_s)


def read_user_rt(store: OnlineStore, user_id: int, now_s: float) -> dict[str, Any]:
    raw, q = store.read_user_rt_raw(user_id)
    return user_realtime(raw, q, now_s)
