"""Tree scoring: the pCTR/pCVR rankers (XGBoost, ``device`` cpu|cuda) and the FinalScore, the one
scoring path of the project. Serving (the scoring stage), replay (which re-runs that stage) and the
trainer's evaluation all call :func:`score_matrix`, so an offline NDCG and a served ranking come from
the same arithmetic on the same matrix.

    >>> model = Ranker.load(folder, ref)                 # from a registry artifact directory
    >>> s = score_matrix(model, X, ScoreWeights.from_settings(settings))
    >>> s.final                                          # FinalScore per row
"""

from __future__ import annotations

import ctypes
import json
from dataclasses import dataclass
from functools import lru_cache
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
        """(pCTR, pCVR) float32 for the rows of ``X`` (cupy arrays stay on the GPU).

        A host float32 matrix goes straight to XGBoost's C predictor (:func:`predict_dense`: the call
        ``inplace_predict`` makes, without its per-call Python work); anything else through
        ``inplace_predict``. Both run the same C function on the same booster: equal bits."""
        if xp is np and _dense_ok(X):
            return (predict_dense(self.ctr, X, self._range(self.best_ctr)),
                    predict_dense(self.cvr, X, self._range(self.best_cvr)))
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


def _dense_ok(X: Any) -> bool:
    return (_XGB_C is not None and isinstance(X, np.ndarray) and X.dtype == np.float32 and X.ndim == 2
            and X.flags.c_contiguous and X.shape[0] > 0)


def _xgb_c() -> Any:
    """XGBoost's C library and helpers, or None (another xgboost layout: ``inplace_predict`` is used)."""
    try:
        from xgboost.core import _LIB, _check_call, c_bst_ulong

        _LIB.XGBoosterPredictFromDense  # noqa: B018 - the entry point must exist
    except (ImportError, AttributeError):
        return None
    return _LIB, _check_call, c_bst_ulong


_XGB_C = _xgb_c()
_NULL_PROXY = ctypes.c_void_p()


@lru_cache(maxsize=64)
def _predict_args(begin: int, end: int) -> bytes:
    """The JSON arguments ``inplace_predict`` builds on every call (type 0: values), built once."""
    return json.dumps({"type": 0, "training": False, "iteration_begin": begin, "iteration_end": end,
                       "missing": float("nan"), "strict_shape": False, "cache_id": 0}).encode()


def predict_dense(booster: Any, X: np.ndarray, iteration_range: tuple[int, int]) -> np.ndarray:
    """``booster.inplace_predict(X, iteration_range=...)`` for a C-contiguous float32 host matrix, as one C
    call (XGBoosterPredictFromDense, the function ``inplace_predict`` calls): float32 [n], a copy."""
    lib, check, ulong = _XGB_C
    n, f = X.shape
    iface = b'{"data":[%d,true],"shape":[%d,%d],"strides":null,"typestr":"<f4","version":3}' % (
        X.ctypes.data, n, f)
    shape, dims, preds = ctypes.POINTER(ulong)(), ulong(), ctypes.POINTER(ctypes.c_float)()
    check(lib.XGBoosterPredictFromDense(booster.handle, iface, _predict_args(*iteration_range), _NULL_PROXY,
                                        ctypes.byref(shape), ctypes.byref(dims), ctypes.byref(preds)))
    if dims.value != 1 or shape[0] != n:  # multi-output or another layout: the public path
        return np.asarray(booster.inplace_predict(X, iteration_range=iteration_range), dtype=np.float32)
    return np.ctypeslib.as_array(preds, (n,)).copy()  # the buffer belongs to the booster (next call reuses it)


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
