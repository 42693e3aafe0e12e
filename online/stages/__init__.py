"""Pipeline stages, one per file: each a small class with a ``name``, a latency budget and one
``run(ctx, batch, state)`` method over the columnar :class:`~online.candidates.CandidateBatch`."""

from online.stages.filters import FilterStage
from online.stages.hydration import HydrationStage
from online.stages.polish import PolishStage
from online.stages.rerank import RerankStage
from online.stages.retrieval import RetrievalStage
from online.stages.scoring import ScoringStage

__all__ = ["RetrievalStage", "FilterStage", "HydrationStage", "ScoringStage", "RerankStage", "PolishStage"]
