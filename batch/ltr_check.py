"""Real-data learning-to-rank check: our ranker vs XGBoost defaults on the Yahoo LTR sample.

Trains :class:`batch.ranker.RankerConfig` (early stopping on a split of the *training* queries only)
and an XGBoost ``rank:ndcg`` baseline with default parameters on ``rank.train``, and reports
NDCG@1/3/5/10 on ``rank.test``: linear gain, per query exactly ``sklearn.metrics.ndcg_score``,
averaged over queries with at least one relevant document. The reference numbers (LightGBM
lambdarank, XGBoost defaults, measured on a 2-core machine) travel with the result.

    >>> result = run_ltr_check("../shared/data/ltr-yahoo-sample")
    >>> result["models"]["ours"]["ndcg@10"]
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

from batch.ranker import RankerBag, RankerConfig, as_qid, ndcg_linear, predict_ranker, train_ranker
from gpu_core.errors import LakeError

KS = (1, 3, 5, 10)
GOAL_NDCG10 = 0.779
REFERENCE = {
    "lightgbm_lambdarank": {"ndcg@10": 0.779, "note": "100 trees, 31 leaves, lr 0.1 (2-core machine)"},
    "xgboost_defaults": {"ndcg@10": 0.759, "note": "rank:ndcg, default parameters (2-core machine)"},
}


def load_ltr_dir(data_dir: str | Path) -> dict[str, Any]:
    """rank.train / rank.test (svmlight, n_features aligned) with per-row query ids from ``*.query``."""
    from sklearn.datasets import load_svmlight_files

    d = Path(data_dir)
    paths = [d / "rank.train", d / "rank.test", d / "rank.train.query", d / "rank.test.query"]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise LakeError(f"LTR data directory {d} lacks {', '.join(missing)}", field="data_dir")
    X_tr, y_tr, X_te, y_te = load_svmlight_files([str(paths[0]), str(paths[1])])  # same n_features
    g_tr = np.loadtxt(paths[2], dtype=np.int64, ndmin=1)
    g_te = np.loadtxt(paths[3], dtype=np.int64, ndmin=1)
    return {
        "X_train": X_tr.tocsr(),
        "y_train": y_tr,
        "qid_train": as_qid(X_tr.shape[0], group_sizes=g_tr),
        "X_test": X_te.tocsr(),
        "y_test": y_te,
        "qid_test": as_qid(X_te.shape[0], group_sizes=g_te),
    }


def ndcg_sklearn(scores: Any, labels: Any, qid: Any, k: int) -> float:
    """Mean of ``sklearn.metrics.ndcg_score`` per query, over queries with a relevant document."""
    from sklearn.metrics import ndcg_score

    s, y, q = np.asarray(scores, float), np.asarray(labels, float), np.asarray(qid)
    vals = []
    for u in np.unique(q):
        m = q == u
        if y[m].max() <= 0:
            continue
        vals.append(1.0 if m.sum() == 1 else float(ndcg_score(y[m][None, :], s[m][None, :], k=k)))
    return float(np.mean(vals)) if vals else float("nan")


def ndcg_report(scores: Any, labels: Any, qid: Any, ks: tuple[int, ...] = KS) -> dict[str, float]:
    """NDCG@k for each k with ``kernels.metrics.ndcg_at_k`` (checked against sklearn in the tests)."""
    return {f"ndcg@{k}": round(ndcg_linear(scores, labels, qid, k), 6) for k in ks}


def train_xgb_defaults(X: Any, y: Any, qid: Any, *, nthread: int = 2, device: str = "cpu") -> xgb.XGBRanker:
    """The baseline: ``xgboost.XGBRanker(objective="rank:ndcg")`` with every other parameter default."""
    order = np.argsort(qid, kind="stable")
    model = xgb.XGBRanker(objective="rank:ndcg", n_jobs=nthread, device=device)
    model.fit(X[order], np.asarray(y)[order], qid=np.asarray(qid)[order])
    return model


def run_ltr_check(
    data_dir: str | Path, config: RankerConfig | None = None, *, show: bool = False, console: Any = None
) -> dict[str, Any]:
    """Train ours and the XGBoost-defaults baseline on rank.train; NDCG@1/3/5/10 on rank.test."""
    cfg = config or RankerConfig()
    data = load_ltr_dir(data_dir)
    Xtr, ytr, qtr = data["X_train"], data["y_train"], data["qid_train"]
    Xte, yte, qte = data["X_test"], data["y_test"], data["qid_test"]

    t0 = time.perf_counter()
    ours = train_ranker(Xtr, ytr, qid=qtr, config=cfg)
    t_ours = time.perf_counter() - t0
    s_ours = predict_ranker(ours, Xte)
    if isinstance(ours, RankerBag):
        trees = sum(i + 1 for i in ours.best_iterations)
    else:
        trees = int(ours.best_iteration) + 1

    t0 = time.perf_counter()
    base = train_xgb_defaults(Xtr, ytr, qtr, nthread=cfg.nthread, device=cfg.device)
    t_base = time.perf_counter() - t0
    s_base = base.predict(Xte)

    models = {
        "ours": {**ndcg_report(s_ours, yte, qte), "seconds": round(t_ours, 3), "trees": trees},
        "xgboost_defaults": {
            **ndcg_report(s_base, yte, qte),
            "seconds": round(t_base, 3),
            "trees": int(base.get_booster().num_boosted_rounds()),
        },
    }
    result = {
        "data": {
            "dir": str(data_dir),
            "train_docs": int(Xtr.shape[0]),
            "train_queries": int(np.unique(qtr).size),
            "test_docs": int(Xte.shape[0]),
            "test_queries": int(np.unique(qte).size),
            "n_features": int(Xtr.shape[1]),
        },
        "config": cfg.to_dict(),
        "metric": "NDCG@k, linear gain (sklearn.metrics.ndcg_score), mean over queries with a relevant doc",
        "models": models,
        "reference": REFERENCE,
        "goal_ndcg@10": GOAL_NDCG10,
        "meets_goal": models["ours"]["ndcg@10"] >= GOAL_NDCG10,
        "beats_xgboost_defaults": models["ours"]["ndcg@10"] > models["xgboost_defaults"]["ndcg@10"],
        "xgboost_version": xgb.__version__,
    }
    if show:
        print_table(result, console=console)
    return result


def render_table(result: dict[str, Any]):
    """A rich Table: one row per model (ours, defaults, references), one column per NDCG@k."""
    from rich.table import Table

    table = Table(title="LTR check: NDCG@k on rank.test (Yahoo LTR sample)")
    _SHORT = {"lightgbm_lambdarank": "LightGBM", "xgboost_defaults": "XGB defaults"}
    table.add_column("model", no_wrap=True)
    for k in KS:
        table.add_column(f"@{k}", justify="right", no_wrap=True)
    table.add_column("s", justify="right", no_wrap=True)
    table.add_column("trees", justify="right", no_wrap=True)
    for name, row in result["models"].items():
        table.add_row(
            {"xgboost_defaults": "XGB defaults"}.get(name, name),
            *(f"{row[f'ndcg@{k}']:.4f}" for k in KS),
            f"{row['seconds']:.2f}",
            str(row["trees"]),
        )
    for name, row in result["reference"].items():
        table.add_row(
            f"{_SHORT.get(name, name)} (ref)",
            *("" for _ in KS[:-1]),
            f"{row['ndcg@10']:.3f}",
            "",
            "",
            style="dim",
        )
    return table


def print_table(result: dict[str, Any], console: Any = None) -> None:
    from rich.console import Console

    con = console or Console()
    con.print(render_table(result))
    verdict = "meets" if result["meets_goal"] else "MISSES"
    con.print(f"ours {verdict} the goal NDCG@10 >= {result['goal_ndcg@10']}")


__all__ = [
    "GOAL_NDCG10",
    "REFERENCE",
    "load_ltr_dir",
    "ndcg_report",
    "ndcg_sklearn",
    "print_table",
    "render_table",
    "run_ltr_check",
    "train_xgb_defaults",
]
