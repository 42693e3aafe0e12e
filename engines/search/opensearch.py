"""The keyword index with retrieval in OpenSearch (issue 17, ``keyword_backend = "opensearch"``).

    build_index(url, index_name(version), ids, titles, categories, eligible=in_stock)   # the materialiser
    index = OpenSearchIndex(SearchIndex.load(folder), url, index_name(version))           # the service
    hits = index.retrieve(index.plan("ไอโฟน มือสอง"), 1000)                             # same interface

The split: **OpenSearch retrieves** (which listings hold the query's terms, and their BM25 order), **our
code understands the query and computes relevance** — the plan (segmentation, tags, synonyms, keyboard
layout and spelling fixes, unknown terms) and the seven ``TEXT_FEATURES`` come from the in-process
:class:`~engines.search.index.SearchIndex` over the same catalogue, so training rows, replay and served
candidates keep one relevance function whichever backend retrieved them.

Mapping (one index per snapshot version, 1 shard, no replica):

* ``terms`` — the analyzer's index terms of the title (surface words, ``#sub-word parts`` of Thai
  compounds, ``=concepts`` of the synonym table, ``@category``), pre-analyzed (whitespace tokenizer), BM25
  with the embedded index's k1 = 1.5, b = 0.75: the retrieval field, equivalent to the embedded index term
  for term (so กล้อง finds กล้องถ่ายรูป and ไอโฟน finds iPhone exactly as it does there);
* ``title`` — the raw title through OpenSearch's own ``thai`` tokenizer (the JDK's Thai BreakIterator),
  lower case and Thai digits, with a search-time ``synonym_graph`` filter generated from the same
  ``engines/search/data/lexicon.json`` (one rule per concept: every spelling of it); a plain word of a
  query (one the table does not know) may also match here, as a phrase (``title_recall``);
* ``brand`` (brand concept ids), ``category`` (keyword), ``eligible`` (in stock, seller not banned), ``pid``.

Retrieval runs the embedded index's chain with OpenSearch queries: every required term must match (any of
its spellings: a ``dis_max`` of term queries, scored by the best one as the embedded BM25 is), condition
words score, ``eligible`` filters; fewer than ``min_hits`` full matches -> the rarest required term alone,
full matches first (``relaxed_to_rarest_term``); none -> ``no_match``. The score is the embedded one:
relevance tier · 100 + BM25, the tier from constant-score clauses. A node that refuses, times out or
answers an error raises :class:`OpenSearchError` and the retrieval stage answers ``keyword_index_down``.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterable, Iterator

import httpx
import numpy as np

from engines.search.analyzer import Analyzer, QueryTerm, analyzer, clean
from engines.search.index import (
    RELAXED,
    QueryPlan,
    SearchHits,
    SearchIndex,
    SearchIndexError,
    chain_start,
    no_match,
    rarest_term,
)

log = logging.getLogger(__name__)

INDEX_PREFIX = "jaikod-listings-"
K1, B = 1.5, 0.75  # bm25s' defaults, which SearchIndex.build uses
_BULK_DOCS = 1000


class OpenSearchError(SearchIndexError):
    """The node refused, timed out or answered an error."""


def index_name(version: str) -> str:
    """The OpenSearch index of one snapshot version (materialiser and service agree through this)."""
    return INDEX_PREFIX + version.lower()


# ---- mapping ---------------------------------------------------------------------------------
def synonym_rules(a: Analyzer | None = None) -> list[str]:
    """One equivalence rule per concept of the synonym table: every spelling of it, normalised as the
    analyzer normalises (the same data the embedded index maps to ``=concept`` terms)."""
    a = a or analyzer()
    rules = []
    for c in a.concepts.values():
        terms = [t for t in dict.fromkeys(" ".join(clean(x).split()) for x in c.terms)
                 if t and "," not in t and "=>" not in t]
        if len(terms) > 1:
            rules.append(", ".join(terms))
    return rules


def index_body(a: Analyzer | None = None) -> dict:
    """Settings + mappings of a listing index."""
    title_filters = ["lowercase", "decimal_digit"]
    return {
        "settings": {
            "number_of_shards": 1, "number_of_replicas": 0, "refresh_interval": "-1",
            "similarity": {"jk_bm25": {"type": "BM25", "k1": K1, "b": B}},
            "analysis": {
                "filter": {"jk_synonyms": {"type": "synonym_graph", "synonyms": synonym_rules(a), "lenient": True}},
                "analyzer": {
                    "jk_terms": {"type": "custom", "tokenizer": "whitespace"},
                    "jk_title": {"type": "custom", "tokenizer": "thai", "filter": title_filters},
                    "jk_title_search": {"type": "custom", "tokenizer": "thai",
                                        "filter": [*title_filters, "jk_synonyms"]},
                },
            },
        },
        "mappings": {
            "dynamic": "strict",
            "properties": {
                "pid": {"type": "long"},
                "terms": {"type": "text", "analyzer": "jk_terms", "similarity": "jk_bm25"},
                "title": {"type": "text", "analyzer": "jk_title", "search_analyzer": "jk_title_search",
                          "similarity": "jk_bm25"},
                "brand": {"type": "keyword"},
                "category": {"type": "keyword"},
                "eligible": {"type": "boolean"},
            },
        },
    }


def documents(ids, titles, categories, eligible=None, a: Analyzer | None = None) -> Iterator[dict]:
    """One document per listing: the same analyzer terms as :meth:`SearchIndex.build` indexes."""
    from gpu_core.schema import CATEGORIES

    a = a or analyzer()
    elig = np.ones(len(ids), bool) if eligible is None else np.asarray(eligible, bool)
    for pid, title, cat, ok in zip(np.asarray(ids, np.int64), titles, np.asarray(categories, np.int32), elig,
                                   strict=True):
        terms = a.title_terms(str(title))
        brands = [t[1:] for t in terms if t[0] == "=" and a.concepts[t[1:]].tag == "brand"]
        yield {"pid": int(pid), "terms": " ".join([*terms, "@" + CATEGORIES[int(cat)]]), "title": str(title),
               "brand": brands, "category": CATEGORIES[int(cat)], "eligible": bool(ok)}


def _check(r: httpx.Response) -> dict:
    if r.status_code >= 400:
        raise OpenSearchError(f"opensearch {r.request.method} {r.request.url.path}: {r.status_code} {r.text[:500]}")
    return r.json()


def bulk_index(client: httpx.Client, name: str, docs: Iterable[dict], refresh: bool = False,
               timeout_s: float = 60.0) -> int:
    """Index ``docs`` (``_id`` = listing id) in batches through the bulk API; returns how many."""
    n = 0
    batch: list[str] = []

    def flush(last: bool) -> None:
        if not batch:
            return
        params = {"refresh": "true"} if (refresh and last) else {}
        body = "\n".join(batch) + "\n"
        out = _check(client.post(f"/{name}/_bulk", content=body.encode(), params=params, timeout=timeout_s,
                                 headers={"content-type": "application/x-ndjson"}))
        if out.get("errors"):
            bad = next(i for i in out["items"] if i["index"].get("error"))
            raise OpenSearchError(f"bulk indexing into {name} failed: {bad['index']['error']}")
        batch.clear()

    for d in docs:
        batch.append(json.dumps({"index": {"_id": str(d["pid"])}}))
        batch.append(json.dumps(d, ensure_ascii=False))
        n += 1
        if len(batch) >= 2 * _BULK_DOCS:
            flush(False)
    flush(True)
    return n


def build_index(url: str, name: str, ids, titles, categories, eligible=None, a: Analyzer | None = None,
                timeout_s: float = 600.0) -> int:
    """(Re)create index ``name`` on the node at ``url`` from the catalogue — the inputs of
    :meth:`SearchIndex.build` — and make it searchable; returns the number of listings."""
    a = a or analyzer()
    with httpx.Client(base_url=url, timeout=timeout_s) as c:
        try:
            if c.head(f"/{name}").status_code == 200:
                _check(c.delete(f"/{name}"))
            _check(c.put(f"/{name}", json=index_body(a)))
            n = bulk_index(c, name, documents(ids, titles, categories, eligible, a), timeout_s=timeout_s)
            _check(c.put(f"/{name}/_settings", json={"index": {"refresh_interval": "1s"}}))
            _check(c.post(f"/{name}/_refresh"))
        except httpx.HTTPError as exc:
            raise OpenSearchError(f"opensearch at {url}: {exc}") from exc
    return n


def prune_indexes(url: str, keep: Iterable[str], timeout_s: float = 30.0) -> list[str]:
    """Delete the listing indexes of versions not in ``keep``; returns the names deleted."""
    wanted = {index_name(v) for v in keep}
    gone = []
    with httpx.Client(base_url=url, timeout=timeout_s) as c:
        names = _check(c.get(f"/_cat/indices/{INDEX_PREFIX}*", params={"format": "json", "h": "index"}))
        for row in names:
            if row["index"] not in wanted:
                _check(c.delete(f"/{row['index']}"))
                gone.append(row["index"])
    return gone


# ---- queries ---------------------------------------------------------------------------------
def _alternative(alt: str) -> dict:
    if alt[0] == "@":  # the category field is a match, not title BM25 (as in the embedded features)
        return {"constant_score": {"filter": {"term": {"category": alt[1:]}}, "boost": 0.0}}
    return {"term": {"terms": alt}}


def term_query(t: QueryTerm, title_recall: bool = True) -> dict:
    """Any spelling of one query term, scored by the best-scoring one (``dis_max``, tie breaker 0)."""
    qs = [_alternative(alt) for alt in t.alternatives]
    if title_recall and t.concept is None:  # a plain word may also match OpenSearch's own Thai segmentation
        qs.append({"constant_score": {"filter": {"match_phrase": {"title": t.text}}, "boost": 0.0}})
    return qs[0] if len(qs) == 1 else {"dis_max": {"queries": qs, "tie_breaker": 0.0}}


def search_body(plan: QueryPlan, k: int, relax_to: int | None = None, title_recall: bool = True) -> dict:
    """The query of one retrieval step: all required terms (``relax_to`` None), or only the required term
    at ``relax_to`` with the full matches lifted by the tier's all-required constant."""
    p = plan.parsed
    req = [term_query(t, title_recall) for t in p.required]
    cond = [term_query(t, title_recall) for t in p.conditions] if not p.condition_only else []
    if relax_to is None:
        must, should = req, []
    else:
        must = [req[relax_to]]
        should = [q for i, q in enumerate(req) if i != relax_to]
        should.append({"constant_score": {"filter": {"bool": {"filter": req}}, "boost": 400.0}})
    if cond:
        should = [*should, *cond, {"constant_score": {"filter": {"bool": {"filter": cond}}, "boost": 100.0}}]
    query = {"bool": {"must": must, "filter": [{"term": {"eligible": True}}],
                      **({"should": should} if should else {})}}
    return {"size": k, "query": query, "track_total_hits": True, "_source": False,
            "sort": [{"_score": "desc"}, {"pid": "asc"}]}


class OpenSearchIndex:
    """:class:`~engines.search.index.SearchIndex`'s serving interface (plan, retrieve, relevance, search,
    with_listings, warm) with retrieval on an OpenSearch node; plan and relevance from ``local``."""

    backend = "opensearch"
    remote = True  # retrieval is a network call: the feed runs it beside the vector search

    def __init__(self, local: SearchIndex, url: str, name: str, timeout_s: float = 0.15, title_recall: bool = True):
        self.local = local
        self.url = url
        self.name = name
        self.timeout_s = timeout_s
        self.title_recall = title_recall
        self.client = httpx.Client(base_url=url, timeout=timeout_s)

    def close(self) -> None:
        self.client.close()

    # ---- query understanding and relevance: ours -----------------------------------------------
    def plan(self, query: str) -> QueryPlan:
        return self.local.plan(query)

    def plan_recorded(self, query: str) -> QueryPlan:
        return self.local.plan_recorded(query)

    def relevance(self, plan: QueryPlan | str, product_ids: np.ndarray) -> dict[str, np.ndarray]:
        return self.local.relevance(plan, product_ids)

    # ---- retrieval: OpenSearch -------------------------------------------------------------------
    def _search(self, body: dict) -> tuple[np.ndarray, np.ndarray, int]:
        try:
            r = self.client.post(f"/{self.name}/_search", json=body,
                                 params={"filter_path": "hits.total.value,hits.hits._id,hits.hits._score"})
        except httpx.HTTPError as exc:
            raise OpenSearchError(f"opensearch at {self.url}: {type(exc).__name__}: {exc}") from exc
        hits = _check(r).get("hits", {})
        rows = hits.get("hits", [])
        ids = np.fromiter((int(h["_id"]) for h in rows), np.int64, len(rows))
        scores = np.fromiter((h["_score"] for h in rows), np.float32, len(rows))
        return ids, scores, int(hits.get("total", {}).get("value", 0))

    def retrieve(self, plan: QueryPlan | str, k: int, min_hits: int = 1) -> SearchHits:
        """The embedded index's chain (see the module doc), each step one OpenSearch query."""
        if isinstance(plan, str):
            plan = self.plan(plan)
        steps, done = chain_start(plan)
        if done is not None:
            return done
        req = plan.parsed.required
        rarest = rarest_term([self.local.df(t) for t in req])
        ids, scores, total = self._search(search_body(plan, k, title_recall=self.title_recall))
        if total == 0:
            return no_match(plan, steps, req[rarest].text)
        tier_base = 600.0  # 4 (all required) + 2 (some) per hundred; the condition bit comes from the node
        if total < min_hits and len(req) > 1:
            r_ids, r_scores, r_total = self._search(search_body(plan, k, rarest, self.title_recall))
            if r_total > total:
                ids, scores, tier_base = r_ids, r_scores, 200.0
                steps.append(RELAXED)
        return SearchHits(ids, (scores + tier_base).astype(np.float32), plan, tuple(steps))

    def search(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        hits = self.retrieve(query, k)
        return hits.ids, hits.scores

    # ---- lifecycle ---------------------------------------------------------------------------------
    def with_listings(self, ids, titles, categories) -> OpenSearchIndex:
        """Listings taken in since the build: into the local statistics (relevance) and into the node's
        index (visible at once: ``refresh``). A node that is down keeps them out of OpenSearch until the
        next snapshot (logged); searches answer ``keyword_index_down`` meanwhile anyway."""
        new = copy.copy(self)
        new.local = self.local.with_listings(ids, titles, categories)
        if len(ids):
            try:
                bulk_index(self.client, self.name, documents(ids, titles, categories, a=self.local.a), refresh=True,
                           timeout_s=10.0)
            except (httpx.HTTPError, OpenSearchError) as exc:
                log.warning("opensearch: %d intake listing(s) not indexed: %s", len(ids), exc)
        return new

    def warm(self) -> None:
        """The local paths, then one query per retrieval step on the node (a node still down is logged:
        it may come up after the service)."""
        self.local.warm()
        try:
            for q in ("ไอโฟน มือสอง", "มือสอง"):
                self.retrieve(q, 100, min_hits=10_000)
        except OpenSearchError as exc:
            log.warning("opensearch not answering at warm-up: %s", exc)

    def ping(self) -> bool:
        try:
            return self.client.get(f"/{self.name}/_count").status_code == 200
        except httpx.HTTPError:
            return False
