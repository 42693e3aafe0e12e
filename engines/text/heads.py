"""Classifier heads over USE embeddings: one logistic-regression head per class (one-vs-rest).

The artifact is plain numpy (``heads.npz``: ``coef`` [C, 512], ``intercept`` [C]) plus ``heads.json``
(class names, version, training metadata), so serving needs neither pickle nor scikit-learn.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gpu_core.errors import JaikodError

OK = "ok"
OFFENSIVE = "offensive"
DIVERSION = "diversion"
# the taxonomy (engines/text/data/prohibited.json says what each covers and the law behind it)
PROHIBITED_ITEMS = (
    "weapon", "drug", "counterfeit", "wildlife", "vape", "fake_document", "alcohol", "tobacco", "gambling", "adult",
    "prescription_medicine",
)
CLASSES = (OK, OFFENSIVE, DIVERSION, *PROHIBITED_ITEMS)


class TextModelError(JaikodError):
    """The text-safety model artifact is missing or malformed (engines layer)."""

    http_status = 503


@dataclass
class ClassifierHeads:
    classes: tuple[str, ...]
    coef: np.ndarray  # [C, D] float32
    intercept: np.ndarray  # [C] float32
    version: str = "untrained"
    meta: dict = field(default_factory=dict)

    def predict_proba(self, emb: np.ndarray) -> np.ndarray:
        """[n, C] independent per-class probabilities (sigmoid of each head)."""
        z = emb.astype(np.float32, copy=False) @ self.coef.T + self.intercept
        return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))

    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        np.savez(d / "heads.npz", coef=self.coef.astype(np.float32), intercept=self.intercept.astype(np.float32))
        (d / "heads.json").write_text(
            json.dumps({"classes": list(self.classes), "version": self.version, "meta": self.meta},
                       ensure_ascii=False, indent=2),
            encoding="utf-8",
        )
        return d

    @classmethod
    def load(cls, directory: str | Path) -> ClassifierHeads:
        d = Path(directory)
        try:
            info = json.loads((d / "heads.json").read_text(encoding="utf-8"))
            with np.load(d / "heads.npz") as z:
                coef, intercept = z["coef"], z["intercept"]
        except (OSError, KeyError, ValueError) as e:
            raise TextModelError(f"text model artifact not usable in {d}: {e.__class__.__name__}") from e
        classes = tuple(info["classes"])
        if coef.shape[0] != len(classes) or intercept.shape != (len(classes),):
            raise TextModelError(f"text model artifact in {d} has inconsistent shapes")
        return cls(classes, coef, intercept, info.get("version", "unknown"), info.get("meta", {}))
