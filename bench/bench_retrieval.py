"""Retrieval: recall@1000 of the served vector index against exact search, and latencies (issue 16,
part 6), not a test.

    python -m bench.bench_retrieval --home /tmp/demo/home    # a world (read only)
    python -m bench.bench_retrieval                          # a tiny world built here

Queries are the users' own vectors (what the feed's retrieval searches with). Exact search is a
brute-force ``IndexFlatIP`` over the very vectors the served index holds (reconstructed from it), so
recall measures the approximation only. Latency: the served index's ``search`` for k = 1,000 and the
exact search, both one query at a time (as served), and the whole retrieval stage for a feed and for a
search request (keyword index + query understanding, as the stage does it today).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench._meta import LATEST, write_result
from bench.bench_online import make_state, open_world, pct, user_ids

QUERIES = ("iphone 13", "กล้องถ่ายรูป", "โซฟา", "nike shoes", "ตุ๊กตา", "จักรยาน", "macbook air", "กระเป๋า หนัง")


def _timed(f, items) -> list[float]:
    out = []
    for x in items:
        t0 = time.perf_counter()
        f(x)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def exact_index(served) -> tuple[Any, str]:
    import faiss

    idx = served.index
    n = idx.ntotal
    if isinstance(idx, faiss.IndexFlat):
        return idx, f"{type(idx).__name__} (the served index is already exact)"
    ivf = faiss.extract_index_ivf(idx)
    ivf.make_direct_map()  # in memory only; the artifact on disk is not touched
    xb = ivf.reconstruct_n(0, n)
    flat = faiss.IndexFlatIP(xb.shape[1])
    flat.add(xb)
    return flat, f"{type(idx).__name__} nlist={ivf.nlist} nprobe={ivf.nprobe}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, help="an existing world's JAIKOD_HOME (default: build a tiny one)")
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--out", type=Path, default=LATEST)
    ap.add_argument("--tag", default="", help="result file retrieval_<tag>.json (e.g. large)")
    ap.add_argument("--nprobes", default="64,128,256,512,1024", help="IVF only: nprobe values swept")
    args = ap.parse_args(argv)

    from online.api import _ctx
    from online.pipeline import RankingPipeline
    from online.schemas import FeedRequest

    with contextlib.ExitStack() as stack:
        _tmp, world = open_world(stack, args.home, "jk-bench-retrieval-")
        state = make_state()
        served = state.indexes.vector
        if served is None:
            raise SystemExit(f"no vector index loaded: {state.indexes.error}")
        pipe = RankingPipeline(state)
        users = user_ids(state, args.users)
        ctxs = []
        for u in users:
            ctx = _ctx(FeedRequest(user_id=u, limit=20), "feed", "", False, state.settings)
            pipe.run(ctx, None, stop="user")
            if ctx.user.vector is not None and np.any(ctx.user.vector):
                ctxs.append(ctx)
        qs = [np.ascontiguousarray(np.asarray(c.user.vector, np.float32).reshape(1, -1)) for c in ctxs]
        exact, kind = exact_index(served)
        k = min(args.k, len(served.ids))
        truth = [_hits(exact, q, k) for q in qs]  # exact search once: the recall below and the nprobe sweep
        got = [_hits(served.index, q, k) for q in qs]
        recalls = [recall(a, e) for a, e in zip(got, truth, strict=True)]
        got_k = [len(a) for a in got]
        t_ann = _timed(lambda q: served.index.search(q, k), qs * 2)
        t_exact = _timed(lambda q: exact.search(q, k), qs)
        t_served = _timed(lambda c: served.search(c.user.vector, k), ctxs)  # the engines.index call
        sweep = nprobe_sweep(served.index, truth, qs, k, [int(x) for x in args.nprobes.split(",") if x])

        def retrieve(c):
            c.deadline_s = time.perf_counter() + 10.0  # contexts were built before the timing: no deadline here
            return pipe.run(c, None, start="retrieval", stop="retrieval")

        t_feed = _timed(retrieve, ctxs)
        search_ctxs = []
        for i, u in enumerate(users[: len(QUERIES) * 8]):
            q = QUERIES[i % len(QUERIES)]
            c = _ctx(FeedRequest(user_id=u, limit=20), "search", q, False, state.settings)
            pipe.run(c, None, stop="user")
            search_ctxs.append(c)
        counts = []

        def search(c) -> None:
            counts.append(retrieve(c).n)

        t_search = _timed(search, search_ctxs)
        feed_counts = [retrieve(c).n for c in ctxs[:50]]
        state.stop()
    result = {
        "benchmark": "vector retrieval recall and latency (issue 16, part 6)", "index": kind,
        "n_vectors": int(served.index.ntotal), "k": k, "queries": len(qs), "query": "the users' own vectors",
        "recall_at_k_mean": float(np.mean(recalls)), "recall_at_k_p10": float(np.percentile(recalls, 10)),
        "recall_at_k_min": float(np.min(recalls)), "returned_k_mean": float(np.mean(got_k)),
        "ann_search_p50_ms": pct(t_ann, 50), "ann_search_p99_ms": pct(t_ann, 99),
        "exact_search_p50_ms": pct(t_exact, 50), "exact_search_p99_ms": pct(t_exact, 99),
        "vector_index_search_call_p50_ms": pct(t_served, 50),
        "retrieval_stage_feed_p50_ms": pct(t_feed, 50), "retrieval_stage_feed_p99_ms": pct(t_feed, 99),
        "retrieval_stage_feed_candidates_mean": float(np.mean(feed_counts)),
        "retrieval_stage_search_p50_ms": pct(t_search, 50), "retrieval_stage_search_p99_ms": pct(t_search, 99),
        "retrieval_stage_search_candidates_mean": float(np.mean(counts)), "search_queries": list(QUERIES),
        "nprobe_served": getattr(served.index, "nprobe", None), "nprobe_sweep": sweep,
        "note": "search = the retrieval stage for kind=search (keyword index + tokenisation as served today)",
        "gpu": "GPU: not measured",
    }
    write_result(args.out / (f"retrieval_{args.tag}.json" if args.tag else "retrieval.json"), result, world=world)
    for key, v in result.items():
        if isinstance(v, float):
            print(f"{key:45s} {v:10.4f}")
    for row in sweep:
        print(f"nprobe {row['nprobe']:5d}: recall@{k} {row['recall_mean']:.4f}, CPU {row['cpu_ms_per_query']:.2f} ms/query")
    return result


def _hits(index, q: np.ndarray, k: int) -> np.ndarray:
    """The row ids a faiss index returns for one query (the -1 of a short answer dropped)."""
    _, idx = index.search(q, k)
    return idx[0][idx[0] >= 0]


def recall(got: np.ndarray, truth: np.ndarray) -> float:
    """Share of the exact answer's rows that ``got`` holds."""
    return len(np.intersect1d(got, truth)) / max(1, len(truth))


def nprobe_sweep(index, truth: list[np.ndarray], qs: list[np.ndarray], k: int,
                 nprobes: list[int]) -> list[dict[str, Any]]:
    """Recall@k against the exact answers ``truth`` and CPU per query (one thread, one query at a time) of
    an IVF index at each nprobe; the index's own nprobe is restored. Empty for an exact index."""
    if not hasattr(index, "nprobe"):
        return []
    keep, rows = index.nprobe, []
    try:
        for npb in nprobes:
            index.nprobe = npb
            c0 = time.process_time()
            got = [_hits(index, q, k) for q in qs]
            cpu = (time.process_time() - c0) * 1000 / max(1, len(qs))
            rec = [recall(a, e) for a, e in zip(got, truth, strict=True)]
            rows.append({"nprobe": npb, "recall_mean": float(np.mean(rec)), "recall_p10": float(np.percentile(rec, 10)),
                         "cpu_ms_per_query": cpu})
    finally:
        index.nprobe = keep
    return rows

if __name__ == "__main__":
    os.environ.setdefault("JAIKOD_DEVICE", "cpu")
    main()
