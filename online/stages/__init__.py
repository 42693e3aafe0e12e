"""Pipeline stages, one per file: each a small class with a ``name``, a latency budget and one
``run(ctx, batch, state)`` method over the columnar :class:`~online.candidates.CandidateBatch`
(the :class:`~online.stages.base.Stage` protocol)."""

from online.stages.base import Stage
from online.stages.boosted import BoostedStage
from online.stages.filters import FilterStage, StockFilterStage
from online.stages.hydration import HydrationStage
from online.stages.polish import PolishStage
from online.stages.rerank import RerankStage
from online.stages.retrieval import RetrievalStage
from online.stages.scoring import ScoringStage
from online.stages.user import UserStage

__all__ = ["Stage", "UserStage", "RetrievalStage", "BoostedStage", "FilterStage", "HydrationStage", "StockFilterStage",
           "ScoringStage", "RerankStage", "PolishStage"]
