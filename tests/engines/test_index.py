"""Retrieval indexes: exact and IVF vector search against brute force, BM25 keyword search, the text_match
feature against its definition, and save/load round trips (what materialisation writes, serving reads)."""

from __future__ import annotations

import numpy as np
import pytest

from engines.index import HardRules, IndexError_, KeywordIndex, VectorIndex, read_manifest, write_manifest
from engines.text.tokenize import text_match, tokenize


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_flat_vector_index_is_exact_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    vecs = _unit(rng.standard_normal((500, 16)))
    ids = np.arange(1000, 1500, dtype=np.int64)
    index = VectorIndex.build(ids, vecs)
    q = vecs[7] + 0.01 * rng.standard_normal(16).astype(np.float32)
    got, scores = index.search(q, 10)
    brute = ids[np.argsort(-(vecs @ q), kind="stable")[:10]]
    assert got.tolist() == brute.tolist() and got[0] == 1007
    assert np.all(np.diff(scores) <= 1e-6)
    index.save(tmp_path)
    again = VectorIndex.load(tmp_path)
    assert again.search(q, 10)[0].tolist() == got.tolist()
    assert len(index.search(q, 10_000)[0]) == 500  # k above the catalogue: everything, once


def _rule_world(n: int, seed: int):
    rng = np.random.default_rng(seed)
    vecs = _unit(rng.standard_normal((n, 16)))
    ids = np.arange(10_000, 10_000 + n, dtype=np.int64)
    attrs = {"category": rng.integers(0, 12, n), "seller": rng.integers(0, 50, n),
             "lat": rng.uniform(5.0, 20.0, n), "lon": rng.uniform(97.0, 106.0, n)}
    return vecs, ids, attrs


def _brute_eligible(vecs, ids, attrs, q, k, rules: HardRules):
    lat0, lat1, lon0, lon1 = rules.box
    keep = ((attrs["lat"] >= lat0) & (attrs["lat"] <= lat1) & (attrs["lon"] >= lon0) & (attrs["lon"] <= lon1)
            & ~np.isin(attrs["category"], rules.banned_categories) & ~np.isin(attrs["seller"], rules.banned_sellers))
    order = np.argsort(-(vecs @ q), kind="stable")
    return ids[order[keep[order]]][:k]


@pytest.mark.parametrize("ivf", [False, True])
def test_vector_index_with_rule_fields_returns_the_k_nearest_eligible_listings(tmp_path, ivf):
    """Built with category/seller/lat/lon, the index leaves out what the hard rules exclude while it searches
    (a bitmap selector): the k nearest eligible listings, as brute force over the eligible ones finds them,
    and the same after a save/load round trip."""
    vecs, ids, attrs = _rule_world(3000, 4)
    index = VectorIndex.build(ids, vecs, attrs=attrs, ivf_threshold=1000 if ivf else 500_000, nprobe=10_000)
    assert index.applies_rules
    rules = HardRules(banned_categories=(3, 7), banned_sellers=(11,), box=(10.0, 15.0, 99.0, 103.0))
    q = vecs[42]
    got, scores = index.search(q, 100, rules)
    assert got.tolist() == _brute_eligible(vecs, ids, attrs, q, 100, rules).tolist()
    assert np.all(np.diff(scores) <= 1e-6)
    # a small k over-fetches on the fast path and keeps the eligible hits; a large one takes the selector path
    assert index.search(q, 20, rules)[0].tolist() == _brute_eligible(vecs, ids, attrs, q, 20, rules).tolist()
    plain = index.search(q, 100)[0]  # no rules: the nearest whatever they are
    assert set(plain.tolist()) != set(got.tolist())
    index.save(tmp_path)
    again = VectorIndex.load(tmp_path)
    assert again.applies_rules and again.search(q, 100, rules)[0].tolist() == got.tolist()
    nothing = HardRules(box=(50.0, 51.0, 0.0, 1.0))  # nobody within the box
    assert len(index.search(q, 100, nothing)[0]) == 0


def test_vector_index_keeps_the_last_bans_mask_and_follows_a_change_of_bans():
    """The admin bans' mask is kept between requests; new bans (or none) are applied from the next search."""
    vecs, ids, attrs = _rule_world(2000, 6)
    index = VectorIndex.build(ids, vecs, attrs=attrs)
    box = (10.0, 15.0, 99.0, 103.0)
    q = vecs[7]
    for bans in [((3, 7), (11,)), ((3, 7), (11,)), ((), (11, 12)), ((5,), ()), ((), ())]:
        rules = HardRules(banned_categories=bans[0], banned_sellers=bans[1], box=box)
        assert index.search(q, 150, rules)[0].tolist() == _brute_eligible(vecs, ids, attrs, q, 150, rules).tolist()


def test_vector_index_without_rule_fields_leaves_the_rules_to_the_filters(tmp_path):
    vecs, ids, _ = _rule_world(500, 5)
    index = VectorIndex.build(ids, vecs)
    assert not index.applies_rules
    index.save(tmp_path)
    assert not VectorIndex.load(tmp_path).applies_rules


def test_ivf_vector_index_recall_against_brute_force():
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((40, 16))  # listings cluster (categories, styles), as real embeddings do
    vecs = _unit(centres[rng.integers(0, 40, 4000)] + 0.3 * rng.standard_normal((4000, 16)))
    ids = np.arange(4000, dtype=np.int64)
    index = VectorIndex.build(ids, vecs, ivf_threshold=1000, nprobe=16)
    assert type(index.index).__name__ == "IndexIVFFlat"

    def recall() -> float:
        out = []
        for qi in range(20):
            q = vecs[qi * 50]
            truth = set(np.argsort(-(vecs @ q))[:50].tolist())
            out.append(len(truth & set(index.search(q, 50)[0].tolist())) / 50)
        return float(np.mean(out))

    assert recall() >= 0.9
    index.index.nprobe = index.index.nlist  # every list probed: exact
    assert recall() == 1.0


def test_keyword_index_search_text_match_and_round_trip(tmp_path):
    titles = ["iPhone 13 มือสอง สภาพดี", "Samsung Galaxy S21", "โซฟา ikea สีเทา", "iphone case", "กล้อง sony a6000"]
    ids = np.array([10, 20, 30, 40, 50], np.int64)
    index = KeywordIndex.build(ids, titles)
    got, scores = index.search("iphone", 10)
    assert set(got.tolist()) == {10, 40} and (scores > 0).all()
    assert index.search("zzzzqqq", 10)[0].size == 0
    for query in ("iphone มือสอง", "sony camera", "โซฟา", ""):
        expect = [text_match(tokenize(query), tokenize(t)) for t in titles]
        np.testing.assert_allclose(index.text_match(query, ids), expect, rtol=1e-6)
    assert index.text_match("iphone", np.array([999], np.int64)).tolist() == [0.0]  # unknown listing
    index.save(tmp_path)
    assert KeywordIndex.load(tmp_path).search("iphone", 10)[0].tolist() == got.tolist()


def test_missing_index_files_raise_a_named_error(tmp_path):
    with pytest.raises(IndexError_, match="vector index missing"):
        VectorIndex.load(tmp_path)
    with pytest.raises(IndexError_, match="keyword index missing"):
        KeywordIndex.load(tmp_path)
    write_manifest(tmp_path, version="v1", n=3)
    m = read_manifest(tmp_path)
    assert {k: m[k] for k in ("version", "n")} == {"version": "v1", "n": 3}
