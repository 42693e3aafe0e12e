"""How the hot path grows with work, and the scoring stage against the floor (issue 16, parts 2 and 4),
not a test.

    python -m bench.bench_scaling --home /tmp/demo/home     # a world (read only; its Redis: JAIKOD_REDIS_URL)
    python -m bench.bench_scaling                           # a tiny world built here

Scaling: synthetic candidate sets of 100, 1,000, 5,000 and 10,000 listings drawn from those within the
user's max distance (retrieval is not part of this: its pool size is the search work's), run through
the served stages ``user`` then ``filters`` .. ``polish`` (:meth:`RankingPipeline.run`); per-stage and
total p50/p99, the candidate count scored, and CPU time per request (this process's CPU seconds /
requests; Redis's own CPU is not in it). The real pipeline (retrieval included) is measured alongside,
with its candidate count.

Scoring vs the floor, at 1,000 rows (the stage's own matrix): the scoring stage (assembly + pCTR + pCVR
+ FinalScore) against bare ``inplace_predict``, against XGBoost's C predictor called directly
(:func:`engines.ranker.predict_dense`, what the stage uses), and against compiled trees (tl2cgen, in
its own venv: bench/peers/setup.sh trees), with identity checked; with and without TreeSHAP for the
top 10. The stage before this change (``inplace_predict``) is measured in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench._meta import LATEST, ROOT, write_result
from bench.bench_online import make_state, open_world, pct, user_ids

SIZES = (100, 1000, 5000, 10000)
TREES_VENV = ROOT / ".venv-trees"
STAGE_NAMES = ("user", "filters", "hydration", "stock", "scoring", "rerank", "polish")


def _ctx(state, user: int):
    from online.api import _ctx as make
    from online.schemas import FeedRequest

    return make(FeedRequest(user_id=user, limit=20), "feed", "", False, state.settings)


def pools(state, users: list[int]) -> dict[int, np.ndarray]:
    """Per user: the mirror rows within the user's max distance (what retrieval may hand the filters)."""
    from kernels.filters import distance_mask
    from online.pipeline import RankingPipeline

    pipe = RankingPipeline(state)
    ll = np.asarray(state.mirror.cols["latlong"], np.float64)
    out = {}
    for u in users:
        ctx = _ctx(state, u)
        pipe.run(ctx, None, stop="user")
        if ctx.user.geo is None:
            out[u] = np.arange(len(state.mirror.ids))
            continue
        mask, _ = distance_mask(ctx.user.geo[0], ctx.user.geo[1], ll[:, 0], ll[:, 1], ctx.user.max_distance_km, xp=np)
        out[u] = np.flatnonzero(np.asarray(mask))
    return out


def synthetic_requests(state, users, pool, size: int, n: int, warmup: int, seed: int = 0) -> dict[str, Any]:
    from online.pipeline import RankingPipeline

    pipe = RankingPipeline(state)
    # the filter stage keeps at most n_candidates: raised to the size offered, so that every size is scored
    served_settings = state.settings
    state.settings = served_settings.model_copy(update={"n_candidates": max(size, served_settings.n_candidates)})
    try:
        return _synthetic(state, pipe, users, pool, size, n, warmup, seed)
    finally:
        state.settings = served_settings


def _synthetic(state, pipe, users, pool, size: int, n: int, warmup: int, seed: int) -> dict[str, Any]:
    from online.candidates import CandidateBatch, Source

    rng = np.random.default_rng(seed + size)
    sets = []
    for i in range(warmup + n):
        u = users[i % len(users)]
        p = pool[u]
        sets.append((u, np.sort(rng.choice(p, size=min(size, len(p)), replace=False))))
    stages: dict[str, list[float]] = {k: [] for k in (*STAGE_NAMES, "total")}
    scored, fallbacks, over = [], {}, 0
    cpu0 = wall0 = 0.0
    for i, (u, idx) in enumerate(sets):
        if i == warmup:
            cpu0, wall0 = time.process_time(), time.perf_counter()
        ctx = _ctx(state, u)
        ctx.deadline_s = time.perf_counter() + 60.0  # measure every size to the end; overruns counted below
        batch = CandidateBatch.of(state.be.xp, idx, np.full(len(idx), int(Source.VECTOR), np.int8))
        t0 = time.perf_counter()
        pipe.run(ctx, None, stop="user")
        batch = pipe.run(ctx, batch, start="filters")
        total = (time.perf_counter() - t0) * 1000
        if i < warmup:
            continue
        for k in STAGE_NAMES:
            stages[k].append(ctx.timings_ms.get(k, 0.0))
        stages["total"].append(total)
        over += total > state.settings.request_budget_ms
        scored.append(0 if batch.X is None else int(batch.X.shape[0]))
        for f in ctx.fallbacks:
            fallbacks[f] = fallbacks.get(f, 0) + 1
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {"candidates_offered": size, "candidates_scored_mean": float(np.mean(scored)),
            "candidates_scored_min": int(min(scored)), "n": n,
            "stages": {k: {"p50_ms": pct(v, 50), "p99_ms": pct(v, 99)} for k, v in stages.items()},
            "cpu_ms_per_request": 1000 * cpu / n, "wall_ms_per_request": 1000 * wall / n, "fallbacks": fallbacks,
            "over_request_budget": over, "request_budget_ms": state.settings.request_budget_ms}


def real_pipeline(state, users, n: int, warmup: int = 20) -> dict[str, Any]:
    from online.pipeline import RankingPipeline

    pipe = RankingPipeline(state)
    lat, cand = [], []
    for i in range(warmup + n):
        if i == warmup:
            cpu0 = time.process_time()
        ctx = _ctx(state, users[i % len(users)])
        res = pipe.rank(ctx)
        if i >= warmup:
            lat.append(ctx.timings_ms["total"])
            cand.append(0 if res.batch is None or res.batch.X is None else int(res.batch.X.shape[0]))
    cpu = time.process_time() - cpu0
    return {"n": n, "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "candidates_scored_mean": float(np.mean(cand)),
            "cpu_ms_per_request": 1000 * cpu / n,
            "what": "RankingPipeline.rank with the real retrieval (its pool is the search work's)"}


def _timed(f, n: int, warmup: int = 20) -> list[float]:
    for _ in range(warmup):
        f()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        f()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def compiled_trees(model, X: np.ndarray, n: int, tmp: Path) -> dict[str, Any]:
    """tl2cgen in its own venv on the same matrix and the same trees; None-safe when it cannot run."""
    try:
        subprocess.run(["bash", str(ROOT / "bench" / "peers" / "setup.sh"), "trees", str(TREES_VENV)], check=True)
    except subprocess.CalledProcessError as exc:
        return {"available": False, "why": f"setup failed: {exc}"}
    models = []
    for name, booster, best in (("ctr", model.ctr, model.best_ctr), ("cvr", model.cvr, model.best_cvr)):
        path = tmp / f"{name}.json"
        (booster[:best] if best > 0 else booster).save_model(str(path))
        models.append({"name": name, "path": str(path)})
    np.save(tmp / "X.npy", X)
    (tmp / "spec.json").write_text(json.dumps({"models": models, "n": n, "warmup": 20}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    subprocess.run([str(TREES_VENV / "bin" / "python"), str(ROOT / "bench" / "peers" / "trees_client.py"), str(tmp)],
                   check=True, env=env)
    res = json.loads((tmp / "trees.json").read_text())
    preds = np.load(tmp / "trees_preds.npz")
    ident = {}
    ours = model.predict(X)
    for name, p in zip(("ctr", "cvr"), ours, strict=True):
        t = preds[name]
        ident[name] = {"bit_identical": bool(np.array_equal(t, p)), "rows_differing": int((t != p).sum()),
                       "max_abs_diff": float(np.abs(t.astype(np.float64) - p).max())}
    return {"available": True, "versions": {"treelite": res["treelite"], "tl2cgen": res["tl2cgen"]},
            "compile_s": {k: v["compile_s"] for k, v in res["models"].items()},
            "ctr_cvr_p50_ms": pct(res["latencies_ms"], 50), "ctr_cvr_p99_ms": pct(res["latencies_ms"], 99),
            "identity_vs_xgboost": ident, "preds": preds}


def scoring_floor(state, users, pool, rows: int, n: int, tmp: Path) -> dict[str, Any]:
    import engines.ranker as ranker
    from online.candidates import CandidateBatch, Source
    from online.pipeline import RankingPipeline
    from online.stages import ScoringStage

    pipe = RankingPipeline(state)
    u = users[0]
    rng = np.random.default_rng(2)
    idx = np.sort(rng.choice(pool[u], size=min(int(rows * 1.05), len(pool[u])), replace=False))
    ctx = _ctx(state, u)
    pipe.run(ctx, None, stop="user")
    batch = pipe.run(ctx, CandidateBatch.of(np, idx, np.full(len(idx), int(Source.VECTOR), np.int8)),
                     start="filters", stop="stock")
    batch.compact()
    model = state.models.get("production")
    stage = ScoringStage()
    holder: dict[str, Any] = {}

    def run_stage() -> None:
        b = copy.copy(batch)
        stage.run(ctx, b, state)
        holder["b"] = b

    def run_stage_shap() -> None:
        run_stage()
        b = holder["b"]
        top = np.argsort(-b.score, kind="stable")[:10]
        model.explain(np.asarray(b.X)[top])

    run_stage()
    X = np.asarray(holder["b"].X)
    it_ctr, it_cvr = model._range(model.best_ctr), model._range(model.best_cvr)

    def bare_inplace() -> None:
        model.ctr.inplace_predict(X, iteration_range=it_ctr)
        model.cvr.inplace_predict(X, iteration_range=it_cvr)

    def bare_dense() -> None:
        ranker.predict_dense(model.ctr, X, it_ctr)
        ranker.predict_dense(model.cvr, X, it_cvr)

    def stage_before() -> None:  # the stage as it was: Ranker.predict through inplace_predict
        saved, ranker._XGB_C = ranker._XGB_C, None
        try:
            run_stage()
        finally:
            ranker._XGB_C = saved

    t: dict[str, list[float]] = {}
    for _round in range(2):  # interleaved rounds: the same machine load for every variant
        for name, f in (("stage", run_stage), ("stage_before_inplace_predict", stage_before),
                        ("bare_inplace_predict", bare_inplace), ("bare_c_predictor", bare_dense),
                        ("stage_with_treeshap_top10", run_stage_shap)):
            t.setdefault(name, []).extend(_timed(f, n // 2))
    top10 = np.asarray(X[np.argsort(-holder["b"].score, kind="stable")[:10]])
    t["treeshap_top10_alone"] = _timed(lambda: model.explain(top10), n // 2)
    out: dict[str, Any] = {"matrix": list(X.shape), "trees_ctr": model.best_ctr, "trees_cvr": model.best_cvr,
                           "candidates_scored": int(X.shape[0])}
    out.update({f"{k}_p50_ms": pct(v, 50) for k, v in t.items()})
    out.update({f"{k}_p99_ms": pct(v, 99) for k, v in t.items()})
    trees = compiled_trees(model, X, n, tmp)
    preds = trees.pop("preds", None)
    out["compiled_trees"] = trees
    s50 = out["stage_p50_ms"]
    out["ratio_stage_vs_bare_c_predictor"] = s50 / out["bare_c_predictor_p50_ms"]
    out["ratio_stage_vs_bare_inplace_predict"] = s50 / out["bare_inplace_predict_p50_ms"]
    out["ratio_stage_before_vs_bare_inplace_predict"] = (out["stage_before_inplace_predict_p50_ms"]
                                                         / out["bare_inplace_predict_p50_ms"])
    floors = {"bare_c_predictor": out["bare_c_predictor_p50_ms"], "bare_inplace_predict": out["bare_inplace_predict_p50_ms"]}
    if trees.get("available"):
        floors["compiled_trees_tl2cgen"] = trees["ctr_cvr_p50_ms"]
        out["ratio_stage_vs_compiled_trees"] = s50 / trees["ctr_cvr_p50_ms"]
        # would the ranking change? top 20 by FinalScore with tl2cgen's pCTR/pCVR
        from kernels.scoring import final_score

        w = state.weights
        fs = final_score(preds["ctr"], preds["cvr"], X[:, ranker._TRUST], X[:, ranker._BOOSTED], w.w_ctr, w.w_cvr,
                         w.w_trust, w.boost_multiplier, xp=np)
        ours = holder["b"].score
        out["compiled_trees"]["same_top20"] = bool(np.array_equal(np.argsort(-fs, kind="stable")[:20],
                                                                  np.argsort(-ours, kind="stable")[:20]))
    fastest = min(floors, key=floors.get)
    out["fastest_bare_scorer"] = fastest
    out["ratio_stage_vs_fastest_bare"] = s50 / floors[fastest]
    ident = trees.get("identity_vs_xgboost", {})
    out["serving_default"] = ("xgboost C predictor (predict_dense)" if not ident or not all(
        v["bit_identical"] for v in ident.values()) else "compiled trees would qualify")
    out["goal"] = "scoring stage <= 1.1x the fastest bare scorer on the same matrix"
    return out


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["scaling"]
    x = [r["candidates_scored_mean"] for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for k in ("total", "scoring", "hydration", "filters", "user", "rerank", "polish"):
        a1.plot(x, [r["stages"][k]["p50_ms"] for r in rows], "-o", label=f"{k} p50")
    a1.plot(x, [r["stages"]["total"]["p99_ms"] for r in rows], "--", c="k", label="total p99")
    a1.set_xscale("log")
    a1.set_yscale("log")
    a1.set_xlabel("candidates scored")
    a1.set_ylabel("ms")
    a1.set_title("in-process latency vs candidates (synthetic sets)")
    a1.legend(fontsize=7)
    a2.plot(x, [r["cpu_ms_per_request"] for r in rows], "-o", label="CPU ms / request")
    a2.axhline(3.0, ls="--", c="gray", lw=1, label="goal 3 ms at 1,000")
    a2.set_xscale("log")
    a2.set_xlabel("candidates scored")
    a2.set_ylabel("CPU ms per request (this process)")
    s = result["scoring_floor"]
    a2.set_title(f"scoring stage {s['ratio_stage_vs_fastest_bare']:.2f}x fastest bare ({s['fastest_bare_scorer']})")
    a2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="hot path scaling (in process)")
    for c in ("candidates scored", "total p50", "total p99", "scoring p50", "hydration p50", "CPU ms/req"):
        t.add_column(c, justify="right")
    for r in result["scaling"]:
        st = r["stages"]
        t.add_row(f"{r['candidates_scored_mean']:.0f}", f"{st['total']['p50_ms']:.2f}", f"{st['total']['p99_ms']:.2f}",
                  f"{st['scoring']['p50_ms']:.2f}", f"{st['hydration']['p50_ms']:.2f}", f"{r['cpu_ms_per_request']:.2f}")
    Console().print(t)
    s = result["scoring_floor"]
    t = Table(title=f"scoring vs the floor, matrix {s['matrix']}")
    t.add_column("what")
    t.add_column("p50 ms", justify="right")
    t.add_column("p99 ms", justify="right")
    for k in ("stage", "stage_before_inplace_predict", "bare_inplace_predict", "bare_c_predictor",
              "stage_with_treeshap_top10", "treeshap_top10_alone"):
        t.add_row(k, f"{s[f'{k}_p50_ms']:.3f}", f"{s[f'{k}_p99_ms']:.3f}")
    ct = s["compiled_trees"]
    if ct.get("available"):
        t.add_row(f"compiled trees (tl2cgen {ct['versions']['tl2cgen']})", f"{ct['ctr_cvr_p50_ms']:.3f}",
                  f"{ct['ctr_cvr_p99_ms']:.3f}")
    Console().print(t)
    print(f"stage / fastest bare ({s['fastest_bare_scorer']}): {s['ratio_stage_vs_fastest_bare']:.2f}x; "
          f"compiled trees identity: {ct.get('identity_vs_xgboost')}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, help="an existing world's JAIKOD_HOME (default: build a tiny one)")
    ap.add_argument("--n", type=int, default=200, help="requests per candidate-set size")
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--score-n", type=int, default=300, help="repetitions of each scoring variant")
    ap.add_argument("--out", type=Path, default=LATEST)
    args = ap.parse_args(argv)

    with contextlib.ExitStack() as stack:
        tmp, world = open_world(stack, args.home, "jk-bench-scaling-")
        os.environ["JAIKOD_REPLAY_SAMPLE_RATE"] = "0"
        state = make_state()
        users = user_ids(state)
        pool = pools(state, users)
        result: dict[str, Any] = {"benchmark": "hot path scaling and scoring vs the floor (issue 16, parts 2, 4)",
                                  "n_products": len(state.mirror.ids),
                                  "pool_within_max_distance_mean": float(np.mean([len(p) for p in pool.values()])),
                                  "gpu": "GPU: not measured"}
        result["scaling"] = [synthetic_requests(state, users, pool, int(s), args.n, warmup=20)
                             for s in args.sizes.split(",")]
        result["real_pipeline"] = real_pipeline(state, users, args.n)
        result["scoring_floor"] = scoring_floor(state, users, pool, 1000, args.score_n, tmp)
        state.stop()
    at = next((r for r in result["scaling"] if r["candidates_offered"] == 1000), None)
    if at is not None:
        result["cpu_ms_per_request_at_1000"] = at["cpu_ms_per_request"]
        result["goal_cpu"] = "CPU time per request <= 3 ms at 1,000 candidates"
        result["goal_cpu_met"] = bool(at["cpu_ms_per_request"] <= 3.0)
    result["goal_scoring_met"] = bool(result["scoring_floor"]["ratio_stage_vs_fastest_bare"] <= 1.1)
    write_result(args.out / "scaling.json", result, world=world)
    plot(result, args.out / "scaling.png")
    print_table(result)
    return result


if __name__ == "__main__":
    main()
