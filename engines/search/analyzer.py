"""The search analyzer: one definition of how listing titles and buyer queries become index terms, used
by the index build (materialiser), the relevance features of training rows (ETL) and of served
candidates (hydration), and query understanding at request time.

    >>> a = analyzer()
    >>> a.title_terms("กล้องถ่ายรูป Canon มือสอง")     # surface words, sub-word parts, concepts
    ('กล้องถ่ายรูป', '#กล้อง', '#ถ่ายรูป', 'canon', 'มือสอง', '=camera', '=canon', '=second_hand')
    >>> a.query("ไอโฟน มือสอง").required[0].alternatives
    ('=iphone',)

Steps, the same on both sides:

1. **Normalisation** — :func:`engines.text.normalize.normalize` (NFKC, lower case, Thai digits, zero-width
   and format characters, spaced-out letters), then control characters and lone surrogates dropped.
2. **Segmentation** — Thai runs with pythainlp ``newmm`` (its bundled dictionary), other runs split on
   punctuation and spaces.
3. **Sub-word parts** — a Thai word that is a compound in the dictionary (กล้องถ่ายรูป) is segmented
   again with itself left out of the dictionary (กล้อง + ถ่ายรูป, two levels deep); every part is indexed
   as ``#part``, so a query word matches inside a compound. Thai compound nouns are head-first, so only
   the first part (the head: กล้อง in กล้องวงจรปิด) stands for its concept when the table does not know
   the compound itself (สายยาง is a garden hose, not a tyre).
4. **Concepts** — the Thai/English synonym and transliteration table (``data/lexicon.json``) maps words
   and phrases (longest first) to concept ids, indexed as ``=id`` (plus the concepts they are a kind of);
   each concept has a tag: brand, product, category or condition.

Index terms: surface words, ``#sub-word parts``, ``=concepts`` and the listing's ``@category``.
"""

from __future__ import annotations

import json
import re
import threading
import unicodedata
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path

from engines.text.normalize import normalize
from engines.text.tokenize import tokenize

LEXICON_PATH = Path(__file__).with_name("data") / "lexicon.json"
TAGS = ("brand", "product", "category", "condition", "other")
_THAI = re.compile(r"[\u0E00-\u0E7F]")
_MIN_PART = 2  # characters of a sub-word part
_SUB_DEPTH = 2


def clean(text: str) -> str:
    """Normalised search text: the text service's normalisation, then control characters, lone
    surrogates and other unprintable code points removed (they never reach the tokenizer)."""
    text = "".join(ch for ch in text if not (0xD800 <= ord(ch) <= 0xDFFF))  # lone surrogates
    text = normalize(text).text
    return "".join(" " if unicodedata.category(ch)[0] in "CZ" else ch for ch in text)


@dataclass(frozen=True)
class Concept:
    id: str
    tag: str
    categories: tuple[str, ...]
    broader: tuple[str, ...]
    terms: tuple[str, ...]


@dataclass(frozen=True)
class QueryTerm:
    """One unit of a query: a concept (with every spelling of it) or a plain word."""

    text: str  # the words as typed (normalised)
    tag: str  # brand | product | category | condition | other
    concept: str | None
    alternatives: tuple[str, ...]  # index terms any of which satisfies this term


@dataclass(frozen=True)
class ParsedQuery:
    text: str  # normalised query
    terms: tuple[QueryTerm, ...]
    categories: tuple[str, ...]  # categories the query's brands/products/categories imply

    @property
    def required(self) -> tuple[QueryTerm, ...]:
        """Informative terms: every brand, product, category and other word. A query of condition
        words only requires those."""
        req = tuple(t for t in self.terms if t.tag != "condition")
        return req or self.conditions

    @property
    def conditions(self) -> tuple[QueryTerm, ...]:
        return tuple(t for t in self.terms if t.tag == "condition")

    @property
    def condition_only(self) -> bool:
        return bool(self.terms) and all(t.tag == "condition" for t in self.terms)

    def tagged(self) -> list[dict]:
        return [{"text": t.text, "tag": t.tag, **({"concept": t.concept} if t.concept else {})} for t in self.terms]


@dataclass(eq=False)  # hashed by identity: the process has one, cached calls key on it
class Analyzer:
    concepts: dict[str, Concept]
    phrases: dict[tuple[str, ...], str]  # surface token tuple -> concept id
    stopwords: frozenset[str]
    max_phrase: int
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_file(cls, path: Path = LEXICON_PATH) -> Analyzer:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        concepts = {c["id"]: Concept(c["id"], c["tag"], tuple(c.get("categories", ())),
                                     tuple(c.get("broader", ())), tuple(c["terms"])) for c in raw["concepts"]}
        for c in concepts.values():
            if c.tag not in TAGS:
                raise ValueError(f"lexicon: concept {c.id!r} has unknown tag {c.tag!r}")
            for b in c.broader:
                if b not in concepts:
                    raise ValueError(f"lexicon: concept {c.id!r} is a kind of unknown {b!r}")
        phrases: dict[tuple[str, ...], str] = {}
        for c in concepts.values():
            for term in c.terms:
                toks = surface_tokens(term)
                if toks:
                    phrases.setdefault(toks, c.id)
        stop = frozenset(t for w in raw.get("stopwords", ()) for t in surface_tokens(w))
        return cls(concepts, phrases, stop, max(len(p) for p in phrases))

    # ---- concepts ---------------------------------------------------------------------------
    def expand(self, cid: str) -> tuple[str, ...]:
        """The concept and every concept it is a kind of."""
        out, todo = [], [cid]
        while todo:
            c = todo.pop()
            if c not in out:
                out.append(c)
                todo.extend(self.concepts[c].broader)
        return tuple(out)

    def match_phrases(self, toks: tuple[str, ...]) -> list[tuple[int, int, str | None]]:
        """Greedy longest-first segmentation of ``toks`` into (start, end, concept or None)."""
        out, i, n = [], 0, len(toks)
        while i < n:
            for L in range(min(self.max_phrase, n - i), 0, -1):
                cid = self.phrases.get(toks[i:i + L])
                if cid is not None:
                    out.append((i, i + L, cid))
                    i += L
                    break
            else:
                out.append((i, i + 1, None))
                i += 1
        return out

    # ---- titles -----------------------------------------------------------------------------
    def title_terms(self, title: str) -> tuple[str, ...]:
        return _title_terms(self, title)

    def _title_terms(self, title: str) -> tuple[str, ...]:
        toks = surface_tokens(title)
        terms: list[str] = list(toks)
        concepts: list[str] = []
        has_concept = [False] * len(toks)
        for a, b, cid in self.match_phrases(toks):
            if cid is not None:
                concepts.extend(self.expand(cid))
                has_concept[a:b] = [True] * (b - a)
        for tok, known in zip(toks, has_concept, strict=True):
            parts = self.subword_parts(tok)
            terms.extend("#" + p for p in parts)
            head = self.phrases.get((parts[0],)) if parts and not known else None
            if head is not None:  # a compound the table does not know stands for its head's concept
                concepts.extend(self.expand(head))
        terms.extend("=" + c for c in dict.fromkeys(concepts))
        return tuple(dict.fromkeys(terms))

    def subword_parts(self, token: str) -> tuple[str, ...]:
        """Dictionary parts of a Thai compound word, head first (empty for other tokens)."""
        if len(token) < 2 * _MIN_PART or not _THAI.search(token):
            return ()
        return _subword_parts(self, token)

    def _split_compound(self, token: str) -> tuple[str, ...]:
        from pythainlp.tokenize import word_tokenize

        trie, words = _sub_dictionary()
        with self._lock:  # the word itself is left out of the dictionary for this one call
            present = token in words
            if present:
                trie.remove(token)
            try:
                parts = word_tokenize(token, custom_dict=trie, engine="newmm", keep_whitespace=False)
            finally:
                if present:
                    trie.add(token)
        if len(parts) < 2 or not all(len(p) >= _MIN_PART and p in words for p in parts):
            return ()
        return tuple(parts)

    # ---- queries ----------------------------------------------------------------------------
    def query(self, text: str) -> ParsedQuery:
        return _parse_query(self, text)

    def _query(self, text: str) -> ParsedQuery:
        norm = " ".join(clean(text).split())
        toks = surface_tokens(norm)
        terms: list[QueryTerm] = []
        cats: list[str] = []
        for a, b, cid in self.match_phrases(toks):
            words = " ".join(toks[a:b])
            if cid is not None:
                c = self.concepts[cid]
                alts = ("=" + cid,) + tuple("@" + k for k in c.categories if c.tag == "category")
                terms.append(QueryTerm(words, c.tag, cid, alts))
                if c.tag != "condition":
                    cats.extend(c.categories)
            elif toks[a] not in self.stopwords:
                terms.append(QueryTerm(words, "other", None, (toks[a], "#" + toks[a])))
        seen: set[tuple[str, ...]] = set()
        unique = []
        for t in terms:  # a word typed twice is one term
            if t.alternatives not in seen:
                seen.add(t.alternatives)
                unique.append(t)
        return ParsedQuery(norm, tuple(unique), tuple(dict.fromkeys(cats)))


@lru_cache(maxsize=200_000)
def surface_tokens(text: str) -> tuple[str, ...]:
    """Normalised words: :func:`clean`, then the title tokenizer (Thai segmented with newmm, other
    scripts split on punctuation and spaces)."""
    return tokenize(clean(text)) if text else ()


@lru_cache(maxsize=200_000)
def _title_terms(a: Analyzer, title: str) -> tuple[str, ...]:
    return a._title_terms(title)


@lru_cache(maxsize=100_000)
def _subword_parts(a: Analyzer, token: str, depth: int = _SUB_DEPTH) -> tuple[str, ...]:
    parts = a._split_compound(token)
    if not parts:
        return ()
    out: list[str] = []
    for p in parts:
        out.append(p)
        if depth > 1:
            out.extend(_subword_parts(a, p, depth - 1))
    return tuple(dict.fromkeys(out))


@lru_cache(maxsize=50_000)
def _parse_query(a: Analyzer, text: str) -> ParsedQuery:
    return a._query(text)


@cache
def _sub_dictionary():
    from pythainlp.corpus import thai_words
    from pythainlp.util import Trie

    words = frozenset(thai_words())
    return Trie(words), words


@cache
def analyzer() -> Analyzer:
    """The process's analyzer over the repository's lexicon (loaded once)."""
    return Analyzer.from_file()


def warm() -> None:
    """Load the dictionaries and exercise every step once (the first newmm call builds its trie)."""
    a = analyzer()
    a.title_terms("กล้องถ่ายรูป Canon มือสอง like new")
    a.query("ไอโฟน มือสอง")
