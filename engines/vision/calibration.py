"""Calibration of ``category_confidence``: temperature scaling of the category model's ImageNet logits.

The confidence is the category's share of the ImageNet softmax (:func:`engines.vision.category.category_mass`).
Temperature scaling divides the logits by ``T`` before the softmax (``p_T ∝ p ** (1 / T)``), one
parameter, so it cannot reorder the classes of a photo, only soften (T > 1) or sharpen (T < 1) them.
``T`` is fitted by the negative log-likelihood of the 13-way outcome (12 categories + "no category":
the mass left on classes that map to none) on hand-labelled real photos; the value in force, and
where it came from, is data, one file per ImageNet classifier (``JAIKOD_VISION_CATEGORY_CLASSIFIER``):
``engines/vision/data/category_calibration_<classifier>.json`` (``python -m bench.vision_calibration``
refits the one in force, cross-validated).

    >>> conf, correct = ...                              # stated confidence, was the answer right
    >>> expected_calibration_error(conf, correct)        # 0 = the confidence is the accuracy
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent / "data"
T_GRID = np.exp(np.linspace(np.log(0.25), np.log(8.0), 161))


def calibration_path(classifier: str | None = None) -> Path:
    """The calibration file of ``classifier`` (default: the category classifier in force)."""
    from engines.vision.config import get_vision_settings

    return DATA / f"category_calibration_{classifier or get_vision_settings().category_classifier}.json"


@lru_cache(maxsize=8)
def load_calibration(path: Path | None = None) -> dict:
    """The calibration in force (``path`` default: :func:`calibration_path`); T = 1 when there is none."""
    path = Path(path or calibration_path())
    return json.loads(path.read_text()) if path.is_file() else {"temperature": 1.0}


def temperature(classifier: str | None = None) -> float:
    return float(load_calibration(calibration_path(classifier))["temperature"])


def scale(probs: np.ndarray, t: float) -> np.ndarray:
    """ImageNet probabilities [n, 1000] with the logits divided by ``t`` (rows sum to 1)."""
    if t == 1.0:
        return probs
    z = np.log(np.maximum(probs.astype(np.float64), 1e-30)) / t
    z = np.exp(z - z.max(1, keepdims=True))
    return (z / z.sum(1, keepdims=True)).astype(np.float32)


def with_none(mass: np.ndarray) -> np.ndarray:
    """Category mass [n, 12] -> [n, 13], the last column the mass on classes of no category."""
    rest = np.clip(1.0 - mass.sum(1, keepdims=True), 0.0, 1.0)
    return np.concatenate([mass, rest], axis=1)


def nll(mass13: np.ndarray, targets: np.ndarray) -> float:
    return float(-np.mean(np.log(np.maximum(mass13[np.arange(len(targets)), targets], 1e-12))))


def fit_temperature(mass_at, targets: np.ndarray, grid: np.ndarray = T_GRID) -> float:
    """The ``T`` on ``grid`` with the lowest NLL; ``mass_at(t)`` -> [n, 13] for those photos."""
    losses = [nll(mass_at(float(t)), targets) for t in grid]
    return float(grid[int(np.argmin(losses))])


def expected_calibration_error(conf: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """Sum over equal-width confidence bins of |accuracy - mean confidence| weighted by the bin's share."""
    conf, correct = np.asarray(conf, float), np.asarray(correct, float)
    idx = np.minimum((conf * bins).astype(int), bins - 1)
    return float(sum(abs(correct[idx == b].mean() - conf[idx == b].mean()) * (idx == b).mean()
                     for b in range(bins) if (idx == b).any()))


def reliability(conf: np.ndarray, correct: np.ndarray, bins: int = 10) -> list[dict]:
    conf, correct = np.asarray(conf, float), np.asarray(correct, float)
    idx = np.minimum((conf * bins).astype(int), bins - 1)
    return [{"bin": f"{b / bins:.1f}-{(b + 1) / bins:.1f}", "n": int((idx == b).sum()),
             "mean_confidence": round(float(conf[idx == b].mean()), 4),
             "accuracy": round(float(correct[idx == b].mean()), 4)}
            for b in range(bins) if (idx == b).any()]
