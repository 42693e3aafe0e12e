"""Hydration vs Feast, in the same run (issue 16, part 1), not a test.

    python -m bench.bench_feast --home /tmp/demo/home      # a world's JAIKOD_HOME (its Redis: JAIKOD_REDIS_URL)
    python -m bench.bench_feast                            # a tiny world built here

The world's Redis is copied (``redis-cli --rdb``, a read) into a private redis-server that both sides
use, so the world is never written. The same feature views as the schema (``product_daily``,
``product_realtime``: 13 product features, vectors included) become a Feast repo whose online store is
that private Redis; the parquet sources hold the values our hydration stage returns (daily: the whole
product table; real-time: the values the stage computed at the benchmark's ``now`` for the ids read),
``FeatureStore.materialize`` writes them, and ``get_online_features(...).to_dict()`` for the same 1,000
listing ids is timed against :class:`online.stages.HydrationStage` on the same ids. The values are
compared (equal float32, NaN = missing). Feast runs in its own virtualenv (bench/peers/setup.sh feast).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench._meta import LATEST, ROOT, write_result
from bench.bench_online import make_state, open_world, pct, private_redis, user_ids

FEAST_VENV = ROOT / ".venv-feast"


@contextlib.contextmanager
def redis_copy(src_url: str, tmp: Path):
    """A private redis-server holding a copy of ``src_url``'s data (read with ``redis-cli --rdb``)."""
    rdb = tmp / "copy.rdb"
    subprocess.run([shutil.which("redis-cli") or "redis-cli", "-u", src_url, "--rdb", str(rdb)], check=True,
                   capture_output=True, timeout=300)
    with private_redis(tmp, dbfilename=rdb.name) as url:
        yield url


def ensure_feast() -> Path:
    subprocess.run(["bash", str(ROOT / "bench" / "peers" / "setup.sh"), "feast", str(FEAST_VENV)], check=True)
    return FEAST_VENV / "bin" / "python"


def bench_hydration(state, ids_idx: np.ndarray, n: int, warmup: int = 30) -> tuple[dict[str, Any], dict, Any]:
    from online.api import _ctx
    from online.candidates import CandidateBatch, Source
    from online.pipeline import RankingPipeline
    from online.schemas import FeedRequest
    from online.stages import HydrationStage

    users = user_ids(state, 1)
    ctx = _ctx(FeedRequest(user_id=users[0], limit=20), "feed", "", False, state.settings)
    RankingPipeline(state).run(ctx, None, stop="user")
    base = CandidateBatch.of(state.be.xp, ids_idx, np.full(len(ids_idx), int(Source.VECTOR), np.int8))
    stage = HydrationStage()
    lat = []
    for i in range(warmup + n):
        b = copy.copy(base)
        t0 = time.perf_counter()
        stage.run(ctx, b, state)
        if i >= warmup:
            lat.append((time.perf_counter() - t0) * 1000)
    assert b.cols is not None, "hydration returned no columns (feature store over budget?)"
    return ({"n": n, "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "fallbacks": ctx.fallbacks},
            {k: np.asarray(v) for k, v in b.cols.items()}, ctx)


def write_sources(state, work: Path, ids_idx: np.ndarray, cols: dict[str, np.ndarray], now_ms: int) -> list[dict]:
    """Parquet sources of the two feature views (the values our store serves) + their Feast fields."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from gpu_core.schema import PRODUCT_DAILY, PRODUCT_REALTIME

    ts = dt.datetime.fromtimestamp(now_ms / 1000 - 3600, dt.UTC)
    m = state.mirror
    views = []
    for view, ids, values in (
        (PRODUCT_DAILY, m.ids, {f.name: np.asarray(m.cols[f.name]) for f in PRODUCT_DAILY.packed}),
        (PRODUCT_REALTIME, m.ids[ids_idx], {f.name: cols[f.name] for f in PRODUCT_REALTIME.packed}),
    ):
        arrays = {"product_id": pa.array(np.asarray(ids, np.int64)),
                  "event_timestamp": pa.array(np.full(len(ids), ts), pa.timestamp("us", tz="UTC"))}
        fields = {}
        for name, v in values.items():
            if v.ndim == 2:
                arrays[name] = pa.array(list(np.asarray(v, np.float32)), pa.list_(pa.float32()))
                fields[name] = "float32[]"
            else:
                arrays[name] = pa.array(np.asarray(v, np.float32))
                fields[name] = "float32"
        path = work / f"{view.name}.parquet"
        pq.write_table(pa.table(arrays), path)
        views.append({"name": view.name, "path": str(path), "fields": fields, "rows": len(ids)})
    return views


def compare(ours: dict[str, np.ndarray], feast: Any, fields: list[str]) -> dict[str, Any]:
    out = {}
    for f in fields:
        a = np.asarray(ours[f], np.float32)
        b = np.asarray(feast[f]).astype(np.float32)
        out[f] = {"equal": bool(a.shape == b.shape and np.array_equal(a, b)),
                  "missing_in_feast": int(np.isnan(b).reshape(len(b), -1).any(axis=1).sum())}
    return {"all_equal": all(v["equal"] for v in out.values()), "by_feature": out}


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, f = result["hydration"], result["feast"]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    x = np.arange(2)
    ax.bar(x - 0.2, [h["p50_ms"], f["p50_ms"]], 0.4, label="p50")
    ax.bar(x + 0.2, [h["p99_ms"], f["p99_ms"]], 0.4, label="p99")
    ax.set_xticks(x, ["our hydration stage", f"Feast {f['version']} get_online_features"])
    ax.set_yscale("log")
    ax.set_ylabel("ms (log)")
    ax.set_title(f"{result['ids']} listings x {result['features']} features, same Redis; "
                 f"p50 {result['ratio_p50']:.0f}x, p99 {result['ratio_p99']:.0f}x")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, help="an existing world's JAIKOD_HOME (default: build a tiny one)")
    ap.add_argument("--ids", type=int, default=1000, help="listing ids per read")
    ap.add_argument("--n", type=int, default=300, help="hydration repetitions")
    ap.add_argument("--feast-n", type=int, default=60, help="Feast repetitions")
    ap.add_argument("--out", type=Path, default=LATEST)
    args = ap.parse_args(argv)

    from gpu_core.device import reset_backend
    from gpu_core.settings import get_settings, reset_settings

    feast_py = ensure_feast()
    with contextlib.ExitStack() as stack:
        tmp, world = open_world(stack, args.home, "jk-bench-feast-")
        if args.home is not None:  # both sides read a private copy of the world's Redis (never written)
            src = get_settings().redis_url
            os.environ["JAIKOD_REDIS_URL"] = stack.enter_context(redis_copy(src, tmp))
            reset_settings()
            reset_backend()
            world = f"{args.home} (its Redis {src} copied into a private redis-server; both sides read the copy)"
        url = get_settings().redis_url
        state = make_state()
        rng = np.random.default_rng(16)
        m = state.mirror
        ids_idx = np.sort(rng.choice(len(m.ids), size=min(args.ids, len(m.ids)), replace=False))
        hyd, cols, ctx = bench_hydration(state, ids_idx, args.n)
        views = write_sources(state, tmp, ids_idx, cols, ctx.now_ms)
        host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
        spec = {"redis": f"{host}:{port},db=0", "views": views, "ids": [int(i) for i in m.ids[ids_idx]],
                "n": args.feast_n, "warmup": 5,
                "materialize_end": dt.datetime.fromtimestamp(ctx.now_ms / 1000, dt.UTC).isoformat()}
        (tmp / "spec.json").write_text(json.dumps(spec))
        t0 = time.perf_counter()
        subprocess.run([str(feast_py), str(ROOT / "bench" / "peers" / "feast_client.py"), str(tmp)], check=True,
                       env={k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))})
        feast_wall = time.perf_counter() - t0
        fr = json.loads((tmp / "feast.json").read_text())
        fvals = np.load(tmp / "feast_values.npz")
        fields = [f for v in views for f in v["fields"]]
        eq = compare(cols, fvals, fields)
        n_rt = int(sum(1 for k in state.redis.mget(m.rt_keys[ids_idx].tolist()) if k))
        state.stop()

    feast = {"version": fr["feast_version"], "n": len(fr["latencies_ms"]), "p50_ms": pct(fr["latencies_ms"], 50),
             "p99_ms": pct(fr["latencies_ms"], 99), "materialize_s": round(fr["materialize_s"], 2),
             "call": fr["call"], "subprocess_wall_s": round(feast_wall, 1)}
    result = {
        "benchmark": "hydration vs Feast (issue 16, part 1)", "ids": len(ids_idx), "features": len(fields),
        "feature_views": {v["name"]: {"fields": list(v["fields"]), "rows_materialised": v["rows"]} for v in views},
        "ids_with_realtime_state": n_rt,
        "hydration": {**hyd, "what": "HydrationStage.run: product daily features from the in-memory mirror + "
                      "one MGET of the real-time ring buffers, decoded"},
        "feast": feast, "values": eq,
        "ratio_p50": feast["p50_ms"] / hyd["p50_ms"], "ratio_p99": feast["p99_ms"] / hyd["p99_ms"],
        "goal": "hydration >= 50x faster than Feast at p50 and at p99",
        "gpu": "GPU: not measured",
    }
    result["goal_met"] = bool(result["ratio_p50"] >= 50 and result["ratio_p99"] >= 50)
    write_result(args.out / "feast.json", result, world=world)
    plot(result, args.out / "feast.png")
    print(f"hydration p50 {hyd['p50_ms']:.3f} / p99 {hyd['p99_ms']:.3f} ms; Feast {feast['version']} p50 "
          f"{feast['p50_ms']:.1f} / p99 {feast['p99_ms']:.1f} ms; ratio p50 {result['ratio_p50']:.0f}x, p99 "
          f"{result['ratio_p99']:.0f}x; values equal: {eq['all_equal']}")
    return result


if __name__ == "__main__":
    main()
