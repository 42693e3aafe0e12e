"""Benchmark entry: the real-data LTR check (Yahoo LTR sample), JSON + PNG in bench/results/.

python -m bench.bench_ltr [--data ../shared/data/ltr-yahoo-sample] [--out bench/results/latest]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from batch.ltr_check import KS, print_table, run_ltr_check
from bench._meta import LATEST, write_result

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "ltr-yahoo-sample"
DEFAULT_OUT = LATEST


def plot_ltr(result: dict[str, Any], path: Path) -> Path:
    """Grouped bars: NDCG@k of ours vs XGBoost defaults; reference NDCG@10 lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    models = result["models"]
    x = np.arange(len(KS))
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (name, row) in enumerate(models.items()):
        vals = [row[f"ndcg@{k}"] for k in KS]
        bars = ax.bar(x + (i - (len(models) - 1) / 2) * width, vals, width, label=name)
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    for (name, ref), style in zip(result["reference"].items(), ("--", ":"), strict=False):
        ax.hlines(
            ref["ndcg@10"],
            x[-1] - 0.45,
            x[-1] + 0.45,
            colors="k",
            linestyles=style,
            label=f"{name} ref @10 = {ref['ndcg@10']:.3f}",
        )
    ax.set_xticks(x, [f"NDCG@{k}" for k in KS])
    ax.set_ylim(0.4, 1.0)
    ax.set_ylabel("NDCG (linear gain)")
    ax.set_title("Yahoo LTR sample, rank.test (50 queries)")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("JAIKOD_LTR_DATA", DEFAULT_DATA)))
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    result = run_ltr_check(args.data)
    print_table(result)
    args.out.mkdir(parents=True, exist_ok=True)
    write_result(args.out / "ltr.json", result, world=f"public LTR data: {args.data}")
    plot_ltr(result, args.out / "ltr.png")
    print(f"wrote {args.out / 'ltr.json'} and {args.out / 'ltr.png'}")
    return result


if __name__ == "__main__":
    main()
