"""Benchmark: auto-boost autopilot simulation — clicks per budget of the Thompson-sampling bandit vs
uniform and random allocation, on synthetic worlds (hidden click model), several seeds.

python -m bench.bench_boost [--size tiny] [--seeds 0,1,2] [--days 7] [--results bench/results/latest]

Builds each world into a temporary folder (no images), runs :func:`batch.boost.simulate` and an ablation
without the bid decay (``bid_decay=1``: the bandit's choice of listings alone). Prints a rich table and
writes ``<results>/boost.json``.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from batch.boost import simulate
from bench._meta import LATEST, write_result
from engines.boost import BoostConfig

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RESULTS = LATEST


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    a = ap.parse_args(argv)
    from batch.world.generate import build_world

    runs = []
    t0 = time.perf_counter()
    for seed in [int(x) for x in a.seeds.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            lake = Path(tmp) / "lake"
            build_world(a.size, seed=seed, out=lake, images=False)
            full = simulate(lake, days=a.days, seed=seed)
            no_decay = simulate(lake, days=a.days, seed=seed, config=BoostConfig(bid_decay=1.0, bid_recover=1.0))
        runs.append({"world_seed": seed, **{k: full[k] for k in ("bandit", "uniform", "random")},
                     "bandit_no_bid_decay": no_decay["bandit"], "bandit_vs_uniform": full["bandit_vs_uniform"],
                     "bandit_vs_random": full["bandit_vs_random"], "config": full["config"]})
    out = {"benchmark": "boost_simulation", "size": a.size, "days": a.days, "runs": runs,
           "seconds": round(time.perf_counter() - t0, 1), "machine": platform.platform(),
           "metric": "clicks per 1000 THB of boost budget (hidden-model clicks on boosted trending slots)"}
    table = Table(title=f"Auto-boost simulation ({a.size} world, {a.days} days, clicks per 1000 THB)")
    for col in ("world seed", "bandit", "bandit (no bid decay)", "uniform", "random", "bandit / uniform"):
        table.add_column(col, justify="right")
    for r in runs:
        table.add_row(str(r["world_seed"]), f"{r['bandit']['clicks_per_1000_thb']:.1f}",
                      f"{r['bandit_no_bid_decay']['clicks_per_1000_thb']:.1f}",
                      f"{r['uniform']['clicks_per_1000_thb']:.1f}", f"{r['random']['clicks_per_1000_thb']:.1f}",
                      f"{r['bandit_vs_uniform']:.2f}x")
    Console().print(table)
    a.results.mkdir(parents=True, exist_ok=True)
    write_result(a.results / "boost.json", out, world=f"{a.size} worlds, seeds {a.seeds}, built by this benchmark")
    return out


if __name__ == "__main__":
    main()
