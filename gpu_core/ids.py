"""Id ranges every store accepts: ids are non-negative int64 (Parquet ``int64`` columns, numpy ``<i8``
mirrors, Redis keys), so every edge (request models, admin API, event schema, stream processor) bounds
them here and nothing past the edge can overflow."""

from __future__ import annotations

from typing import Any

ID_MIN = 0
ID_MAX = 2**63 - 1


def is_id(v: Any) -> bool:
    """A real int (not a bool, not a numeric string) in ``[ID_MIN, ID_MAX]``."""
    return type(v) is int and ID_MIN <= v <= ID_MAX


def ids_only(members: Any) -> tuple[list[int], int]:
    """Redis set members (bytes) -> (the valid ids, how many members were not one)."""
    out, bad = [], 0
    for m in members:
        try:
            v = int(m)
        except (TypeError, ValueError):
            bad += 1
            continue
        if ID_MIN <= v <= ID_MAX:
            out.append(v)
        else:
            bad += 1
    return out, bad
