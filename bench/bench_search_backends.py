"""The keyword backends side by side (issue 17.3), not a test: the judged query set on the embedded index
and on a real OpenSearch node (started here from the Maven Central jars, deploy/opensearch.py), over the
same catalogue — P@20 / NDCG@10 / zero-result / false-fill per group for each, how many queries get the
same top 20 and fallback steps, p50/p99 latency of each; and the node's start-up seconds and RSS.

    python -m bench.bench_search_backends                 # the demo world's catalogue (seed 7, 100k)
    python -m bench.bench_search_backends --size tiny     # 2,000 listings, quick

Writes bench/results/latest/search_backends.json + .png.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from bench._meta import LATEST, print_rows, write_result


def main(argv: list[str] | None = None) -> dict:
    from batch import search_eval as se
    from deploy.opensearch import OpenSearchNode, missing_tools

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lake", type=Path, default=None)
    ap.add_argument("--size", default="demo")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--url", default=None, help="an OpenSearch node already running (else one is started)")
    ap.add_argument("--out", type=Path, default=LATEST)
    args = ap.parse_args(argv)
    node = None
    with tempfile.TemporaryDirectory(prefix="jaikod-os-bench-") as tmp:
        url = args.url
        if url is None:
            why = missing_tools()
            if why:
                raise SystemExit(f"bench search_backends: {why}")
            node = OpenSearchNode(Path(tmp))
            node.start()
            url = node.url
        try:
            rss_idle = node.rss_mb() if node else None
            load_before = os.getloadavg()[0]
            res = se.compare_backends(url, args.lake, args.size, args.seed)
            # latency on shared cores means little without the machine's load beside it
            res["load_average_1m"] = {"before": round(load_before, 1), "after": round(os.getloadavg()[0], 1)}
            res["node"] = None if node is None else {
                "start_s": round(node.start_s, 1), "heap_mb": node.heap_mb, "rss_mb_idle": round(rss_idle, 0),
                "rss_mb_after_queries": round(node.rss_mb(), 0)}
        finally:
            if node is not None:
                node.stop()
    print_rows(se.backend_rows(res))
    print("latency ms:", {k: {m: round(v, 2) for m, v in d.items()} for k, d in res["latency_ms"].items()})
    print("same top 20 and steps:", f"{res['same_top20_and_steps']['queries']}/{res['queries']}",
          res["same_top20_and_steps"]["differ"][:10])
    print("index build s:", res["index_build_s"], "node:", res["node"])
    world = res["catalogue"]
    write_result(args.out / "search_backends.json", res, world=world)
    se.plot_backends(res, args.out / "search_backends.png")
    return res


if __name__ == "__main__":
    main()
