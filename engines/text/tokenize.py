"""Word tokenisation of titles and queries: Thai with pythainlp ``newmm``, English lower-cased words;
punctuation dropped. The search analyzer (:mod:`engines.search.analyzer`) runs it after its
normalisation; the baseline :class:`engines.index.KeywordIndex` (the index before issue 11, kept for
the search evaluation's side-by-side) runs it on the raw text."""

from __future__ import annotations

import re
from functools import lru_cache

_THAI = re.compile(r"[\u0E00-\u0E7F]")
_SPLIT = re.compile(r"[^\w\u0E00-\u0E7F]+")


@lru_cache(maxsize=200_000)
def tokenize(text: str) -> tuple[str, ...]:
    if not text:
        return ()
    out: list[str] = []
    for chunk in _SPLIT.split(text.lower()):
        if not chunk:
            continue
        if _THAI.search(chunk):
            out.extend(_thai(chunk))
        else:
            out.append(chunk)
    return tuple(out)


@lru_cache(maxsize=200_000)
def _thai(chunk: str) -> tuple[str, ...]:
    from pythainlp.tokenize import word_tokenize

    return tuple(t for t in word_tokenize(chunk, engine="newmm", keep_whitespace=False) if t.strip())


def text_match(query_tokens: tuple[str, ...], title_tokens: tuple[str, ...]) -> float:
    """Share of distinct query tokens found in the title (0 without a query)."""
    q = set(query_tokens)
    if not q:
        return 0.0
    return len(q & set(title_tokens)) / len(q)
