"""Benchmark: the batch pipeline on the demo world — ETL events/min (goal >= 5 M/min on 2 cores),
embeddings and training time, NDCG@20 of the model vs the popularity baseline on the 24 h holdout.

python -m bench.bench_batch [--lake var/lake] [--size demo] [--results bench/results/latest]

Uses ``--lake`` if it holds a world, else builds one of ``--size`` in a temporary folder. Runs in a
private JAIKOD_HOME (temporary), so the registry under var/ is not touched. Prints a rich table and
writes ``<results>/batch.json`` and ``batch.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from bench._meta import LATEST

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lake", type=Path, default=ROOT / "var" / "lake")
    ap.add_argument("--size", default="demo")
    ap.add_argument("--results", type=Path, default=LATEST)
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="jaikod-bench-batch-"))
    os.environ["JAIKOD_HOME"] = str(tmp / "home")
    from gpu_core.settings import reset_settings

    reset_settings()
    from rich.console import Console
    from rich.table import Table

    from batch.cluster import dask_client
    from batch.embeddings import run_embeddings
    from batch.etl import run_etl
    from batch.train import run_train
    from batch.world.generate import build_world
    from gpu_core.registry import Registry

    try:
        lake = args.lake
        built = None
        if not (lake / "events").exists():
            lake = tmp / "lake"
            t0 = time.perf_counter()
            build_world(args.size, seed=7, out=lake, images=False)
            built = time.perf_counter() - t0
        # ETL works on a copy of the features folder location: write features into the temp lake
        if lake != tmp / "lake":
            work = tmp / "lake"
            work.mkdir(parents=True)
            for name in ("users", "sellers", "products", "events"):
                (work / name).symlink_to((lake / name).resolve())
            lake = work
        with dask_client() as client:
            etl = run_etl(lake, client=client)
        emb = run_embeddings(lake, etl.as_of)
        t0 = time.perf_counter()
        train = run_train(lake, etl.as_of, registry=Registry(), bootstrap_production=True)
        train_s = time.perf_counter() - t0
        result = {
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
            "world_build_s": built, "events": etl.events, "etl_s": round(etl.seconds, 2),
            "etl_events_per_min": round(etl.events_per_min), "etl_goal_events_per_min": 5_000_000,
            "training_rows": etl.training_rows, "embeddings_s": emb.seconds, "train_s": round(train_s, 2),
            "ndcg20_model": round(train.ndcg_model, 4), "ndcg20_popularity": round(train.ndcg_popularity, 4),
            "auc_click": round(train.auc_click, 4), "holdout_rows": train.holdout_rows,
        }
        table = Table(title="batch pipeline (this machine)")
        table.add_column("what")
        table.add_column("value", justify="right")
        for k, v in result.items():
            if k != "machine":
                table.add_row(k, f"{v:,}" if isinstance(v, int) else str(v))
        Console().print(table)
        args.results.mkdir(parents=True, exist_ok=True)
        (args.results / "batch.json").write_text(json.dumps(result, indent=2))
        _plot(result, args.results / "batch.png")
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        reset_settings()


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.bar(["ETL", "goal"], [result["etl_events_per_min"] / 1e6, 5.0], color=["tab:blue", "tab:gray"])
    a.set_ylabel("M events / min")
    a.set_title("ETL throughput")
    b.bar(["model", "popularity"], [result["ndcg20_model"], result["ndcg20_popularity"]],
          color=["tab:green", "tab:gray"])
    b.set_ylabel("NDCG@20 (holdout)")
    b.set_title("ranking quality")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
