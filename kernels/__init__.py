"""Pure, vectorised functions over array-API namespaces (numpy | cupy | array-api-strict); no I/O.

Every function takes its arrays plus ``xp=None`` (inferred with ``array_api_compat``).
"""

from kernels.filters import banned_seller_mask, category_ban_mask, distance_mask, in_stock_mask
from kernels.geo import haversine_km
from kernels.metrics import dcg_at_k, ndcg_at_k, ndcg_per_group, psi, psi_from_counts
from kernels.rerank import demote_mask, seller_run_limit
from kernels.scoring import final_score, top_k_indices
from kernels.slots import inject_slots
from kernels.windows import (
    bucket_of,
    ring_init,
    ring_update,
    ring_window_sum,
    smoothed_ctr,
    sort_events,
    window_count_sorted,
)

__all__ = [
    "banned_seller_mask",
    "bucket_of",
    "category_ban_mask",
    "dcg_at_k",
    "demote_mask",
    "distance_mask",
    "final_score",
    "haversine_km",
    "in_stock_mask",
    "inject_slots",
    "ndcg_at_k",
    "ndcg_per_group",
    "psi",
    "psi_from_counts",
    "ring_init",
    "ring_update",
    "ring_window_sum",
    "seller_run_limit",
    "smoothed_ctr",
    "sort_events",
    "top_k_indices",
    "window_count_sorted",
]
