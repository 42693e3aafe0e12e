"""The stored form of a search query: what the replay log, the lake's ``query`` column and the session's
current query in the online store keep instead of the text the buyer typed (no PII at rest, issue 15).

    >>> plan = index.plan("ไอโฟน 0812345678 case")
    >>> plan.stored                      # the understood query; the phone number is no catalogue word
    'q1:[["c","iphone","ไอโฟน"],["u"],["w","case"]]'
    >>> index.plan_recorded(plan.stored) # a QueryPlan with the same relevance features as ``plan``

A stored query is the *understood* query (after the keyboard-layout and spelling fixes), one entry per
term, in order:

* ``["c", concept_id, words]`` — a concept of the synonym table and the table's words that named it
  (never user text: a concept only matches a phrase of the table);
* ``["w", word]`` — a plain word that some listing title holds (catalogue text, public with the listing);
* ``["u"]`` — any other word (a name, a phone number, an e-mail, chat text): kept only as "a word no
  listing has", which is all the relevance features use of it (its IDF weight counts against coverage,
  it matches nothing).

So the relevance features (``TEXT_FEATURES``) of a stored query against the index equal those of the
live plan: same alternatives and tags for every concept and known word, a term of document frequency 0
for every unknown one (and ``text_phrase`` is 0 when a required term is unknown, on both sides). A
writer without an index (the stream processor given a raw query by another producer) keeps concepts
only; the synthetic world generator keeps every word (its queries are templates, not user text).
Values that are not stored forms (lakes and logs written before this format) are read as typed text.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from engines.search.analyzer import Analyzer, ParsedQuery, QueryTerm, analyzer

PREFIX = "q1:"
CONCEPT, WORD, UNKNOWN = "c", "w", "u"


def stored_query(parsed: ParsedQuery, known: Callable[[QueryTerm], bool] | None = None) -> str:
    """The stored form of ``parsed`` ("" for a query without terms). ``known(term)`` says whether a
    plain word may be kept (a catalogue word); ``None`` keeps none."""
    out: list[list[str]] = []
    for t in parsed.terms:
        if t.concept is not None:
            out.append([CONCEPT, t.concept, t.text])
        elif known is not None and known(t):
            out.append([WORD, t.text])
        else:
            out.append([UNKNOWN])
    return PREFIX + json.dumps(out, ensure_ascii=False, separators=(",", ":")) if out else ""


def is_stored(value: str) -> bool:
    return value.startswith(PREFIX)


def _entries(value: str) -> list | None:
    """The entries of a stored form, or ``None`` for anything else."""
    if not is_stored(value):
        return None
    try:
        raw = json.loads(value[len(PREFIX):])
    except ValueError:
        return None
    return raw if isinstance(raw, list) else None


def parsed_of_stored(value: str, a: Analyzer) -> ParsedQuery | None:
    """The ParsedQuery a stored form stands for (its terms and implied categories), or ``None`` when
    ``value`` is not a stored form (typed text). A concept the lexicon no longer has reads as unknown."""
    raw = _entries(value)
    if raw is None:
        return None
    terms: list[QueryTerm] = []
    cats: list[str] = []
    for entry in raw:
        kind = entry[0] if isinstance(entry, list) and entry else None
        c = a.concepts.get(entry[1]) if kind == CONCEPT and len(entry) == 3 else None
        if c is not None:
            alts = ("=" + c.id,) + tuple("@" + k for k in c.categories if c.tag == "category")
            terms.append(QueryTerm(str(entry[2]), c.tag, c.id, alts))
            if c.tag != "condition":
                cats.extend(c.categories)
        elif kind == WORD and len(entry) == 2 and isinstance(entry[1], str) and entry[1]:
            terms.append(QueryTerm(entry[1], "other", None, (entry[1], "#" + entry[1])))
        else:
            terms.append(QueryTerm("", "other", None, ()))  # a word no listing had: matches nothing
    text = " ".join(t.text for t in terms if t.text)
    return ParsedQuery(text, tuple(terms), tuple(dict.fromkeys(cats)))


def redact(text: str, index=None) -> str:
    """The stored form of typed ``text``: understood by ``index`` (a SearchIndex: fixes applied, its
    catalogue words kept), or without one (concepts kept, every plain word unknown)."""
    if not text:
        return ""
    if index is not None:
        return index.plan(text).stored
    return stored_query(analyzer().query(text), None)


def ensure_stored(value: str) -> str:
    """``value`` if it is already a stored form, else the index-less stored form of it as typed text (a
    producer other than the service put raw text on the bus)."""
    if not value or parsed_of_stored(value, analyzer()) is not None:
        return value
    return redact(value)


def kept_words(value: str) -> str:
    """The words a stored form kept (concept phrases and catalogue words, space-separated; unknown
    words left out); typed text as it is."""
    raw = _entries(value)
    if raw is None:
        return value
    return " ".join(str(e[-1]) for e in raw if isinstance(e, list) and len(e) >= 2 and e[0] in (CONCEPT, WORD))
