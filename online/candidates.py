"""The request and its candidates: one columnar batch (structure of arrays), never a list of dicts.

Arrays live on the active backend (``xp``: numpy or cupy). ``idx`` indexes the product mirror
(the materialised snapshot held in memory/on device); every stage narrows ``alive`` or fills a
column, and records what it removed so a response can say why a candidate left.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class RequestContext:
    request_id: str
    kind: str  # feed | search
    user_id: int
    lat: float | None
    lon: float | None
    device_type: int
    limit: int
    query: str
    now_ms: int
    deadline_s: float  # perf_counter() deadline
    explain: bool = False
    # filled by the user step
    user: dict[str, Any] = field(default_factory=dict)
    user_known: bool = False
    geo: tuple[float, float] | None = None
    max_distance_km: float = 500.0
    fallbacks: list[str] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    removed: dict[str, int] = field(default_factory=dict)
    model_version: str = "none"
    snapshot_version: str | None = None
    arm: str = "production"
    user_columns: dict[str, Any] = field(default_factory=dict)

    def fallback(self, name: str) -> None:
        if name not in self.fallbacks:
            self.fallbacks.append(name)


@dataclass
class CandidateBatch:
    xp: Any
    idx: Any  # int32 [n] rows of the product mirror
    retrieval_score: Any  # float32 [n]
    from_keyword: Any  # bool [n]
    alive: Any  # bool [n]
    X: Any = None  # float32 [n, F]
    p_ctr: Any = None
    p_cvr: Any = None
    score: Any = None  # final score
    boosted: Any = None
    order: Any = None  # ranked candidate positions (int64), after scoring/re-rank
    sponsored: np.ndarray | None = None  # bool per final item
    final_ids: np.ndarray | None = None  # product ids, final order
    final_pos: np.ndarray | None = None  # candidate positions of final items (-1 for injected sponsored)
    cols: dict[str, Any] | None = None  # hydrated raw feature columns (assembly inputs)

    @property
    def n(self) -> int:
        return int(self.idx.shape[0])

    def n_alive(self) -> int:
        return int(self.xp.sum(self.alive))

    def keep(self, mask, reason: str, ctx: RequestContext) -> None:
        before = self.n_alive()
        self.alive = self.alive & mask
        ctx.removed[reason] = ctx.removed.get(reason, 0) + before - self.n_alive()

    def compact(self) -> None:
        """Drop dead candidates (keeps arrays small for the expensive stages)."""
        xp = self.xp
        keep = xp.nonzero(self.alive)[0]
        self.idx = xp.take(self.idx, keep, axis=0)
        self.retrieval_score = xp.take(self.retrieval_score, keep, axis=0)
        self.from_keyword = xp.take(self.from_keyword, keep, axis=0)
        self.alive = xp.ones(self.idx.shape, dtype=xp.bool)
