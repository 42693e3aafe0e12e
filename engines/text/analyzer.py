"""Text safety analysis: pattern detectors + word lists + classifier heads on USE embeddings.

``safety_score = 1 - max(offensive, top prohibited score, diversion risk)``, where diversion risk is
``diversion_penalty`` when a pattern detector found a span, else the diversion head times its weight.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engines.text.detectors import Diversion, detect_diversion
from engines.text.embedder import TextEmbedder, get_embedder
from engines.text.heads import DIVERSION, OFFENSIVE, PROHIBITED_ITEMS, ClassifierHeads
from engines.text.normalize import normalize
from engines.text.profanity import ProfanityScorer
from engines.text.settings import TextSettings, get_text_settings

CONTEXTS = ("listing", "chat")


@dataclass
class TextAnalysis:
    offensive: float
    prohibited: list[tuple[str, float]]
    diversion: list[Diversion]
    safety_score: float
    head_scores: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "offensive": round(self.offensive, 4),
            "prohibited": [{"item": i, "score": round(s, 4)} for i, s in self.prohibited],
            "diversion": [d.as_dict() for d in self.diversion],
            "safety_score": round(self.safety_score, 4),
        }


class TextAnalyzer:
    """Loads its parts once; ``analyze_batch`` embeds all texts in one call."""

    def __init__(
        self,
        heads: ClassifierHeads | None,
        embedder: TextEmbedder | None = None,
        profanity: ProfanityScorer | None = None,
        settings: TextSettings | None = None,
    ):
        self.heads = heads
        self.embedder = embedder if embedder is not None else (get_embedder() if heads is not None else None)
        self.profanity = profanity if profanity is not None else ProfanityScorer()
        self.settings = settings or get_text_settings()

    @property
    def model_version(self) -> str:
        return self.heads.version if self.heads is not None else "rules-only"

    def analyze(self, text: str, context: str = "listing") -> TextAnalysis:
        return self.analyze_batch([text], context)[0]

    def analyze_batch(self, texts: list[str], context: str = "listing") -> list[TextAnalysis]:
        s = self.settings
        norms = [normalize(t) for t in texts]
        if self.heads is not None and texts:
            probs = self.heads.predict_proba(self.embedder.encode([n.text for n in norms]))
        else:
            probs = np.zeros((len(texts), 0), dtype=np.float32)
        cls = self.heads.classes if self.heads is not None else ()
        out = []
        for i, nt in enumerate(norms):
            hs = {c: float(probs[i, j]) for j, c in enumerate(cls)}
            lex, _hits = self.profanity.score(nt)
            offensive = max(lex, s.offensive_head_weight * hs.get(OFFENSIVE, 0.0))
            prohibited = sorted(
                ((c, hs[c]) for c in PROHIBITED_ITEMS if hs.get(c, 0.0) >= s.prohibited_threshold),
                key=lambda x: -x[1],
            )
            diversion = detect_diversion(nt)
            div_risk = s.diversion_penalty if diversion else s.diversion_head_weight * hs.get(DIVERSION, 0.0)
            risk = max(offensive, max((p for _, p in prohibited), default=0.0), div_risk)
            out.append(TextAnalysis(offensive, prohibited, diversion, float(np.clip(1.0 - risk, 0.0, 1.0)), hs))
        return out
