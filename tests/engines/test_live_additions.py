"""Listings added after a build: the search index's incremental add against a full rebuild, the vector
index's side set, and the cold-start title space against the nightly's embedding of the same titles."""

from __future__ import annotations

import numpy as np

from engines.embeddings import TitleSpace, title_ngrams
from engines.index import VectorIndex
from engines.search.index import SearchIndex

TITLES = ["iphone 13 มือสอง", "samsung galaxy s21", "กล้องถ่ายรูป canon", "sony headphones", "nike รองเท้า",
          "ipad air 4", "โต๊ะไม้ สวย", "จักรยาน เสือภูเขา", "iphone 12 pro", "adidas shoes"] * 3


def test_search_index_add_matches_a_rebuild():
    ids = np.arange(len(TITLES))
    cats = np.arange(len(TITLES)) % 5
    base = SearchIndex.build(ids, TITLES, cats)
    new_ids, new_titles, new_cats = np.array([1000, 1001]), ["Zorblax iphone case", "sony zorblax"], np.array([0, 1])
    added = base.with_listings(new_ids, new_titles, new_cats)
    full = SearchIndex.build(np.r_[ids, new_ids], TITLES + new_titles, np.r_[cats, new_cats])
    assert set(added.search("zorblax", 10)[0]) == {1000, 1001} == set(full.search("zorblax", 10)[0])
    assert list(added.search("iphone", 50)[0][:1]) and 1000 in added.search("iphone", 50)[0]
    a = added.relevance("zorblax iphone", new_ids)
    f = full.relevance("zorblax iphone", new_ids)
    assert np.array_equal(a["text_all_required"], f["text_all_required"])
    assert np.allclose(a["text_bm25"], f["text_bm25"], rtol=0.15)
    assert base.search("zorblax", 10)[0].size == 0  # the built index is unchanged


def test_vector_index_side_set_merges_by_score():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    vi = VectorIndex.build(np.arange(50), x)
    q = x[3]
    more = vi.with_listings(np.array([999]), q[None] * 1.0)
    ids, scores = more.search(q, 3)
    assert set(ids[:2]) == {3, 999} and len(ids) == 3 and scores[0] >= scores[-1]
    assert list(vi.search(q, 1)[0]) == [3]


def test_title_space_embeds_like_the_nightly():
    rng = np.random.default_rng(1)
    warm_v = rng.normal(size=(len(TITLES), 16)).astype(np.float32)
    text = title_ngrams(TITLES)
    space = TitleSpace.fit(text, warm_v)
    full = np.asarray(text.T @ warm_v, dtype=np.float32)
    full /= np.maximum(np.linalg.norm(full, axis=1, keepdims=True), 1e-12)
    cold = ["iphone 13 case", "รองเท้า nike ใหม่"]
    ref = np.asarray(title_ngrams(cold) @ full, dtype=np.float32)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    assert np.allclose(space.embed(cold), ref, atol=1e-5)
    assert len(space.buckets) < 2**16
