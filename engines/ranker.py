"""Tree scoring: the pCTR/pCVR rankers (XGBoost, ``device`` cpu|cuda) and the FinalScore, the one
scoring path of the project. Serving (the scoring stage), replay (which re-runs that stage) and the
trainer's evaluation all call :func:`score_matrix`, so an offline NDCG and a served ranking come from
the same arithmetic on the same matrix.

    >>> model = Ranker.load(folder, ref)                 # from a registry artifact directory
    >>> s = score_matrix(model, X, ScoreWeights.from_settings(settings))
    >>> s.final                                          # FinalScore per row
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gpu_core.registry import ModelRef, RankerArtifact
from kernels.features import MODEL_FEATURES, feature_index
from kernels.scoring import final_score, relevance_tier

_TRUST = feature_index("seller_trust_score")
_BOOSTED = feature_index("is_boosted_now")
_ALL_REQUIRED = feature_index("text_all_required")
_COVERAGE = feature_index("text_coverage")
_CONDITION = feature_index("text_condition_match")


@dataclass(frozen=True)
class ScoreWeights:
    """FinalScore = pCTR*w_ctr + pCVR*w_cvr + SellerTrust*w_trust + boosted*boost_multiplier
    + relevance_tier*tier_gap (the tier is 0 for a feed)."""

    w_ctr: float
    w_cvr: float
    w_trust: float
    boost_multiplier: float
    tier_gap: float = 0.0

    @classmethod
    def from_settings(cls, s: Any) -> ScoreWeights:
        return cls(s.w_ctr, s.w_cvr, s.w_trust, s.boost_multiplier, s.search_tier_gap)


@dataclass(frozen=True)
class Ranker:
    """A loaded ranker version: the boosters, how many trees each uses, and the registry version."""

    ref: ModelRef | None
    ctr: Any  # xgboost.Booster
    cvr: Any
    best_ctr: int  # trees to use; 0 = all
    best_cvr: int

    @property
    def label(self) -> str:
        return self.ref.label if self.ref is not None else "local"

    @classmethod
    def from_artifact(cls, art: RankerArtifact, ref: ModelRef | None = None) -> Ranker:
        return cls(ref, art.ctr, art.cvr, RankerArtifact.best_iterations(art.ctr),
                   RankerArtifact.best_iterations(art.cvr))

    @classmethod
    def load(cls, folder: Path, ref: ModelRef | None = None, *, device: str = "cpu",
             nthread: int | None = 1) -> Ranker:
        """A registry artifact directory -> a ranker (``nthread=1``: one request, one core)."""
        return cls.from_artifact(RankerArtifact.load(folder, MODEL_FEATURES, device=device, nthread=nthread), ref)

    @staticmethod
    def _range(best: int) -> tuple[int, int]:
        return (0, best) if best > 0 else (0, 0)

    def predict(self, X: Any, xp: Any = np) -> tuple[Any, Any]:
        """(pCTR, pCVR) float32 for the rows of ``X`` (cupy arrays stay on the GPU)."""
        p_ctr = xp.asarray(self.ctr.inplace_predict(X, iteration_range=self._range(self.best_ctr)), dtype=xp.float32)
        p_cvr = xp.asarray(self.cvr.inplace_predict(X, iteration_range=self._range(self.best_cvr)), dtype=xp.float32)
        return p_ctr, p_cvr

    def explain(self, X: np.ndarray, top: int = 8) -> list[dict[str, Any]]:
        """TreeSHAP contributions of the pCTR model (``pred_contribs``) for the rows of host matrix ``X``."""
        import xgboost as xgb

        d = xgb.DMatrix(X, feature_names=list(MODEL_FEATURES))
        it = self._range(self.best_ctr)
        contribs = self.ctr.predict(d, pred_contribs=True, iteration_range=it)
        margins = self.ctr.predict(d, output_margin=True, iteration_range=it)
        out = []
        for row, margin in zip(contribs, margins, strict=True):
            contrib = {name: float(v) for name, v in zip(MODEL_FEATURES, row[:-1], strict=True)}
            best = dict(sorted(contrib.items(), key=lambda kv: -abs(kv[1]))[:top])
            out.append({"bias": float(row[-1]), "margin": float(margin), "contributions": best,
                        "all_contributions": contrib})
        return out


@dataclass(frozen=True)
class Scores:
    p_ctr: Any
    p_cvr: Any
    final: Any


def score_matrix(model: Ranker, X: Any, weights: ScoreWeights, xp: Any = np) -> Scores:
    """pCTR, pCVR and FinalScore for the model matrix ``X`` (seller trust, the boost flag and the text
    relevance are its own columns, so nothing outside the matrix enters the score). A search's listings
    are ordered by relevance tier first (:func:`kernels.scoring.relevance_tier`), by the model inside a
    tier: personalisation cannot lift a listing that misses a query term over one that matches."""
    p_ctr, p_cvr = model.predict(X, xp)
    final = final_score(p_ctr, p_cvr, X[:, _TRUST], X[:, _BOOSTED], weights.w_ctr, weights.w_cvr, weights.w_trust,
                        weights.boost_multiplier, xp=xp)
    if weights.tier_gap:
        final = final + weights.tier_gap * relevance_tier(X[:, _ALL_REQUIRED], X[:, _COVERAGE], X[:, _CONDITION],
                                                          xp=xp)
    return Scores(p_ctr, p_cvr, final)
