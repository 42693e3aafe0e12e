"""Served search ranking on the judged set (issue 11.3), not a test: the full pipeline's order (retrieval through
polish, sponsored items left out) graded by ``batch.search_eval.grade``, for five ways of keeping matching
listings above non-matching ones:

* ``tiers`` (the default): the production model, relevance tiers in ``score_matrix`` (``search_tier_gap``);
* ``gate``: the production model, no tiers, listings missing a required term removed after the stock filter;
* ``neither``: the production model, no tiers;
* ``monotone``: a model retrained with XGBoost ``monotone_constraints`` (+1) on the text_* relevance features
  (``TrainConfig(monotone_text=True)``), no tiers;
* ``monotone_tiers``: that model with tiers.

The variant model scores through the same path (``ctx.pinned_model``, the replay mechanism): only the trained
model differs. Per variant: P@20, NDCG@10, the share of answers where a listing graded below 2 (or 0) sits
above a graded-2 (matching) one; per model, the offline metric of the trainer (NDCG@20 of FinalScore and
pCTR AUC on the holdout day) for feed requests and search requests, so the cost to the feed is visible.

    JAIKOD_HOME=DIR JAIKOD_REDIS_URL=... python -m bench.bench_search_served --users 3
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench._meta import LATEST, write_result

LIMIT = 20
VARIANTS = ("tiers", "gate", "neither", "monotone", "monotone_tiers")


def monotone_model(lake: Path, folder: Path | None):
    """The monotone-constraint variant (trained here, or loaded from ``folder`` when a previous run saved it
    there) and the holdout set."""
    from batch.train import TrainConfig, fit_rankers, load_ranker
    from gpu_core.registry import RankerArtifact
    from kernels.features import MODEL_FEATURES

    t0 = time.perf_counter()
    if folder is not None and (folder / "ranker").is_dir():
        from batch.dataset import training_set
        from batch.etl import etl_as_of

        return load_ranker(folder / "ranker"), training_set(lake, [etl_as_of(lake)]), 0.0
    fitted = fit_rankers(lake, cfg=TrainConfig(monotone_text=True))
    if folder is not None:
        RankerArtifact(fitted.ctr, fitted.cvr, MODEL_FEATURES, {"monotone_text": True}).save(folder / "ranker")
    return fitted.model, fitted.test, time.perf_counter() - t0


def served(state, pipe, queries, users, cat, model, weights, gate: bool) -> dict[str, dict[str, float]]:
    """Graded served answers of every (query, user) for one variant, summarised per group."""
    import pyarrow as pa

    from batch.search_eval import GROUPS, grade, ndcg_at
    from online.api import _ctx
    from online.schemas import FeedRequest

    lower = pa.array([t.lower() for t in cat.titles], type=pa.string())
    pos = {int(i): j for j, i in enumerate(cat.ids)}
    state.weights = weights
    rows = []
    for q in queries:
        g_all = grade(lower, q["need"], q["want"])
        g_el = g_all[cat.in_stock]
        relevant = int((g_el == 2).sum())
        for u in users:
            ctx = _ctx(FeedRequest(user_id=u, limit=LIMIT), "search", q["query"], False, state.settings)
            ctx.deadline_s = time.perf_counter() + 10
            ctx.pinned_model = model
            b = pipe.run(ctx, None, stop="stock")
            if gate and b is not None and b.cols is not None and b.n:
                b.keep(state.be.xp.asarray(b.cols["text_all_required"]) > 0.5, "gate", ctx)
                b.compact()
            b = pipe.run(ctx, b, start="scoring")
            ids = [it["product_id"] for it in pipe.items(ctx, b) if not it["sponsored"]]
            g = np.asarray([g_all[pos[i]] for i in ids], np.int8)
            nothing = q["group"] == "no_match" or relevant == 0
            p20 = (1.0 if nothing else 0.0) if not len(ids) else float((g[:LIMIT] == 2).mean())
            nd = (1.0 if nothing else 0.0) if not len(ids) else ndcg_at(g, g_el)
            inv = bool(len(g) and (g == 2).any() and (g[: int(np.nonzero(g == 2)[0].max())] < 2).any())
            inv0 = bool(len(g) and (g >= 1).any() and (g[: int(np.nonzero(g >= 1)[0].max())] == 0).any())
            rows.append((q["group"], p20, nd, inv, inv0))

    def summary(sel: list[tuple]) -> dict[str, float]:
        return {k: round(float(np.mean([r[i] for r in sel])), 4)
                for i, k in ((1, "p20"), (2, "ndcg10"), (3, "inv_lt2_above_2"), (4, "inv_0_above_match"))}

    out = {grp: summary([r for r in rows if r[0] == grp]) for grp in GROUPS if any(r[0] == grp for r in rows)}
    out["all"] = summary(rows)
    return out


def winner(res: dict[str, Any]) -> str:
    """``monotone`` only when it is better on both counts: the served search (P@20 and NDCG@10 not lower,
    non-matching listings above matching ones not more often, one of them strictly better) and the feed's
    offline NDCG@20 (not lower); else ``tiers``, the default."""
    a, b = res["variants"]["monotone"]["all"], res["variants"]["tiers"]["all"]
    search = (a["p20"] >= b["p20"] and a["ndcg10"] >= b["ndcg10"] and a["inv_lt2_above_2"] <= b["inv_lt2_above_2"]
              and (a["p20"], a["ndcg10"], -a["inv_lt2_above_2"]) != (b["p20"], b["ndcg10"], -b["inv_lt2_above_2"]))
    feed = res["models"]["monotone"]["ndcg20_feed"] >= res["models"]["production"]["ndcg20_feed"]
    return "monotone" if search and feed else "tiers"


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.2))
    names = list(res["variants"])
    x = np.arange(len(names))
    for i, (key, label) in enumerate((("p20", "P@20"), ("ndcg10", "NDCG@10"),
                                      ("inv_lt2_above_2", "answers with a non-match above a match"))):
        a1.bar(x + (i - 1) * 0.27, [res["variants"][n]["all"][key] for n in names], 0.27, label=label)
    a1.set_xticks(x, names, rotation=20)
    a1.set_ylim(0, 1.05)
    a1.set_title(f"served search, judged set ({res['queries']} queries x {res['users_per_query']} users)")
    a1.legend(fontsize=7, loc="center right")
    models = list(res["models"])
    xm = np.arange(len(models))
    a2.bar(xm - 0.2, [res["models"][m]["ndcg20_feed"] for m in models], 0.4, label="feed NDCG@20 (holdout)")
    a2.bar(xm + 0.2, [res["models"][m]["auc_click_feed"] for m in models], 0.4, label="feed pCTR AUC (holdout)")
    a2.set_xticks(xm, models, rotation=20)
    a2.set_title("the trainer's offline metric on feed requests")
    a2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_table(res: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"served search ranking — {res['world']}")
    for col in ("variant", "model", "P@20", "NDCG@10", "non-match above match", "0 above match", "feed NDCG@20",
                "feed AUC", "search NDCG@20"):
        t.add_column(col)
    for name, v in res["variants"].items():
        m = res["models"][res["variant_model"][name]]
        a = v["all"]
        t.add_row(name, res["variant_model"][name], f"{a['p20']:.3f}", f"{a['ndcg10']:.3f}",
                  f"{100 * a['inv_lt2_above_2']:.1f} %", f"{100 * a['inv_0_above_match']:.1f} %",
                  f"{m['ndcg20_feed']:.4f}", f"{m['auc_click_feed']:.4f}", f"{m.get('ndcg20_search', float('nan')):.4f}")
    Console(width=170).print(t)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=3, help="users per judged query")
    ap.add_argument("--monotone-dir", type=Path, default=None,
                    help="save the trained monotone model here (and load it from here next time)")
    ap.add_argument("--out", type=Path, default=LATEST)
    args = ap.parse_args(argv)

    from batch.search_eval import load_catalogue, load_judged
    from batch.train import holdout_metrics
    from bench.bench_online import make_state, open_world, user_ids
    from gpu_core.registry import PRODUCTION
    from online.pipeline import RankingPipeline

    home = Path(os.environ["JAIKOD_HOME"])
    with contextlib.ExitStack() as st:
        _, world = open_world(st, home, "jk-bench-search-served-")
        lake = home / "lake"
        mono, test, train_s = monotone_model(lake, args.monotone_dir)
        state = make_state()
        pipe = RankingPipeline(state)
        cat = load_catalogue(lake)
        users = user_ids(state, 40)[: args.users]
        queries = load_judged()
        prod = state.models.get(PRODUCTION)
        tiers_w = state.weights
        flat_w = dataclasses.replace(tiers_w, tier_gap=0.0)
        setup = {"tiers": (prod, tiers_w, False), "gate": (prod, flat_w, True), "neither": (prod, flat_w, False),
                 "monotone": (mono, flat_w, False), "monotone_tiers": (mono, tiers_w, False)}
        variant_model = {"tiers": "production", "gate": "production_no_tiers", "neither": "production_no_tiers",
                         "monotone": "monotone", "monotone_tiers": "monotone_tiers"}
        models = {"production": holdout_metrics(prod, test, tiers_w),
                  "production_no_tiers": holdout_metrics(prod, test, flat_w),
                  "monotone": holdout_metrics(mono, test, flat_w),
                  "monotone_tiers": holdout_metrics(mono, test, tiers_w)}
        res: dict[str, Any] = {"users_per_query": len(users), "queries": len(queries), "world": world,
                               "production_model": prod.label, "monotone_train_s": round(train_s, 1),
                               "variant_model": variant_model, "models": models, "variants": {}}
        for name in VARIANTS:
            model, w, gate = setup[name]
            res["variants"][name] = served(state, pipe, queries, users, cat, model, w, gate)
            print(name, res["variants"][name]["all"], flush=True)
        state.weights = tiers_w
        state.stop()
    res["winner"] = winner(res)
    write_result(args.out / "search_served.json", res, world=world)
    plot(res, args.out / "search_served.png")
    print_table(res)
    return res


if __name__ == "__main__":
    main()
