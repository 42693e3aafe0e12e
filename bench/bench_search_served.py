"""Served search ranking on the judged set (issue 11.3), not a test: the full pipeline's order (retrieval through
polish, sponsored items left out) for relevance tiers (the default), a hard gate (listings missing a required term
removed after the stock filter, no tiers) and neither, graded by batch/search_eval.grade
P@20, NDCG@10 and how
often a listing graded below 2 (or 0) sits above a graded-2 (matching) one. Monotone constraints: not measured.

    JAIKOD_HOME=DIR JAIKOD_REDIS_URL=... python bench/bench_search_served.py 3   # 3 users per query
"""
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from batch.search_eval import GROUPS, grade, load_catalogue, load_judged, ndcg_at
from bench._meta import LATEST
from bench.bench_online import make_state, open_world, user_ids
from online.api import _ctx
from online.pipeline import RankingPipeline
from online.schemas import FeedRequest

LIMIT = 20
with contextlib.ExitStack() as st:
    open_world(st, Path(os.environ["JAIKOD_HOME"]), "x")
    state = make_state()
    pipe = RankingPipeline(state)
    cat = load_catalogue(Path(os.environ["JAIKOD_HOME"]) / "lake")
    lower = pa.array([t.lower() for t in cat.titles], type=pa.string())
    pos = {int(i): j for j, i in enumerate(cat.ids)}
    users = user_ids(state, 40)[:int(sys.argv[1])]
    queries = load_judged()
    base_w = state.weights
    import dataclasses
    res = {}
    for variant in ("tiers", "gate", "neither"):
        state.weights = base_w if variant == "tiers" else dataclasses.replace(base_w, tier_gap=0.0)
        rows = []
        for q in queries:
            g_all = grade(lower, q["need"], q["want"])
            g_el = g_all[cat.in_stock]
            relevant = int((g_el == 2).sum())
            for u in users:
                ctx = _ctx(FeedRequest(user_id=u, limit=LIMIT), "search", q["query"], False, state.settings)
                ctx.deadline_s = time.perf_counter() + 10
                b = pipe.run(ctx, None, stop="stock")
                if variant == "gate" and b is not None and b.cols is not None and b.n:
                    b.keep(state.be.xp.asarray(b.cols["text_all_required"]) > 0.5, "gate", ctx)
                    b.compact()
                b = pipe.run(ctx, b, start="scoring")
                items = pipe.items(ctx, b)
                ids = [it["product_id"] for it in items if not it["sponsored"]]
                g = np.asarray([g_all[pos[i]] for i in ids], np.int8)
                nothing = q["group"] == "no_match" or relevant == 0
                p20 = (1.0 if nothing else 0.0) if not len(ids) else float((g[:LIMIT] == 2).mean())
                nd = (1.0 if nothing else 0.0) if not len(ids) else ndcg_at(g, g_el)
                inv = bool(len(g) and (g == 2).any() and (g[: int(np.nonzero(g == 2)[0].max())] < 2).any())
                inv0 = bool(len(g) and (g >= 1).any() and (g[: int(np.nonzero(g >= 1)[0].max())] == 0).any())
                rows.append((q["group"], p20, nd, inv, inv0, len(ids)))
        res[variant] = {grp: {"p20": round(float(np.mean([r[1] for r in rows if r[0] == grp])), 3),
                              "ndcg10": round(float(np.mean([r[2] for r in rows if r[0] == grp])), 3),
                              "inv_lt2_above_2": round(float(np.mean([r[3] for r in rows if r[0] == grp])), 3),
                              "inv_0_above_match": round(float(np.mean([r[4] for r in rows if r[0] == grp])), 3)}
                        for grp in GROUPS}
        res[variant]["all"] = {"p20": round(float(np.mean([r[1] for r in rows])), 3), "ndcg10": round(float(np.mean([r[2] for r in rows])), 3),
                               "inv_lt2_above_2": round(float(np.mean([r[3] for r in rows])), 3), "inv_0_above_match": round(float(np.mean([r[4] for r in rows])), 3)}
        print(variant, json.dumps(res[variant]), flush=True)
    json.dump({"users_per_query": len(users), "queries": len(queries), "world": os.environ["JAIKOD_HOME"], "variants": res},
              open(LATEST / "search_served.json", "w"), indent=1)
    state.stop()
