"""Real-time features from the online store's ring buffers: the slot layout of
:mod:`gpu_core.feature_store` read through the window kernels of :mod:`kernels.windows` (the same
window definition the offline ETL uses for training rows). The layout is read from the contract
module at call time, the way the Lua writer is generated from it, so the two cannot disagree.

    >>> rt = product_realtime(store.read_product_rt_raw(ids), now_s)   # PRODUCT_REALTIME columns
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gpu_core import feature_store as fs
from gpu_core.feature_store import OnlineStore
from kernels.windows import ring_window_sum, smoothed_ctr


def product_window_counts(raw: np.ndarray, now_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(impressions, clicks) of the last hour per row of product ring slots ``raw`` [n, P_SLOTS]."""
    w = fs.PRODUCT_WINDOW
    B = w.n_buckets
    bids = raw[:, fs.P_BIDS:fs.P_BIDS + B]
    impr = ring_window_sum(bids, raw[:, fs.P_IMPR:fs.P_IMPR + B], now_s, w.width_s, xp=np)
    clicks = ring_window_sum(bids, raw[:, fs.P_CLICK:fs.P_CLICK + B], now_s, w.width_s, xp=np)
    return np.asarray(impr, np.int64), np.asarray(clicks, np.int64)


def product_realtime(raw: np.ndarray, now_s: float) -> dict[str, np.ndarray]:
    """Product ring slots [n, P_SLOTS] -> the PRODUCT_REALTIME columns at ``now_s``."""
    impr, clicks = product_window_counts(raw, now_s)
    return {
        "views_last_hour": clicks.astype(np.float32),
        "ctr_last_hour": smoothed_ctr(clicks.astype(np.float32), impr.astype(np.float32), xp=np),
        "is_boosted_now": raw[:, fs.P_BOOST].astype(np.float32),
        "stock_status": (raw[:, fs.P_SOLD] == 0).astype(np.float32),
    }


def user_realtime(raw: np.ndarray | None, query: str, now_s: float) -> dict[str, Any]:
    """User ring slots [U_SLOTS] (None: no state) -> the USER_REALTIME values at ``now_s``."""
    raw = np.zeros(fs.U_SLOTS, np.int64) if raw is None else raw
    w = fs.USER_WINDOW
    B = w.n_buckets
    clicks = ring_window_sum(raw[None, fs.U_BIDS:fs.U_BIDS + B], raw[None, fs.U_CLICK:fs.U_CLICK + B], now_s,
                             w.width_s, xp=np)
    fresh = w.bucket(now_s) - raw[fs.U_LAST_MIN] <= fs.LAST_VIEWED_TTL_S // w.width_s
    last = int(raw[fs.U_LAST_CAT]) - 1 if (raw[fs.U_LAST_CAT] > 0 and fresh) else -1
    return {"session_clicks_last_5m": float(clicks[0]), "last_viewed_category": last,
            "current_search_query": query or ""}


def read_product_rt(store: OnlineStore, ids: Sequence[int], now_s: float) -> dict[str, np.ndarray]:
    return product_realtime(store.read_product_rt_raw(ids), now_s)


def read_user_rt(store: OnlineStore, user_id: int, now_s: float) -> dict[str, Any]:
    raw, q = store.read_user_rt_raw(user_id)
    return user_realtime(raw, q, now_s)
