"""The Milvus vector backend against a real milvus-lite server: the same answers as faiss on the same
vectors (FLAT exact, HNSW / IVF_FLAT recall measured), filtered search that returns only listings the
hard rules allow, intake listings beside it, the snapshot pointer round trip, and "vector DB down" by
killing the server (fast named error, breaker, recovery on restart)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from engines.index import HardRules, IndexError_, VectorIndex
from engines.vector_milvus import POINTER, MilvusVectorIndex, collection_name, drop_collections, filter_expr

N, D = 4000, 32


@pytest.fixture(scope="module")
def listings():
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((30, D))  # clustered, as real listing embeddings are
    x = centres[rng.integers(0, 30, N)] + 0.35 * rng.standard_normal((N, D))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    ids = np.arange(50_000, 50_000 + N, dtype=np.int64)
    attrs = {"category": rng.integers(0, 12, N), "seller": rng.integers(0, 200, N),
             "lat": rng.uniform(5.6, 20.5, N).astype(np.float32), "lon": rng.uniform(97.3, 105.6, N).astype(np.float32)}
    queries = x[rng.choice(N, 12, replace=False)] + 0.05 * rng.standard_normal((12, D)).astype(np.float32)
    return ids, x, attrs, queries


@pytest.fixture(scope="module")
def flat(milvus_server, listings):
    ids, x, attrs, _ = listings
    return MilvusVectorIndex.build(ids, x, uri=milvus_server.uri, collection="listings_test_flat", attrs=attrs,
                                   timeout_s=2.0)


def _recall(a: np.ndarray, b: np.ndarray) -> float:
    return len(set(a.tolist()) & set(b.tolist())) / max(len(b), 1)


def test_flat_is_exact_as_faiss_on_the_same_vectors(milvus, flat, listings):
    ids, x, _, queries = listings
    faiss_exact = VectorIndex.build(ids, x)
    for q in queries:
        got, sc = flat.search(q, 100)
        want, want_sc = faiss_exact.search(q, 100)
        assert _recall(got, want) == 1.0
        np.testing.assert_allclose(sc, want_sc, atol=1e-5)  # same inner products, best first
    assert len(flat.search(queries[0], 10_000)[0]) == N  # k above the collection: everything, once


def test_ivf_recall_against_faiss_exact_and_no_hnsw_in_lite(milvus, listings):
    """IVF_FLAT (nlist 4·√n, nprobe 16) against faiss exact; milvus-lite's local mode has no HNSW (a Milvus
    server has), and says so instead of building something else."""
    ids, x, _, queries = listings
    index = MilvusVectorIndex.build(ids, x, uri=milvus.uri, collection="listings_test_ivf", index_type="IVF_FLAT",
                                    nprobe=16, timeout_s=2.0)
    faiss_exact = VectorIndex.build(ids, x)
    recall = np.mean([_recall(index.search(q, 100)[0], faiss_exact.search(q, 100)[0]) for q in queries])
    assert recall >= 0.9, f"IVF_FLAT recall@100 {recall:.3f}"
    with pytest.raises(Exception, match="local mode only support FLAT IVF_FLAT"):
        MilvusVectorIndex.build(ids[:10], x[:10], uri=milvus.uri, collection="listings_test_hnsw", index_type="HNSW")
    from pymilvus import MilvusClient

    client = MilvusClient(uri=milvus.uri, timeout=10.0)
    others = {c for c in client.list_collections() if c != "listings_test_ivf"}  # the flat one, and any an
    client.close()                                                                # earlier test left
    assert sorted(drop_collections(milvus.uri, keep=others)) == ["listings_test_ivf"]


def test_filtered_search_returns_only_eligible_listings(milvus, flat, listings):
    """The hard rules as a filter expression: every hit passes them, and the hits are exactly the best
    eligible listings (brute force over the eligible set), so the pool comes back fully usable."""
    ids, x, attrs, queries = listings
    rules = HardRules(banned_categories=(1, 4, 7), banned_sellers=tuple(range(0, 200, 3)),
                      box=(12.0, 16.5, 99.0, 102.5))
    ok = (~np.isin(attrs["category"], rules.banned_categories) & ~np.isin(attrs["seller"], rules.banned_sellers)
          & (attrs["lat"] >= 12.0) & (attrs["lat"] <= 16.5) & (attrs["lon"] >= 99.0) & (attrs["lon"] <= 102.5))
    assert 50 < ok.sum() < N // 4
    for q in queries[:4]:
        got, _ = flat.search(q, 300, rules)
        assert np.isin(got, ids[ok]).all()
        truth = ids[ok][np.argsort(-(x[ok] @ q), kind="stable")[:300]]
        assert _recall(got, truth) == 1.0
    assert not np.isin(flat.search(queries[0], 300)[0], ids[ok]).all()  # without rules: ineligible ones too
    assert filter_expr(HardRules(box=(1.0, 2.0, -180.0, 180.0))) == "lat >= 1.000000 and lat <= 2.000000"
    assert filter_expr(None) == "" and filter_expr(HardRules()) == ""


def test_intake_listings_are_searched_beside_the_collection(milvus, flat, listings):
    ids, x, _, queries = listings
    q = queries[0] / np.linalg.norm(queries[0])
    more = flat.with_listings(np.array([999_999]), q[None])
    got, sc = more.search(q, 5)
    assert got[0] == 999_999 and sc[0] == pytest.approx(1.0, abs=1e-5)
    assert flat.search(q, 5)[0][0] != 999_999 and more.link is flat.link  # a new object, one connection


def test_pointer_round_trip_and_missing_collection(milvus, flat, listings, tmp_path):
    _, _, _, queries = listings
    flat.save(tmp_path)
    again = MilvusVectorIndex.load(tmp_path, uri=milvus.uri, timeout_s=2.0)
    assert again.count == N and again.search(queries[1], 20)[0].tolist() == flat.search(queries[1], 20)[0].tolist()
    (tmp_path / POINTER).write_text((tmp_path / POINTER).read_text().replace("listings_test_flat", "listings_gone"))
    with pytest.raises(IndexError_, match="listings_gone missing"):
        MilvusVectorIndex.load(tmp_path, uri=milvus.uri, timeout_s=2.0)
    with pytest.raises(IndexError_, match="vector index missing"):
        MilvusVectorIndex.load(tmp_path / "nowhere", uri=milvus.uri)
    assert collection_name("2026-01-31-ab12cd34") == "listings_2026_01_31_ab12cd34"


def test_killed_server_is_a_fast_named_error_then_recovers(milvus, flat, listings):
    """SIGKILL the server: the search raises IndexError_ (never hangs), the breaker skips Milvus for
    ``breaker_s``, and after a restart the next probe reconnects and serves again."""
    _, _, _, queries = listings
    index = flat
    index.link.breaker_s = 0.3
    before = index.search(queries[2], 50)[0]
    milvus.kill()
    with pytest.raises(IndexError_, match="milvus search failed"):
        index.search(queries[2], 50)
    with pytest.raises(IndexError_, match="milvus down"):  # breaker open: not even a connection attempt
        index.search(queries[2], 50)
    milvus.start()
    time.sleep(0.35)
    assert index.search(queries[2], 50)[0].tolist() == before.tolist()
    assert index.link.down is None
