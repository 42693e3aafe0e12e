"""The listing keyword index: BM25 (``bm25s``) over the analyzer's terms, query understanding, the
retrieval fallback chain and the text-relevance features — one object used by the materialiser
(build), the service (retrieval + hydration) and the ETL (features of training rows), so offline and
online relevance values come from the same code over the same corpus statistics.

    >>> index = SearchIndex.build(product_ids, titles, category_codes, eligible=in_stock)
    >>> plan = index.plan("ไอโฟน มือสอง")          # segment, tag, synonyms, layout / spelling fixes
    >>> hits = index.retrieve(plan, 1000)         # all required terms -> rarest term -> no_match
    >>> cols = index.relevance(plan, hits.ids)    # the TEXT_FEATURES columns of kernels.features

Corpus statistics (document frequencies, BM25 lengths) cover the whole catalogue the index is built
from; ``eligible`` (in stock, seller not banned) only limits what retrieval returns. The ETL builds
the same catalogue's index without the mask, so its features equal the served ones.

Query plan, deterministic for a given index: (1) the analyzer's segmentation and tags; (2) when some
required term is in no title, the query typed on the wrong keyboard layout (pythainlp
``thai_to_eng`` / ``eng_to_thai``) is tried (``keyboard_layout_fixed``); (3) then every space-separated
part holding such a term is corrected to the closest indexed word by Damerau-Levenshtein distance
(``rapidfuzz``; 1 edit up to 5 characters, 2 above; none under 4) — ``fuzzy_match``, with the
corrected text as ``suggestion``. Retrieval requires every informative term (any spelling of each);
when that finds some but fewer than ``min_hits`` listings the rarest required term alone widens it
(``relaxed_to_rarest_term``, full matches first); when no listing has them all the answer is
``no_match`` with the rarest term as ``suggestion`` (a query whose terms never meet is not filled
with listings that miss one); a query with a term no title has, or with no hit at
all, answers ``no_match`` with no listings (and, where the other words do match, a ``suggestion``
without the unknown ones). Condition words (มือสอง, like new) are never required unless the query has
nothing else: they are the ``text_condition_match`` feature.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from engines.search.analyzer import Analyzer, ParsedQuery, QueryTerm, analyzer, clean, surface_tokens
from engines.search.stored import parsed_of_stored, stored_query
from kernels.features import TEXT_FEATURES
from kernels.scoring import relevance_tier

FOLDER = "search"
# names of the steps, as the service's Fallback enum spells them
LAYOUT_FIXED = "keyboard_layout_fixed"
FUZZY = "fuzzy_match"
RELAXED = "relaxed_to_rarest_term"
CONDITION_ONLY = "condition_only_query"
NO_MATCH = "no_match"
_MIN_FUZZY_LEN = 4


class SearchIndexError(RuntimeError):
    """The search index cannot serve (missing or corrupt files)."""


@dataclass(frozen=True)
class QueryPlan:
    """What the service understood of a query: the parsed terms (after any fix), the fixes applied and
    a suggestion for the client."""

    query: str  # as typed
    parsed: ParsedQuery
    fixes: tuple[str, ...] = ()
    suggestion: str | None = None
    unknown: tuple[str, ...] = ()  # required words no listing has
    stored: str = ""  # what a store may keep of the query (engines.search.stored): no user text

    def body(self) -> dict:
        out = {"normalized": self.parsed.text, "terms": self.parsed.tagged(), "fixes": list(self.fixes)}
        if self.suggestion:
            out["suggestion"] = self.suggestion
        if self.unknown:
            out["unknown_terms"] = list(self.unknown)
        return out


@dataclass(frozen=True)
class SearchHits:
    ids: np.ndarray  # product ids, best first
    scores: np.ndarray  # retrieval score (relevance tier * 100 + BM25)
    plan: QueryPlan
    steps: tuple[str, ...] = field(default=())  # fallback steps taken (names above)


class SearchIndex:
    def __init__(self, bm25, ids: np.ndarray, category: np.ndarray, eligible: np.ndarray, compact: np.ndarray,
                 a: Analyzer | None = None, avgdl: float | None = None):
        self.bm25 = bm25
        self.ids = np.asarray(ids, dtype=np.int64)
        self.category = np.asarray(category, dtype=np.int32)
        self.eligible = np.asarray(eligible, dtype=bool)
        self.compact = compact  # object array: normalised title without spaces (phrase feature)
        self.a = a or analyzer()
        sc = bm25.scores
        self._indptr, self._indices, self._data = sc["indptr"], sc["indices"], sc["data"]
        self.vocab = bm25.vocab_dict
        self.n_docs = len(self.ids)
        self.avgdl = avgdl  # mean document length at build (None: an index saved before it was kept)
        self._fuzzy_vocab: list[str] | None = None
        self._caches()

    def _caches(self) -> None:
        """Per-index memos (the postings never change once built): a term's listing rows, the titles as a
        numpy string array (the phrase feature's vectorised substring test)."""
        self._rows_memo: dict[tuple[str, ...], np.ndarray] = {}
        self._compact_u: np.ndarray | None = None

    def __getstate__(self) -> dict:  # Dask ships the ETL's index to its workers; the analyzer is per process
        return {k: v for k, v in self.__dict__.items() if k not in ("a", "_fuzzy_vocab", "_rows_memo", "_compact_u")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, a=analyzer(), _fuzzy_vocab=None)
        self._caches()

    # ---- build / save / load ---------------------------------------------------------------
    @classmethod
    def build(cls, ids, titles, categories, eligible=None, a: Analyzer | None = None) -> SearchIndex:
        """Index ``titles`` of listings ``ids`` (any order) with their category codes."""
        import bm25s

        from gpu_core.schema import CATEGORIES

        a = a or analyzer()
        ids = np.asarray(ids, dtype=np.int64)
        order = np.argsort(ids, kind="stable")
        titles = [str(titles[i]) for i in order]
        cats = np.asarray(categories, dtype=np.int32)[order]
        docs = [[*a.title_terms(t), "@" + CATEGORIES[c]] for t, c in zip(titles, cats, strict=True)]
        bm25 = bm25s.BM25()
        bm25.index(docs, show_progress=False)
        elig = np.ones(len(ids), bool) if eligible is None else np.asarray(eligible, bool)[order]
        compact = np.array(["".join(surface_tokens(t)) for t in titles], dtype=object)
        avgdl = float(np.mean([len(d) for d in docs])) if docs else 1.0
        return cls(bm25, ids[order], cats, elig, compact, a, avgdl)

    def with_listings(self, ids, titles, categories) -> SearchIndex:
        """A new index: this one plus listings ``ids`` (all above the highest id held, e.g. intake listings).
        The added titles are scored with this index's statistics (BM25 k1/b, document count and mean
        length; a term's IDF counts the added titles too); the listings already held keep their scores
        until the next build. Not saved (:meth:`save` is for built indexes)."""
        import copy

        from gpu_core.schema import CATEGORIES

        ids = np.asarray(ids, dtype=np.int64)
        if not len(ids):
            return self
        order = np.argsort(ids, kind="stable")
        ids = ids[order]
        if self.n_docs and ids[0] <= self.ids[-1]:
            raise ValueError("with_listings adds listings above the highest id held")
        titles = [str(titles[i]) for i in order]
        cats = np.asarray(categories, dtype=np.int32)[order]
        k1, b = float(self.bm25.k1), float(self.bm25.b)
        avgdl = self.avgdl or 1.0
        vocab = dict(self.vocab)
        add_rows: dict[int, list[tuple[int, float]]] = {}
        df = np.diff(self._indptr)
        for j, (t, c) in enumerate(zip(titles, cats, strict=True)):
            terms = [*self.a.title_terms(t), "@" + CATEGORIES[int(c)]]
            counts: dict[str, int] = {}
            for term in terms:
                counts[term] = counts.get(term, 0) + 1
            norm = k1 * (1 - b + b * len(terms) / avgdl)
            for term, tf in counts.items():
                tid = vocab.setdefault(term, len(vocab))
                add_rows.setdefault(tid, []).append((self.n_docs + j, tf / (tf + norm)))
        n = self.n_docs + len(ids)
        n_terms = len(vocab)
        indptr = np.zeros(n_terms + 1, np.int64)
        counts_per_term = np.zeros(n_terms, np.int64)
        counts_per_term[:len(df)] = df
        for tid, rows in add_rows.items():
            counts_per_term[tid] += len(rows)
        np.cumsum(counts_per_term, out=indptr[1:])
        indices = np.empty(indptr[-1], self._indices.dtype)
        data = np.empty(indptr[-1], np.float32)
        for tid in range(n_terms):
            a0, a1 = (int(self._indptr[tid]), int(self._indptr[tid + 1])) if tid < len(df) else (0, 0)
            at, m = int(indptr[tid]), a1 - a0
            indices[at:at + m] = self._indices[a0:a1]
            data[at:at + m] = self._data[a0:a1]
            extra = add_rows.get(tid)
            if extra:
                idf = self.idf(int(counts_per_term[tid]))
                indices[at + m:at + m + len(extra)] = [r for r, _ in extra]
                data[at + m:at + m + len(extra)] = [idf * v for _, v in extra]
        new = copy.copy(self)
        new._indptr, new._indices, new._data, new.vocab = indptr, indices, data, vocab
        new.ids = np.concatenate([self.ids, ids])
        new.category = np.concatenate([self.category, cats])
        new.eligible = np.concatenate([self.eligible, np.ones(len(ids), bool)])
        new.compact = np.concatenate([self.compact, np.array(["".join(surface_tokens(t)) for t in titles], dtype=object)])
        new.n_docs = n
        new._fuzzy_vocab = None
        new._caches()
        return new

    def save(self, folder: Path) -> None:
        d = Path(folder) / FOLDER
        d.mkdir(parents=True, exist_ok=True)
        self.bm25.save(str(d / "bm25"), show_progress=False)
        np.savez(d / "docs.npz", ids=self.ids, category=self.category, eligible=self.eligible,
                 avgdl=np.float64(self.avgdl or 0.0))
        (d / "titles.json").write_text(json.dumps(self.compact.tolist(), ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> SearchIndex:
        import bm25s

        d = Path(folder) / FOLDER
        if not (d / "docs.npz").exists():
            raise SearchIndexError(f"search index missing: {d}")
        z = np.load(d / "docs.npz")
        compact = np.array(json.loads((d / "titles.json").read_text(encoding="utf-8")), dtype=object)
        avgdl = float(z["avgdl"]) if "avgdl" in z.files else None
        return cls(bm25s.BM25.load(str(d / "bm25"), show_progress=False), z["ids"], z["category"], z["eligible"],
                   compact, avgdl=avgdl or None)

    def warm(self, rounds: int = 3) -> None:
        """Exercise every path (dictionaries, tries, the fuzzy vocabulary; a Thai product + condition query, an
        English two-word one, a misspelling, nothing to find, a condition alone) at the served depth (1,000
        hits), a few rounds, so that Python's specialising interpreter and numpy's first calls are done
        before serving: the first search after start then costs what a warm process's first-time query does."""
        for _ in range(rounds):
            for q in ("ไอโฟน มือสอง", "sony camera", "iphnoe", "zzzzqqq", "มือสอง"):
                plan = self.plan(q)
                hits = self.retrieve(plan, 1000)
                self.relevance(plan, hits.ids)

    # ---- postings ---------------------------------------------------------------------------
    def _posting(self, term: str) -> tuple[np.ndarray, np.ndarray]:
        tid = self.vocab.get(term)
        if tid is None:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        a, b = self._indptr[tid], self._indptr[tid + 1]
        return self._indices[a:b], self._data[a:b]

    _ROWS_MEMO_MAX = 4096  # distinct terms remembered (cleared when full)

    def _rows(self, t: QueryTerm) -> np.ndarray:
        """Sorted rows holding any alternative of ``t`` (memoised: plan, retrieval and the features each
        need a term's rows or its document frequency; callers never write into the array)."""
        key = t.alternatives
        got = self._rows_memo.get(key)
        if got is None:
            parts = [self._posting(alt)[0] for alt in key]
            got = np.unique(np.concatenate(parts)) if parts else np.empty(0, np.int64)
            if len(self._rows_memo) >= self._ROWS_MEMO_MAX:
                self._rows_memo.clear()
            self._rows_memo[key] = got
        return got

    def df(self, t: QueryTerm) -> int:
        return len(self._rows(t))

    def idf(self, df: int) -> float:
        return math.log(1.0 + (self.n_docs - df + 0.5) / (df + 0.5))

    # ---- query understanding -------------------------------------------------------------------
    def plan(self, query: str) -> QueryPlan:
        parsed = self.a.query(query)
        unknown = self._unknown(parsed)
        fixes: list[str] = []
        suggestion = None
        if unknown:
            alt = self._layout_fixed(query)
            if alt is not None:
                parsed, unknown = alt, ()
                fixes.append(LAYOUT_FIXED)
                suggestion = alt.text
        if unknown:
            corrected = self._spelling(parsed)
            if corrected is not None:
                c_parsed = self.a.query(corrected)
                c_unknown = self._unknown(c_parsed)
                if len(c_unknown) < len(unknown):
                    parsed, unknown = c_parsed, c_unknown
                    fixes.append(FUZZY)
                    suggestion = c_parsed.text
        if unknown:
            rest = [t.text for t in parsed.terms if t.text not in unknown]
            suggestion = " ".join(rest) if rest and any(t.tag != "condition" for t in parsed.terms
                                                       if t.text in rest) else None
        return QueryPlan(query, parsed, tuple(fixes), suggestion, unknown, self.stored(parsed))

    def stored(self, parsed: ParsedQuery) -> str:
        """The stored form of an understood query: concepts and catalogue words kept, other words not."""
        return stored_query(parsed, known=lambda t: self.df(t) > 0)

    def plan_recorded(self, query: str) -> QueryPlan:
        """The plan of a query read back from a store: a stored form (no fixes to redo: it was stored
        understood), or typed text (values written before the stored form) planned as typed."""
        parsed = parsed_of_stored(query, self.a)
        if parsed is None:
            return self.plan(query)
        return QueryPlan(query, parsed, (), None, self._unknown(parsed), query)

    def _unknown(self, parsed: ParsedQuery) -> tuple[str, ...]:
        return tuple(t.text for t in parsed.required if self.df(t) == 0)

    def _layout_fixed(self, query: str) -> ParsedQuery | None:
        from pythainlp.util import eng_to_thai, thai_to_eng

        text = "".join(ch for ch in query if ch.isprintable() and not 0xD800 <= ord(ch) <= 0xDFFF)  # case kept:
        thai = sum("\u0e00" <= ch <= "\u0e7f" for ch in text)  # shifted keys are other letters
        latin = sum(ch.isascii() and ch.isalpha() for ch in text)
        if not thai and not latin:
            return None
        converted = thai_to_eng(text) if thai >= latin else eng_to_thai(text)
        p = self.a.query(converted)
        return p if p.required and not self._unknown(p) else None

    def _spelling(self, parsed: ParsedQuery) -> str | None:
        from rapidfuzz import process
        from rapidfuzz.distance import DamerauLevenshtein

        vocab = self._fuzzy_words()
        changed = False
        out = []
        for chunk in parsed.text.split():
            p = self.a.query(chunk)
            if not self._unknown(p) or len(chunk) < _MIN_FUZZY_LEN:
                out.append(chunk)
                continue
            cutoff = 1 if len(chunk) <= 5 else 2
            best = process.extractOne(chunk, vocab, scorer=DamerauLevenshtein.distance, score_cutoff=cutoff)
            if best is None:
                out.append(chunk)
                continue
            out.append(best[0])
            changed = True
        return " ".join(out) if changed else None

    def _fuzzy_words(self) -> list[str]:
        """Spelling targets: indexed title words and the lexicon's one-word terms of indexed concepts."""
        if self._fuzzy_vocab is None:
            words = {w for w in self.vocab if w and w[0] not in "#=@" and len(w) >= _MIN_FUZZY_LEN - 1
                     and not w.isdigit()}
            for c in self.a.concepts.values():
                if ("=" + c.id) in self.vocab:
                    words.update(t for t in (clean(x) for x in c.terms) if " " not in t and len(t) >= 3)
            self._fuzzy_vocab = sorted(words)
        return self._fuzzy_vocab

    # ---- retrieval --------------------------------------------------------------------------
    def retrieve(self, plan: QueryPlan | str, k: int, min_hits: int = 1) -> SearchHits:
        """Listings that hold every required term of ``plan`` (eligible ones), best first, at most ``k``;
        the fallback chain when that finds fewer than ``min_hits``."""
        if isinstance(plan, str):
            plan = self.plan(plan)
        steps, done = chain_start(plan)
        if done is not None:
            return done
        req = plan.parsed.required
        empty = np.empty(0, np.int64)
        sets = [self._rows(t) for t in req]
        rows = sets[0]
        for s in sets[1:]:
            rows = np.intersect1d(rows, s, assume_unique=True)
        rows = rows[self.eligible[rows]]
        rarest = rarest_term([len(s) for s in sets])
        if not len(rows):  # no listing has them all: say so (and suggest the rarest term), never fill
            return no_match(plan, steps, req[rarest].text)
        if len(rows) < min_hits and len(req) > 1:
            more = sets[rarest][self.eligible[sets[rarest]]]
            more = np.setdiff1d(more, rows, assume_unique=True)
            if len(more):
                rows = np.concatenate([rows, more])
                steps.append(RELAXED)
        if not len(rows):
            return SearchHits(empty, np.empty(0, np.float32), plan, (*steps, NO_MATCH))
        f = self._features(plan, rows, phrase=False)  # the order needs the tier and BM25 only
        tier = relevance_order_key(f)
        score = (tier * 100.0 + f["text_bm25"]).astype(np.float32)
        order = np.lexsort((rows, -score))[:k]
        return SearchHits(self.ids[rows[order]], score[order], plan, tuple(steps))

    def search(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(product ids, scores) best first (the feed's session-query seasoning and simple callers)."""
        hits = self.retrieve(query, k)
        return hits.ids, hits.scores

    # ---- relevance features ------------------------------------------------------------------
    def relevance(self, plan: QueryPlan | str, product_ids: np.ndarray) -> dict[str, np.ndarray]:
        """The TEXT_FEATURES columns for listings ``product_ids`` (0 for ids the index does not hold)."""
        if isinstance(plan, str):
            plan = self.plan(plan)
        pids = np.asarray(product_ids, dtype=np.int64)
        n = len(pids)
        if not n or not self.n_docs or not plan.parsed.terms:
            return {k: np.zeros(n, np.float32) for k in TEXT_FEATURES}
        rows = np.clip(np.searchsorted(self.ids, pids), 0, self.n_docs - 1)
        known = self.ids[rows] == pids
        f = self._features(plan, rows)
        return {k: np.where(known, v, 0.0).astype(np.float32) for k, v in f.items()}

    def _term_match(self, t: QueryTerm, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(matched bool, best BM25 of the term's title alternatives) per row."""
        hit = np.zeros(len(rows), bool)
        best = np.zeros(len(rows), np.float32)
        for alt in t.alternatives:
            post, vals = self._posting(alt)
            if not len(post):
                continue
            pos = np.clip(np.searchsorted(post, rows), 0, len(post) - 1)
            m = post[pos] == rows
            hit |= m
            if alt[0] != "@":  # the category field is a match, not title BM25
                best = np.maximum(best, np.where(m, vals[pos], 0.0))
        return hit, best

    def _features(self, plan: QueryPlan, rows: np.ndarray, phrase: bool = True) -> dict[str, np.ndarray]:
        """The TEXT_FEATURES of index ``rows`` (``phrase=False``: ``text_phrase`` left 0, for retrieval's order,
        which does not read it)."""
        n = len(rows)
        p = plan.parsed
        req, cond = p.required, p.conditions if not p.condition_only else ()
        bm25 = np.zeros(n, np.float32)
        covered = np.zeros(n, np.float64)
        weight = 0.0
        all_req = np.ones(n, bool)
        brand_hit = np.zeros(n, np.float32)
        n_brand = 0
        any_unknown = False
        for t in req:
            hit, best = self._term_match(t, rows)
            df = self.df(t)
            any_unknown |= df == 0
            w = self.idf(df)
            weight += w
            covered += w * hit
            all_req &= hit
            bm25 += best
            if t.tag == "brand":
                brand_hit += hit
                n_brand += 1
        cond_hit = np.zeros(n, np.float32)
        for t in cond:
            hit, best = self._term_match(t, rows)
            cond_hit += hit
            bm25 += best
        from gpu_core.schema import CATEGORIES

        cats = [CATEGORIES.index(c) for c in p.categories if c in CATEGORIES]
        cat_match = np.isin(self.category[rows], cats) if cats else np.zeros(n, bool)
        words = "".join(surface_tokens(" ".join(t.text for t in req)))
        # a query with a word no listing has is no phrase match (its stored form keeps no such word)
        if phrase and words and n and not any_unknown:
            if self._compact_u is None:
                self._compact_u = self.compact.astype(np.dtypes.StringDType())  # the substring test runs in C
            phrase_hit = np.strings.find(self._compact_u[rows], words) >= 0
        else:
            phrase_hit = np.zeros(n, bool)
        return {
            "text_bm25": bm25,
            "text_coverage": (covered / weight if weight > 0 else covered).astype(np.float32),
            "text_all_required": (all_req & (len(req) > 0)).astype(np.float32),
            "text_phrase": phrase_hit.astype(np.float32),
            "text_brand_match": brand_hit / n_brand if n_brand else brand_hit,
            "text_category_match": cat_match.astype(np.float32),
            "text_condition_match": cond_hit / len(cond) if cond else cond_hit,
        }


def chain_start(plan: QueryPlan) -> tuple[list[str], SearchHits | None]:
    """The fallback steps a query starts with (its fixes, ``condition_only_query``), and the ``no_match``
    answer when it has no required term or one that no title holds (every backend's first step)."""
    steps = list(plan.fixes)
    if plan.parsed.condition_only:
        steps.append(CONDITION_ONLY)
    if not plan.parsed.required or plan.unknown:
        return steps, SearchHits(np.empty(0, np.int64), np.empty(0, np.float32), plan, (*steps, NO_MATCH))
    return steps, None


def rarest_term(doc_counts: list[int]) -> int:
    """Position of the required term in the fewest titles (the first on ties): the relaxation step."""
    return min(range(len(doc_counts)), key=lambda i: (doc_counts[i], i))


def no_match(plan: QueryPlan, steps: list[str], rarest: str) -> SearchHits:
    """No listing holds every required term: ``no_match`` with the rarest one as suggestion, never a fill."""
    plan = replace(plan, suggestion=plan.suggestion or rarest)
    return SearchHits(np.empty(0, np.int64), np.empty(0, np.float32), plan, (*steps, NO_MATCH))


def relevance_order_key(f: dict[str, np.ndarray]) -> np.ndarray:
    """The relevance tier of the feature columns (:func:`kernels.scoring.relevance_tier`, the tier the
    FinalScore orders by)."""
    return np.asarray(relevance_tier(f["text_all_required"], f["text_coverage"], f["text_condition_match"], xp=np))
