"""Benchmark: build a synthetic world (demo by default) and report build time and event throughput.

python -m bench.bench_world [--size demo] [--seed 0] [--out DIR] [--no-images] [--results bench/results/latest]

Builds into a temporary folder (removed afterwards) unless ``--out`` is given, prints a rich table
and writes ``<results>/world.json`` (per-stage wall times from the progress callback included).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from batch.world.generate import SIZES, build_world
from bench._meta import LATEST, write_result

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RESULTS = LATEST


def run(size: str, seed: int, out: Path | None, images: bool, scheduler: str | None) -> dict[str, Any]:
    tmp = None
    if out is None:
        tmp = Path(tempfile.mkdtemp(prefix="jaikod-world-"))
        out = tmp / "lake"
    stage_end: dict[str, float] = {}
    t0 = time.perf_counter()

    def progress(stage: str, done: int, total: int) -> None:
        if done == total:
            stage_end[stage] = round(time.perf_counter() - t0, 3)

    try:
        summary = build_world(size, seed, out, images=images, progress=progress, scheduler=scheduler)
        lake_bytes = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    events = summary.counts["events"]
    return {
        "size": size,
        "seed": seed,
        "images": images,
        "build_seconds": summary.seconds,
        "events": events,
        "events_per_second": round(events / summary.seconds, 1),
        "counts": summary.counts,
        "events_by_type": summary.events_by_type,
        "partitions": summary.partitions,
        "stage_done_at_seconds": stage_end,
        "lake_mib": round(lake_bytes / 2**20, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }


def print_result(result: dict[str, Any], console: Console | None = None) -> None:
    table = Table(title=f"Synthetic world build ({result['size']}, seed {result['seed']})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("build seconds", f"{result['build_seconds']:.2f}")
    table.add_row("events", f"{result['events']:,}")
    table.add_row("events / s", f"{result['events_per_second']:,.0f}")
    for name in ("users", "sellers", "products", "images", "sessions"):
        table.add_row(name, f"{result['counts'][name]:,}")
    for name, n in result["events_by_type"].items():
        table.add_row(f"  {name}", f"{n:,}")
    for stage, t in result["stage_done_at_seconds"].items():
        table.add_row(f"{stage} done at (s)", f"{t:.2f}")
    table.add_row("lake size (MiB)", f"{result['lake_mib']:,.1f}")
    (console or Console()).print(table)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", default="demo", choices=sorted(SIZES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="build here and keep it (default: temp, removed)")
    ap.add_argument("--no-images", action="store_true")
    ap.add_argument("--scheduler", default=None, help="dask scheduler: threads | processes | synchronous")
    ap.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    args = ap.parse_args(argv)
    result = run(args.size, args.seed, args.out, not args.no_images, args.scheduler)
    print_result(result)
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / "world.json"
    write_result(path, result, world=f"{args.size} (seed {args.seed}), built by this benchmark")
    Console().print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
