"""Vector backends side by side: faiss (embedded) vs Milvus (milvus-lite 2.5 on loopback) on the same
vectors — recall@k against faiss exact, search latency p50/p99 one query at a time (as served), the hard
rules as a Milvus filter, and milvus-lite's start-up seconds and memory (issue 17, part 4). Not a test.

    python -m bench.bench_vector_backends                      # 100k x 64 clustered vectors (demo-sized)
    python -m bench.bench_vector_backends --home /tmp/demo/home  # a world's own listing vectors (read only)

Both backends search the same L2-normalised float32 vectors with inner product; queries are listing
vectors plus noise (a user vector is a mix of the listings the user clicked). milvus-lite's FLAT is
exact, so its recall is 1.0 up to ties; IVF_FLAT uses nlist 4·√n, nprobe 64 (the ``vector_nprobe``
default). The filtered row applies a 500 km box around Bangkok and one banned category (what the
retrieval stage sends for a feed); ``eligible`` is the share of each backend's hits that pass those rules.
Timing is round robin (one query of each backend in turn), so a busy machine slows all of them alike.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench._meta import LATEST, write_result
from bench.bench_online import pct
from bench.bench_retrieval import _timed


def synthetic(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((200, d))
    x = centres[rng.integers(0, 200, n)] + 0.4 * rng.standard_normal((n, d))
    attrs = {"category": rng.integers(0, 40, n), "seller": rng.integers(0, n // 20 + 1, n),
             "lat": rng.uniform(5.6, 20.5, n).astype(np.float32), "lon": rng.uniform(97.3, 105.6, n).astype(np.float32)}
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), attrs


def world_vectors(home: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    import faiss

    root = home / "artifacts" / "index"
    index = faiss.read_index(str(root / (root / "CURRENT").read_text().strip() / "vectors.faiss"))
    n = index.ntotal
    rng = np.random.default_rng(0)
    attrs = {"category": rng.integers(0, 40, n), "seller": rng.integers(0, n // 20 + 1, n),
             "lat": rng.uniform(5.6, 20.5, n).astype(np.float32), "lon": rng.uniform(97.3, 105.6, n).astype(np.float32)}
    return index.reconstruct_n(0, n), attrs


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, help="a world's JAIKOD_HOME: its served listing vectors")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--ks", default="100,1000,3000", help="k values (3,000 = the feed's retrieval pool)")
    ap.add_argument("--out", type=Path, default=LATEST)
    args = ap.parse_args(argv)

    import faiss

    from deploy.milvus_lite import MilvusLiteServer
    from engines.index import HardRules, VectorIndex
    from engines.vector_milvus import MilvusVectorIndex
    from kernels.geo import bounding_box

    x, attrs = world_vectors(args.home) if args.home else synthetic(args.n, args.dim)
    n, d = x.shape
    ids = np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(1)
    qs = x[rng.choice(n, args.queries, replace=False)] + 0.1 * rng.standard_normal((args.queries, d)).astype(np.float32)
    qs = (qs / np.linalg.norm(qs, axis=1, keepdims=True)).astype(np.float32)
    ks = [min(int(k), n) for k in args.ks.split(",")]
    rows: list[dict[str, Any]] = []
    out: dict[str, Any] = {"benchmark": "vector backends: faiss vs Milvus (milvus-lite) (issue 17, part 4)",
                           "n_vectors": n, "dim": d, "queries": len(qs), "ks": ks,
                           "vectors": f"world {args.home}" if args.home else "synthetic clustered (200 centres)"}
    with tempfile.TemporaryDirectory(prefix="jk-bench-milvus-") as tmp:
        server = MilvusLiteServer(Path(tmp) / "milvus").start()
        out["milvus_start_empty_s"] = server.start_s
        out["milvus_rss_empty_mib"] = server.rss_mb()
        faiss.omp_set_num_threads(1)  # as served (engines.index.VectorIndex.load): one thread per request
        faiss_exact = VectorIndex.build(ids, x)
        truth = {k: [faiss_exact.search(q, k)[0] for q in qs] for k in ks}
        backends: dict[str, Any] = {"faiss IndexFlatIP": faiss_exact}
        for it in ("FLAT", "IVF_FLAT"):
            t0 = time.perf_counter()
            backends[f"milvus {it}"] = MilvusVectorIndex.build(ids, x, uri=server.uri, collection=f"listings_bench_{it.lower()}",
                                                               attrs=attrs, index_type=it, nprobe=64, timeout_s=30.0)
            out[f"milvus_build_{it.lower()}_s"] = time.perf_counter() - t0
            out[f"milvus_rss_after_{it.lower()}_mib"] = server.rss_mb()
        rules = HardRules(banned_categories=(3,), box=bounding_box(13.7563, 100.5018, 500.0))
        lat_min, lat_max, lon_min, lon_max = rules.box
        ok = ((attrs["category"] != 3) & (attrs["lat"] >= lat_min) & (attrs["lat"] <= lat_max)
              & (attrs["lon"] >= lon_min) & (attrs["lon"] <= lon_max))
        calls = {name: (lambda q, k, index=index: index.search(q, k)) for name, index in backends.items()}
        flat = backends["milvus FLAT"]
        calls["milvus FLAT + hard-rule filter"] = lambda q, k: flat.search(q, k, rules)
        for k in ks:
            got = {name: [f(q, k)[0] for q in qs] for name, f in calls.items()}
            # timed round robin, one query of each backend in turn: every backend sees the same load
            times: dict[str, list[float]] = {name: [] for name in calls}
            for q in list(qs) * 2:
                for name, f in calls.items():
                    times[name] += _timed(lambda q, f=f, k=k: f(q, k), [q])
            for name in calls:
                row = {"backend": name, "k": k, "p50_ms": pct(times[name], 50), "p99_ms": pct(times[name], 99),
                       "eligible_share": float(np.mean([ok[g].mean() for g in got[name]]))}
                if "filter" not in name:
                    recall = [len(np.intersect1d(g, t)) / len(t) for g, t in zip(got[name], truth[k], strict=True)]
                    row.update(recall_at_k=float(np.mean(recall)), recall_at_k_min=float(np.min(recall)))
                rows.append(row)
        server.stop()
        t0 = time.perf_counter()
        server.start()
        out["milvus_restart_answering_s"] = server.start_s
        flat.link.client = None  # a fresh connection, as a new API worker would open
        flat.search(qs[0], 10)  # first answered search: the collection is loaded again from the data file
        out["milvus_restart_to_first_search_s"] = time.perf_counter() - t0
        out["milvus_rss_restarted_mib"] = server.rss_mb()
        server.stop()
    out["rows"] = rows
    out["note"] = ("milvus-lite 2.5 is Milvus's C++ core as one local binary, not the distributed Milvus server; "
                   "milvus-lite 3.x (a pure-Python rewrite) was 200-500 ms per search at 100k here and is not used. "
                   "Latency includes the gRPC round trip on loopback; faiss runs in process.")
    out["gpu"] = "GPU: not measured"
    write_result(args.out / "vector_backends.json", out, world=out["vectors"])
    plot(rows, args.out / "vector_backends.png")
    print(f"{'backend':34s} {'k':>5s} {'recall@k':>9s} {'eligible':>9s} {'p50 ms':>8s} {'p99 ms':>8s}")
    for r in rows:
        rec = f"{r['recall_at_k']:.4f}" if "recall_at_k" in r else "-"
        el = f"{r['eligible_share']:.3f}" if "eligible_share" in r else "-"
        print(f"{r['backend']:34s} {r['k']:5d} {rec:>9s} {el:>9s} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f}")
    for key, v in out.items():
        if isinstance(v, float):
            print(f"{key:40s} {v:10.2f}")
    return out


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["backend"] for r in rows))
    ks = sorted({r["k"] for r in rows})
    fig, ax = plt.subplots(figsize=(9, 4))
    w = 0.8 / len(names)
    for i, name in enumerate(names):
        p50 = [next((r["p50_ms"] for r in rows if r["backend"] == name and r["k"] == k), np.nan) for k in ks]
        p99 = [next((r["p99_ms"] for r in rows if r["backend"] == name and r["k"] == k), np.nan) for k in ks]
        pos = np.arange(len(ks)) + i * w
        ax.bar(pos, p99, w, alpha=0.35, color=f"C{i}")
        ax.bar(pos, p50, w, label=name, color=f"C{i}")
    ax.set_xticks(np.arange(len(ks)) + w * (len(names) - 1) / 2, [f"k={k}" for k in ks])
    ax.set_yscale("log")
    ax.set_ylabel("ms per query (p50 solid, p99 light)")
    ax.set_title("vector search: faiss in process vs milvus-lite on loopback")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    os.environ.setdefault("JAIKOD_DEVICE", "cpu")
    main()
