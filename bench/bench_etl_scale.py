"""Batch at scale: ETL throughput with 1 and 2 Dask workers and peak memory (issue 16, part 7), not a test.

    python -m bench.bench_etl_scale [--size large] [--days 4] [--workers 1,2]

Builds the ``--size`` world (no images) for ``--days`` days into a temporary folder, then runs the ETL
once per worker count, each in a fresh process (``--child``), so the peak resident memory
(``ru_maxrss`` of that process) is the ETL's own. The project's CPU cluster is one LocalCluster worker
with N threads (:func:`batch.cluster.dask_client`); "workers" here are those threads. The full large
world (30 days, ~50 M events) is extrapolated linearly from the days measured, and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._meta import LATEST, ROOT, write_result


def child(lake: Path, workers: int) -> None:
    from batch.cluster import dask_client
    from batch.etl import run_etl

    t0 = time.perf_counter()
    with dask_client(n_workers=workers) as client:
        etl = run_etl(lake, client=client)
    print("ETLJSON" + json.dumps({"workers": workers, "events": etl.events, "etl_s": etl.seconds,
                                  "wall_s": time.perf_counter() - t0, "events_per_min": etl.events_per_min,
                                  "training_rows": etl.training_rows,
                                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                                  "load_average_1m_at_end": os.getloadavg()[0]}))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="large")
    ap.add_argument("--days", type=int, default=4)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--out", type=Path, default=LATEST)
    ap.add_argument("--child", nargs=2, metavar=("LAKE", "WORKERS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(Path(args.child[0]), int(args.child[1]))
        return {}

    from batch.world.generate import build_world

    tmp = Path(tempfile.mkdtemp(prefix="jk-bench-etl-"))
    world = f"{args.size} (seed {args.seed}), {args.days} of 30 days, built by this benchmark (no images)"
    try:
        lake = tmp / "lake"
        t0 = time.perf_counter()
        summary = build_world(args.size, seed=args.seed, out=lake, days=args.days, images=False)
        build_s = time.perf_counter() - t0
        lake_mib = sum(f.stat().st_size for f in lake.rglob("*") if f.is_file()) / 2**20
        env = {**os.environ, "JAIKOD_HOME": str(tmp / "home"),
               "PYTHONPATH": os.pathsep.join(x for x in (str(ROOT), os.environ.get("PYTHONPATH")) if x)}
        runs: list[dict[str, Any]] = []
        result: dict[str, Any] = {}
        for w in (int(x) for x in args.workers.split(",")):
            out = subprocess.run([sys.executable, "-m", "bench.bench_etl_scale", "--child", str(lake), str(w)],
                                 env=env, cwd=ROOT, capture_output=True, text=True, check=True)
            runs.append(json.loads(next(x for x in out.stdout.splitlines() if x.startswith("ETLJSON"))[7:]))
            print(runs[-1])
            result = summarise(args, runs, build_s, lake_mib, getattr(summary, "counts", None))
            write_result(args.out / "etl_scale.json", result, world=world)  # after each run: a long one can be cut
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


FULL_DAYS = 30


def summarise(args: argparse.Namespace, runs: list[dict[str, Any]], build_s: float, lake_mib: float,
              counts: Any) -> dict[str, Any]:
    events = runs[0]["events"]
    measured = args.days >= FULL_DAYS
    full = {"days": FULL_DAYS, "events": round(events * FULL_DAYS / args.days),
            **{f"etl_min_{r['workers']}_workers": round(events * FULL_DAYS / args.days / r["events_per_min"], 1)
               for r in runs},
            "note": ("measured: the whole 30-day world, peak memory included" if measured else
                     f"linear in days from {args.days} measured days; peak memory of the full world not measured "
                     "(the ETL reads day partitions, but the training join may grow with the rows)")}
    return {
        "benchmark": "ETL at scale (issue 16, part 7)", "size": args.size, "days_built": args.days,
        "world_build_s": round(build_s, 1), "events": events, "lake_mib": round(lake_mib, 1),
        "counts": counts, "runs": runs,
        "speedup_2_vs_1": (runs[1]["events_per_min"] / runs[0]["events_per_min"]) if len(runs) > 1 else None,
        "workers_are": "threads of one LocalCluster worker (batch.cluster.dask_client), processes=False",
        ("full_world" if measured else "extrapolated_full_world"): full,
        "goal": ">= 5 M events/min on 2 cores", "gpu": "GPU: not measured",
    }


if __name__ == "__main__":
    main()
