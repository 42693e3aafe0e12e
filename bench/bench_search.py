"""Search benchmark on the judged query set (issue 11.5), not a test — the same run as
``jaikod search eval``: per group P@20, NDCG@10, zero-result and false-fill rate, baseline (the index
before issue 11) beside today's index, p50/p99 latency in process, cold vs warm first search.
HTTP ``/v1/search`` against ``/v1/feed`` p99 in the same run is measured by ``bench.bench_online``.

    python -m bench.bench_search                      # the demo world's catalogue (seed 7)
    python -m bench.bench_search --lake var/lake      # a built lake's catalogue

Writes bench/results/latest/search.json (stamped) + search.png; `make bench-publish` copies them over the
committed bench/results/.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench._meta import LATEST, print_rows, write_result


def main(argv: list[str] | None = None) -> dict:
    from batch import search_eval as se

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lake", type=Path, default=None)
    ap.add_argument("--size", default="demo")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=LATEST)
    args = ap.parse_args(argv)
    res = se.evaluate(args.lake, args.size, args.seed)
    print_rows(se.table_rows(res))
    print("latency ms:", {k: {m: round(v, 3) for m, v in d.items()} for k, d in res["latency_ms"].items()})
    print("cold start:", res.get("cold_start"))
    print("goals:", res["goals"])
    _, png = se.write_results(res, args.out)  # the JSON again with the bench's stamp (machine, world, commit)
    write_result(args.out / "search.json", res, world=f"{args.size} catalogue (seed {args.seed})"
                 if args.lake is None else str(args.lake))
    print("wrote", args.out / "search.json", png)
    return res


if __name__ == "__main__":
    main()
