"""Text safety analysis: lexicon rules + pattern detectors + word lists + classifier heads on USE embeddings.

A prohibited item's score is the lexicon's (``rule_term_score`` for a term, ``rule_combo_score`` for a
combination of two cues) or the head's probability when higher. The head alone, without any lexicon cue,
reports an item only with ``head_alone_reports`` on (off by default: precision first, the heads are trained
on generated templates), at ``head_alone_threshold`` and only where the rules did not see an innocent use
("ตู้แช่ไวน์" is a wine fridge). The same threshold gates the offensive head next to the word lists. Without heads the rules still answer and ``model_version`` says ``rules-only``.
``safety_score = 1 - max(offensive, top prohibited score, diversion risk)``, where diversion risk is
``diversion_penalty`` when a pattern detector found a span, else the diversion head times its weight.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engines.text.detectors import Diversion, detect_diversion
from engines.text.embedder import TextEmbedder, get_embedder
from engines.text.heads import DIVERSION, OFFENSIVE, PROHIBITED_ITEMS, ClassifierHeads
from engines.text.lexicon import ProhibitedLexicon, get_lexicon
from engines.text.normalize import normalize
from engines.text.profanity import ProfanityScorer
from engines.text.settings import TextSettings, get_text_settings

CONTEXTS = ("listing", "chat")
RULES_ONLY = "rules-only"


@dataclass
class TextAnalysis:
    offensive: float
    prohibited: list[tuple[str, float]]
    diversion: list[Diversion]
    safety_score: float
    head_scores: dict[str, float] = field(default_factory=dict)
    rule_items: dict[str, str] = field(default_factory=dict)  # item -> "term" | "combo"

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
        lexicon: ProhibitedLexicon | None = None,
        use_rules: bool = True,
    ):
        self.heads = heads
        self.embedder = embedder if embedder is not None else (get_embedder() if heads is not None else None)
        self.profanity = profanity if profanity is not None else ProfanityScorer()
        self.settings = settings or get_text_settings()
        self.lexicon = lexicon if lexicon is not None else get_lexicon()
        self.use_rules = use_rules

    @property
    def model_version(self) -> str:
        """Which model answers: the heads' version (or ``rules-only``) plus the taxonomy's version."""
        parts = [self.heads.version if self.heads is not None else RULES_ONLY]
        if self.use_rules:
            parts.append(self.lexicon.version)
        return "+".join(parts)

    def missing_head_items(self) -> list[str]:
        """Prohibited items the loaded heads do not score (all of them without heads)."""
        have = set(self.heads.classes) if self.heads is not None else set()
        return [c for c in PROHIBITED_ITEMS if c not in have]

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
            off_head = hs.get(OFFENSIVE, 0.0)
            offensive = max(lex, s.offensive_head_weight * off_head if off_head >= s.head_alone_threshold else 0.0)
            hits, cleared = self.lexicon.match_with_cleared(nt) if self.use_rules else ([], set())
            rules = {h.item: h.strength for h in hits}
            scores = []
            for c in PROHIBITED_ITEMS:
                head = hs.get(c, 0.0)
                if c in rules:
                    score = max(s.rule_term_score if rules[c] == "term" else s.rule_combo_score, head)
                elif s.head_alone_reports and c not in cleared and head >= s.head_alone_threshold:
                    score = head  # the head alone, where the rules saw no innocent use
                else:
                    score = 0.0
                if score >= s.prohibited_threshold:
                    scores.append((c, score))
            prohibited = sorted(scores, key=lambda x: -x[1])
            diversion = detect_diversion(nt)
            div_risk = s.diversion_penalty if diversion else s.diversion_head_weight * hs.get(DIVERSION, 0.0)
            risk = max(offensive, max((p for _, p in prohibited), default=0.0), div_risk)
            out.append(TextAnalysis(offensive, prohibited, diversion, float(np.clip(1.0 - risk, 0.0, 1.0)), hs, rules))
        return out
