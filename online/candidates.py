"""The request and its candidates: one columnar batch (structure of arrays), never a list of dicts.

Arrays live on the active backend (``xp``: numpy or cupy). ``idx`` indexes the product mirror
(the materialised snapshot held in memory/on device); every stage narrows ``alive`` or fills a
column, and records what it removed (by stage and reason) so a response can say why a candidate left.

Stages talk to each other only through typed fields of :class:`RequestContext` (the user, the
feature-store state, the model that scored) and columns of :class:`CandidateBatch`; fallbacks are a
closed set of names (:class:`Fallback`), reported to the client, never read back as signals.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

import numpy as np


class Fallback(StrEnum):
    """Every degraded path a response can name in ``fallbacks_used``."""

    VECTOR_INDEX_DOWN = "vector_index_down"  # vector search failed
    KEYWORD_ONLY = "keyword_only"  # ... and the request was answered by keyword search alone
    KEYWORD_INDEX_DOWN = "keyword_index_down"  # keyword search failed
    POPULAR_IN_REGION = "popular_in_region"  # both retrieval paths failed or found nothing
    COLD_START = "cold_start"  # unknown user: no user vector
    FEATURE_STORE_SLOW = "feature_store_slow"  # feature store over budget -> popularity scores
    MODEL_UNAVAILABLE = "model_unavailable"  # no ranker loaded -> popularity scores
    DEADLINE_EXCEEDED = "deadline_exceeded"  # whole request over budget -> "Trending Globally"
    REDIS_DOWN = "redis_down"  # Redis unreachable -> in-process trending list
    # search (engines.search.index): query understanding and the retrieval fallback chain
    KEYBOARD_LAYOUT_FIXED = "keyboard_layout_fixed"  # typed on the wrong layout; searched as converted
    FUZZY_MATCH = "fuzzy_match"  # a word in no title was corrected to the closest indexed word
    RELAXED_TO_RAREST_TERM = "relaxed_to_rarest_term"  # too few full matches: the rarest term widened it
    CONDITION_ONLY_QUERY = "condition_only_query"  # only condition words (มือสอง, like new): those are required
    NO_MATCH = "no_match"  # nothing matches the query: no items (never a silent feed)
    WIDENED_RADIUS = "widened_radius"  # every match lay beyond the user's distance: the radius was widened
    MATCHES_FILTERED = "matches_filtered"  # listings matched, the hard rules (banned, sold) removed all: no items


class Source(IntEnum):
    """Which retrieval path found a candidate (the first one, when several did)."""

    KEYWORD = 0
    VECTOR = 1
    POPULAR = 2
    BOOSTED = 3  # an admin force-boost (online.stages.boosted), added when retrieval did not find it


@dataclass
class UserState:
    """What the user stage found (round trip 1) and the per-request feature columns it built."""

    features: dict[str, Any]  # USER_DAILY + USER_REALTIME values
    known: bool  # the user has a daily row in the snapshot
    geo: tuple[float, float] | None  # request location, else home (known users), else None
    max_distance_km: float
    columns: dict[str, Any]  # per-request (broadcast) assembly inputs: user + context

    @property
    def vector(self) -> Any:
        return self.features.get("user_embedding")

    @property
    def session_query(self) -> str:
        return self.features.get("current_search_query", "")


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
    arm: str = "production"
    # typed state filled by the stages
    user: UserState | None = None
    feature_store_ok: bool = True  # False once the feature store was over budget: no more calls
    snapshot_version: str | None = None
    model: Any = None  # the engines.ranker.Ranker that scored (SHAP explains this one)
    query_plan: Any = None  # the engines.search.index.QueryPlan retrieval understood (hydration reuses it)
    widened_radius_km: float | None = None  # a search's radius when every match lay beyond the user's distance
    # what the executor and stages report
    stage: str = ""  # the stage running now (removal records are filed under it)
    fallbacks: list[str] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    overruns_ms: dict[str, float] = field(default_factory=dict)  # stages past their budget: ms spent
    removed: dict[str, dict[str, int]] = field(default_factory=dict)  # stage -> reason -> candidates
    # replay: the recorded model and sponsored items instead of the live ones
    pinned_model: Any = None
    pinned_sponsored: np.ndarray | None = None

    def remaining_s(self) -> float:
        """Seconds left of the request's budget (counted from its arrival at the edge)."""
        return self.deadline_s - time.perf_counter()

    def fallback(self, name: Fallback) -> None:
        value = Fallback(name).value  # a name outside the closed set raises
        if value not in self.fallbacks:
            self.fallbacks.append(value)

    def record_removed(self, reason: str, n: int) -> None:
        if n:
            by = self.removed.setdefault(self.stage, {})
            by[reason] = by.get(reason, 0) + int(n)

    def removed_by_reason(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for reasons in self.removed.values():
            for reason, n in reasons.items():
                out[reason] = out.get(reason, 0) + n
        return out

    @property
    def model_version(self) -> str:
        return self.model.label if self.model is not None else "none"


# per-candidate arrays that :meth:`CandidateBatch.compact` keeps aligned
_ALIGNED = ("idx", "source", "alive", "X", "p_ctr", "p_cvr", "score")


@dataclass
class CandidateBatch:
    xp: Any
    idx: Any  # int32 [n] rows of the product mirror
    source: Any  # int8 [n] Source of each candidate
    alive: Any  # bool [n]
    cols: dict[str, Any] | None = None  # hydrated per-candidate feature columns (assembly inputs, [n] / [n, k])
    X: Any = None  # float32 [n, F] model matrix (set by scoring; replay gives the recorded one)
    p_ctr: Any = None
    p_cvr: Any = None
    score: Any = None  # final score (-inf for removed candidates)
    order: Any = None  # ranked candidate positions (int64), after scoring/re-rank
    sponsored: np.ndarray | None = None  # bool per final item
    final_ids: np.ndarray | None = None  # product ids, final order
    final_pos: np.ndarray | None = None  # candidate positions of final items (-1 for injected sponsored)

    @classmethod
    def of(cls, xp: Any, idx: np.ndarray, source: np.ndarray, alive: np.ndarray | None = None) -> CandidateBatch:
        n = len(idx)
        return cls(xp=xp, idx=xp.asarray(np.asarray(idx, dtype=np.int32)),
                   source=xp.asarray(np.asarray(source, dtype=np.int8)),
                   alive=xp.asarray(np.ones(n, bool) if alive is None else np.asarray(alive, bool)))

    @property
    def n(self) -> int:
        return int(self.idx.shape[0])

    def n_alive(self) -> int:
        return int(self.xp.sum(self.alive))

    def keep(self, mask, reason: str, ctx: RequestContext) -> None:
        before = self.n_alive()
        self.alive = self.alive & mask
        ctx.record_removed(reason, before - self.n_alive())

    def compact(self) -> None:
        """Drop dead candidates from every per-candidate array (hydrated columns included), so the
        expensive stages run over live candidates only."""
        xp = self.xp
        keep = xp.nonzero(self.alive)[0]
        if int(keep.shape[0]) == self.n:
            return
        for name in _ALIGNED:
            v = getattr(self, name)
            if v is not None:
                setattr(self, name, xp.take(v, keep, axis=0))
        if self.cols is not None:
            self.cols = {k: xp.take(v, keep, axis=0) for k, v in self.cols.items()}
