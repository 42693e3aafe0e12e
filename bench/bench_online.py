"""Benchmark of the online ranking service (issue 4), not a test.

    python -m bench.bench_online                      # a tiny world built in a temp dir + private redis
    python -m bench.bench_online --home var           # an existing world (its Redis at JAIKOD_REDIS_URL)

Measures on this machine: in-process ``RankingPipeline.rank`` p50/p99 with per-stage breakdown;
hydration p99; scoring stage vs bare ``inplace_predict`` on the same matrix; HTTP ``/v1/feed``
sequential p50/p99 through a real uvicorn on loopback; throughput vs concurrency (RPS, p99, knee).
Baselines in the same run: a bare FastAPI ``async def`` + orjson endpoint on the same uvicorn
settings, and one Redis ``MGET`` of 1,000 packed float32 rows. Writes bench/results/online.json + .png.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench._meta import LATEST, write_result

ROOT = Path(__file__).resolve().parents[1]
CONCURRENCY = (1, 2, 4, 8, 16, 32)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(xs, q) -> float:
    return float(np.percentile(np.asarray(xs, dtype=np.float64), q)) if len(xs) else float("nan")


@contextlib.contextmanager
def private_redis(tmp: Path, *extra_args: str, dbfilename: str | None = None):
    """A redis-server of this benchmark on a free port (``dbfilename``: start from that RDB in ``tmp``;
    ``extra_args``: more server options)."""
    port = _free_port()
    extra = [*extra_args, *(["--dbfilename", dbfilename] if dbfilename else [])]
    proc = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind",
                             "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(3000):  # loading a copied RDB takes a few seconds
        try:
            redis.Redis.from_url(url).ping()
            break
        except (redis.ConnectionError, redis.BusyLoadingError):
            time.sleep(0.02)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def build_tiny_world(home: Path) -> None:
    from batch.nightly import run_nightly
    from batch.world.generate import build_world

    build_world("tiny", seed=3, out=home / "lake", images=False)
    run_nightly(home / "lake", announce=lambda _m: None)


# ---- in process ------------------------------------------------------------------------------------
def make_state():
    from gpu_core.device import backend
    from gpu_core.registry import Registry
    from gpu_core.settings import get_settings
    from online.state import ServiceState

    state = ServiceState(get_settings(), backend(), Registry())
    state.startup()
    for _ in range(5):  # a loaded machine can make the snapshot read outlast the feature store's timeout
        if state.mirror is not None:
            break
        time.sleep(1.0)
        with contextlib.suppress(Exception):
            state.ensure_snapshot(state.store.current_version())
    return state


def user_ids(state, n: int = 64) -> list[int]:
    keys = list(state.redis.scan_iter(match=f"jk:s:{state.mirror.version}:u:*", count=1000))[:n]
    return [int(k.decode().rsplit(":", 1)[1]) for k in keys]


def bench_pipeline(state, users: list[int], n: int, warmup: int = 30) -> dict[str, Any]:
    from online.api import _ctx
    from online.pipeline import RankingPipeline
    from online.schemas import FeedRequest

    pipe = RankingPipeline(state)
    stages: dict[str, list[float]] = {}
    n_cand, fallbacks = [], {}
    cpu0 = 0.0
    for i in range(warmup + n):
        if i == warmup:
            cpu0 = time.process_time()
        ctx = _ctx(FeedRequest(user_id=users[i % len(users)], limit=20), "feed", "", False, state.settings)
        res = pipe.rank(ctx)
        if i < warmup:
            continue
        for k, v in ctx.timings_ms.items():
            stages.setdefault(k, []).append(v)
        n_cand.append(res.batch.n if res.batch is not None else 0)
        for f in ctx.fallbacks:
            fallbacks[f] = fallbacks.get(f, 0) + 1
    cpu = time.process_time() - cpu0
    out = {k: {"p50_ms": pct(v, 50), "p99_ms": pct(v, 99)} for k, v in stages.items()}
    uh = np.asarray(stages["user"]) + np.asarray(stages["hydration"])
    return {"n": n, "stages": out, "candidates_mean": float(np.mean(n_cand)), "candidates_max": int(max(n_cand)),
            "user_plus_hydration": {"p50_ms": pct(uh, 50), "p99_ms": pct(uh, 99)}, "fallbacks": fallbacks,
            "cpu_ms_per_request": 1000 * cpu / n}


def bench_scoring(state, users: list[int], n: int = 300) -> dict[str, Any]:
    """Scoring stage (assembly + 2 predictions + final score) vs bare inplace_predict on the same matrix."""
    import copy

    from gpu_core.device import to_host
    from online.api import _ctx
    from online.pipeline import RankingPipeline
    from online.schemas import FeedRequest
    from online.stages import ScoringStage

    pipe = RankingPipeline(state)
    ctx = _ctx(FeedRequest(user_id=users[0], limit=20), "feed", "", False, state.settings)
    batch = pipe.run(ctx, None, stop="stock")  # every stage before scoring, as served
    model = state.models.get("production")
    stage = ScoringStage()
    t_stage, t_bare2, t_bare1 = [], [], []
    for _ in range(n):
        b = copy.copy(batch)
        t0 = time.perf_counter()
        stage.run(ctx, b, state)
        t_stage.append((time.perf_counter() - t0) * 1000)
    X = b.X
    it_ctr = (0, model.best_ctr) if model.best_ctr > 0 else (0, 0)
    it_cvr = (0, model.best_cvr) if model.best_cvr > 0 else (0, 0)
    for _ in range(n):
        t0 = time.perf_counter()
        model.ctr.inplace_predict(X, iteration_range=it_ctr)
        t1 = time.perf_counter()
        model.cvr.inplace_predict(X, iteration_range=it_cvr)
        t2 = time.perf_counter()
        t_bare1.append((t1 - t0) * 1000)
        t_bare2.append((t2 - t0) * 1000)
    s50, b50, b1 = pct(t_stage, 50), pct(t_bare2, 50), pct(t_bare1, 50)
    return {"matrix": list(to_host(X).shape), "trees_ctr": model.best_ctr, "trees_cvr": model.best_cvr,
            "stage_p50_ms": s50, "stage_p99_ms": pct(t_stage, 99), "bare_ctr_cvr_p50_ms": b50,
            "bare_ctr_only_p50_ms": b1, "ratio_stage_vs_bare_ctr_cvr": s50 / b50}


def bench_mget(state, n: int = 300) -> dict[str, Any]:
    from gpu_core.feature_store import snap_key, unpack_rows
    from gpu_core.schema import PRODUCT_DAILY

    ids = state.mirror.ids[:1000]
    keys = [snap_key(state.mirror.version, "p", int(i)) for i in ids]
    ts, tu = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        blobs = state.redis.mget(keys)
        t1 = time.perf_counter()
        unpack_rows(blobs, PRODUCT_DAILY)
        tu.append((time.perf_counter() - t1) * 1000)
        ts.append((t1 - t0) * 1000)
    return {"rows": len(keys), "row_bytes": 4 * PRODUCT_DAILY.width, "p50_ms": pct(ts, 50), "p99_ms": pct(ts, 99),
            "unpack_p50_ms": pct(tu, 50)}


# ---- HTTP ------------------------------------------------------------------------------------------
@contextlib.contextmanager
def uvicorn_server(target: str, env: dict[str, str], workers: int = 1):
    port = _free_port()
    if workers > 1:  # the service's own launcher (uvicorn's multi-worker mode lacks TCP_NODELAY)
        cmd = [sys.executable, "-m", "online.server", "--port", str(port), "--workers", str(workers)]
    else:
        cmd = [sys.executable, "-m", "uvicorn", "--factory", target, "--host", "127.0.0.1", "--port", str(port),
               "--log-level", "warning", "--no-access-log"]
    proc = subprocess.Popen(cmd,
                            env={**os.environ, **env}, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    import httpx

    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(900):
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode()[-2000:])
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        SERVERS[base] = proc.pid
        yield base
    finally:
        SERVERS.pop(base, None)
        proc.terminate()
        proc.wait(timeout=10)


SERVERS: dict[str, int] = {}  # base URL -> pid of the server process (its workers are its children)


def server_cpu_s(base: str) -> float:
    """CPU seconds (user + system) of the server at ``base``: the process and its worker children."""
    import psutil

    root = psutil.Process(SERVERS[base])
    total = 0.0
    for p in (root, *root.children(recursive=True)):
        with contextlib.suppress(psutil.NoSuchProcess):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def http_sequential(base: str, path: str, bodies: list[dict], n: int, warmup: int = 30) -> dict[str, Any]:
    import httpx

    lat, codes = [], {}
    cpu0 = 0.0
    with httpx.Client(base_url=base, timeout=10) as c:
        for i in range(warmup + n):
            if i == warmup:
                cpu0 = server_cpu_s(base)
            t0 = time.perf_counter()
            r = c.post(path, json=bodies[i % len(bodies)])
            dt = (time.perf_counter() - t0) * 1000
            if i >= warmup:
                lat.append(dt)
                codes[r.status_code] = codes.get(r.status_code, 0) + 1
    cpu = server_cpu_s(base) - cpu0
    return {"n": n, "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "status": codes,
            "server_cpu_ms_per_request": 1000 * cpu / n}


def http_alternating(base: str, paths: dict[str, tuple[str, list[dict]]], n: int,
                     warmup: int = 30) -> dict[str, dict[str, Any]]:
    """Sequential requests to several endpoints in turn (one of each, then the next of each, ...) on one
    keep-alive connection: a machine loaded by others slows them alike, so their p99s compare. Server CPU
    per request is read around each request."""
    import httpx

    out: dict[str, dict[str, Any]] = {k: {"lat": [], "cpu": [], "status": {}} for k in paths}
    with httpx.Client(base_url=base, timeout=10) as c:
        for i in range(warmup + n):
            for key, (path, bodies) in paths.items():
                cpu0 = server_cpu_s(base)
                t0 = time.perf_counter()
                r = c.post(path, json=bodies[i % len(bodies)])
                dt = (time.perf_counter() - t0) * 1000
                if i >= warmup:
                    o = out[key]
                    o["lat"].append(dt)
                    o["cpu"].append(1000 * (server_cpu_s(base) - cpu0))
                    o["status"][r.status_code] = o["status"].get(r.status_code, 0) + 1
    return {k: {"n": n, "p50_ms": pct(o["lat"], 50), "p90_ms": pct(o["lat"], 90), "p99_ms": pct(o["lat"], 99),
                "status": o["status"], "server_cpu_ms_per_request": float(np.mean(o["cpu"])),
                "order": "alternating"} for k, o in out.items()}


def first_search(base: str, body: dict, warm_n: int = 30) -> dict[str, Any]:
    """The first search after /readyz said ready vs the same search once warm, on one keep-alive connection
    opened before (a client's own set-up is not the service's cold start): client-side ms and the server's
    ``timings_ms.total``; ratios first / warm median."""
    import httpx

    with httpx.Client(base_url=base, timeout=30) as c:
        c.get("/healthz")  # the connection, not a search
        client_ms, server_ms = [], []
        for _ in range(1 + warm_n):
            t0 = time.perf_counter()
            r = c.post("/v1/search", json=body)
            client_ms.append((time.perf_counter() - t0) * 1000)
            server_ms.append(float(r.json().get("timings_ms", {}).get("total", float("nan"))))
    warm_c, warm_s = float(np.median(client_ms[1:])), float(np.median(server_ms[1:]))
    return {"first_search_ms": client_ms[0], "warm_search_p50_ms": warm_c, "first_over_warm": client_ms[0] / warm_c,
            "first_search_server_ms": server_ms[0], "warm_search_server_p50_ms": warm_s,
            "first_over_warm_server": server_ms[0] / warm_s}


def route_histogram(bases: list[str], route: str) -> dict[float, float]:
    """The workers' own latency histogram of ``route`` (``jaikod_http_request_duration_seconds``: admitted
    requests — the edge's 429s never reach it — from the edge to the last byte sent), summed over the
    workers' /metrics at ``bases``: cumulative count by upper bound in seconds."""
    import httpx

    out: dict[float, float] = {}
    for base in bases:
        for line in httpx.get(f"{base}/metrics", timeout=10).text.splitlines():
            if line.startswith("jaikod_http_request_duration_seconds_bucket{") and f'route="{route}"' in line:
                le = line.split('le="', 1)[1].split('"', 1)[0]
                b = float("inf") if le == "+Inf" else float(le)
                out[b] = out.get(b, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def histogram_quantile_ms(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """Quantile ``q`` (ms) of the observations between two scrapes, interpolated in its bucket as
    Prometheus' ``histogram_quantile`` does."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return float("nan")
    rank, lo, below = q * counts[-1], 0.0, 0.0
    for b, c in zip(bounds, counts, strict=True):
        if c >= rank:
            if b == float("inf"):
                return lo * 1000
            return (lo + (b - lo) * (rank - below) / max(c - below, 1e-12)) * 1000
        lo, below = b, c
    return float("nan")


WRK_LUA = """
local bodies = {BODIES}
local i = 0
request = function()
  i = i + 1
  return wrk.format("POST", "{PATH}", {["Content-Type"] = "application/json"}, bodies[(i % #bodies) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON{"requests":%d,"duration_us":%d,"socket_errors":%d,"non2xx":%d,' ..
    '"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\\n', summary.requests, summary.duration,
    e.connect + e.read + e.write, e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max))
end
"""


def wrk_sweep(base: str, path: str, bodies: list[dict], conns: tuple[int, ...], duration_s: float,
              tmp: Path, metrics: list[str] | None = None) -> list[dict[str, Any]]:
    """wrk (one thread, ``c`` keep-alive connections, fixed duration) per concurrency level; server CPU too."""
    import orjson

    script = tmp / f"wrk_{abs(hash(path))}.lua"
    lua_bodies = "{" + ",".join(json.dumps(orjson.dumps(b).decode()) for b in bodies) + "}"
    script.write_text(WRK_LUA.replace("{BODIES}", lua_bodies).replace("{PATH}", path))
    rows = []
    for c in conns:
        h0 = route_histogram(metrics, path) if metrics else None
        cpu0 = server_cpu_s(base)
        out = subprocess.run([shutil.which("wrk") or "wrk", "-t1", f"-c{c}", f"-d{duration_s:g}s", "--timeout", "5s",
                              "-s", str(script), base], capture_output=True, text=True, timeout=duration_s + 60)
        cpu = server_cpu_s(base) - cpu0
        line = next((x for x in out.stdout.splitlines() if x.startswith("WRKJSON")), None)
        if line is None:
            raise RuntimeError(f"wrk gave no summary: {out.stdout[-500:]} {out.stderr[-500:]}")
        w = json.loads(line.removeprefix("WRKJSON"))
        secs = w["duration_us"] / 1e6
        rows.append({"concurrency": c, "requests": w["requests"], "rps": w["requests"] / secs,
                     "ok_rps": (w["requests"] - w["non2xx"]) / secs, "shed_rate": w["non2xx"] / max(1, w["requests"]),
                     "p50_ms": w["p50_us"] / 1000, "p90_ms": w["p90_us"] / 1000, "p99_ms": w["p99_us"] / 1000,
                     "max_ms": w["max_us"] / 1000, "non2xx": w["non2xx"], "socket_errors": w["socket_errors"],
                     "timeouts": w["timeouts"], "server_cpu_ms_per_request": 1000 * cpu / max(1, w["requests"]),
                     "tool": "wrk 4 (-t1, keep-alive)"})
        if metrics:  # p50/p99 of the admitted requests alone, from the workers' own histograms
            h1 = route_histogram(metrics, path)
            rows[-1]["admitted_p50_ms"] = histogram_quantile_ms(h0, h1, 0.5)
            rows[-1]["admitted_p99_ms"] = histogram_quantile_ms(h0, h1, 0.99)
    return rows


async def _load(base: str, path: str, bodies: list[dict], conc: int, max_requests: int, max_s: float):
    import httpx

    lat: list[float] = []
    codes: dict[int, int] = {}
    sent = 0
    deadline = time.perf_counter() + max_s
    limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
    async with httpx.AsyncClient(base_url=base, timeout=10, limits=limits) as c:
        async def worker(w: int) -> None:
            nonlocal sent
            while sent < max_requests and time.perf_counter() < deadline:
                sent += 1
                t0 = time.perf_counter()
                try:
                    r = await c.post(path, json=bodies[(sent + w) % len(bodies)])
                    code: int | str = r.status_code
                except httpx.TransportError as exc:  # counted, never hidden
                    code = type(exc).__name__
                lat.append((time.perf_counter() - t0) * 1000)
                codes[code] = codes.get(code, 0) + 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(conc)))
        wall = time.perf_counter() - t0
    return {"concurrency": conc, "requests": len(lat), "rps": len(lat) / wall, "p50_ms": pct(lat, 50),
            "p99_ms": pct(lat, 99), "status": codes}


def sweep(base: str, path: str, bodies: list[dict], max_requests: int, max_s: float) -> list[dict[str, Any]]:
    return [asyncio.run(_load(base, path, bodies, c, max_requests, max_s)) for c in CONCURRENCY]


def _served(r: dict[str, Any]) -> float:
    """Requests/s answered 2xx: what the service ranked, not the 429s its admission limit shed (cheap, and
    paced by up to ``shed_delay_max_ms``, which is what the p99 of an overloaded level shows)."""
    return r.get("ok_rps", r["rps"])


def knee(rows: list[dict[str, Any]]) -> int:
    """Smallest concurrency reaching 90% of the best served (2xx) throughput (more clients only add latency
    or shed load)."""
    best = max(_served(r) for r in rows)
    return next(r["concurrency"] for r in rows if _served(r) >= 0.9 * best)


def knee_point(rows: list[dict[str, Any]]) -> dict[str, Any]:
    k = knee(rows)
    r = next(r for r in rows if r["concurrency"] == k)
    out = {"concurrency": k, "rps": r["rps"], "ok_rps": _served(r), "shed_rate": r.get("shed_rate", 0.0),
           "p99_ms": r["p99_ms"]}
    if "admitted_p99_ms" in r:
        out["admitted_p99_ms"] = r["admitted_p99_ms"]
    return out


# ---- report ----------------------------------------------------------------------------------------
def _sweeps(h: dict[str, Any]) -> list[str]:
    return [k.removeprefix("sweep_") for k in h if k.startswith("sweep_")]


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
    st = result["pipeline"]["stages"]
    names = [k for k in ("user", "retrieval", "filters", "hydration", "scoring", "rerank", "polish", "total") if k in st]
    x = np.arange(len(names))
    a1.bar(x - 0.2, [st[k]["p50_ms"] for k in names], 0.4, label="p50")
    a1.bar(x + 0.2, [st[k]["p99_ms"] for k in names], 0.4, label="p99")
    a1.set_xticks(x, names, rotation=30)
    a1.set_ylabel("ms")
    a1.axhline(8, ls="--", c="gray", lw=1, label="target p99 8 ms (total)")
    a1.set_title(f"in-process pipeline, {result['pipeline']['candidates_mean']:.0f} candidates scored (mean)")
    a1.legend(fontsize=8)
    h = result["http"]
    for key in _sweeps(h):
        rows = h[f"sweep_{key}"]
        y = [r.get("admitted_p99_ms", r["p99_ms"]) for r in rows]  # admitted requests' p99 where measured
        line, = a2.plot([_served(r) for r in rows], y, "-o", label=key.replace("_", " "))
        k = h[f"knee_{key}"]
        kr = next(r for r in rows if r["concurrency"] == k["concurrency"])
        a2.plot([_served(kr)], [kr.get("admitted_p99_ms", kr["p99_ms"])], "*", ms=16, c=line.get_color())
        for r, yr in zip(rows, y, strict=True):
            shed = f" ({100 * r['shed_rate']:.0f}% shed)" if r.get("shed_rate") else ""
            a2.annotate(f"{r['concurrency']}{shed}", (_served(r), yr), fontsize=6, xytext=(2, 2),
                        textcoords="offset points")
    a2.set_yscale("log")
    a2.set_xlabel("served (2xx) requests/s (wrk, labels: connections, share shed as 429)")
    a2.set_ylabel("p99 ms of admitted requests (server histogram; bare: wrk) (log)")
    a2.set_title("RPS vs p99, knee starred (load tool on the same 2 cores)")
    a2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_table(result: dict[str, Any], world: str = "") -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"online ranking service — {world}")
    for col in ("measure", "p50 ms", "p99 ms", "other", "issue target"):
        t.add_column(col)
    p = result["pipeline"]
    for k, v in p["stages"].items():
        t.add_row(f"pipeline: {k}", f"{v['p50_ms']:.3f}", f"{v['p99_ms']:.3f}", "",
                  "p99 <= 8" if k == "total" else "")
    t.add_row("pipeline CPU / request", "", "", f"{p['cpu_ms_per_request']:.2f} ms", "<= 3 ms at 1,000")
    uh = p["user_plus_hydration"]
    t.add_row("hydration (user + product + context)", f"{uh['p50_ms']:.3f}", f"{uh['p99_ms']:.3f}",
              f"{p['candidates_mean']:.0f} cand.", "")
    s = result["scoring"]
    t.add_row("scoring stage", f"{s['stage_p50_ms']:.3f}", f"{s['stage_p99_ms']:.3f}",
              f"ratio {s['ratio_stage_vs_bare_ctr_cvr']:.2f}x", "<= 1.1x")
    t.add_row("bare inplace_predict pCTR+pCVR", f"{s['bare_ctr_cvr_p50_ms']:.3f}", "", f"matrix {s['matrix']}", "")
    m = result["redis_mget"]
    t.add_row("Redis MGET 1,000 rows", f"{m['p50_ms']:.3f}", f"{m['p99_ms']:.3f}", f"{m['row_bytes']} B/row", "")
    h = result["http"]
    for key in ("feed", "bare"):
        q = h[f"{key}_sequential"]
        t.add_row(f"HTTP {key} sequential", f"{q['p50_ms']:.3f}", f"{q['p99_ms']:.3f}",
                  f"server CPU {q['server_cpu_ms_per_request']:.2f} ms/req", "p99 <= 8" if key == "feed" else "")
    for key in _sweeps(h):
        for r in h[f"sweep_{key}"]:
            t.add_row(f"HTTP {key.replace('_', ' ')} c={r['concurrency']}", f"{r['p50_ms']:.2f}",
                      f"{r['p99_ms']:.2f}", f"{_served(r):.0f} served rps ({100 * r.get('shed_rate', 0):.0f}% shed"
                      + (f", admitted p99 {r['admitted_p99_ms']:.1f}" if "admitted_p99_ms" in r else "") + "), "
                      f"CPU {r['server_cpu_ms_per_request']:.2f} ms/req", "")
        k = h[f"knee_{key}"]
        t.add_row(f"knee {key.replace('_', ' ')}", "", f"{k.get('admitted_p99_ms', k['p99_ms']):.2f}",
                  f"c={k['concurrency']}: {k.get('ok_rps', k['rps']):.0f} served rps",
                  ">= 2x today's" if key.startswith("feed_") else "")
    Console().print(t)


def print_search_vs_feed(result: dict[str, Any], world: str = "") -> None:
    from rich.console import Console
    from rich.table import Table

    h = result["http"]
    t = Table(title=f"HTTP /v1/search vs /v1/feed, alternating sequential requests — {world}")
    for col in ("endpoint", "n", "p50 ms", "p90 ms", "p99 ms", "server CPU ms/req"):
        t.add_column(col)
    for key in ("feed", "search"):
        q = h[f"{key}_sequential"]
        t.add_row(key, str(q["n"]), f"{q['p50_ms']:.2f}", f"{q['p90_ms']:.2f}", f"{q['p99_ms']:.2f}",
                  f"{q['server_cpu_ms_per_request']:.2f}")
    t.add_row("search / feed", "", f"{h['search_p50_over_feed_p50']:.2f}x", "", f"{h['search_p99_over_feed_p99']:.2f}x",
              "goal p99 <= 1.2x")
    t.add_row("first search after ready", "", f"{h['first_search_ms']:.1f}", "", "",
              f"server {h['first_search_server_ms']:.2f}")
    t.add_row("same search warm (median)", "", f"{h['warm_search_p50_ms']:.1f}", "", "",
              f"server {h['warm_search_server_p50_ms']:.2f}")
    t.add_row("first / warm", "", f"{h['first_over_warm']:.2f}x", "", "",
              f"server {h['first_over_warm_server']:.2f}x (goal <= 2x)")
    Console().print(t)


def open_world(stack: contextlib.ExitStack, home: Path | None, prefix: str) -> tuple[Path, str]:
    """(temp dir, world description): ``home``'s world (read only) or a tiny world built into a private
    Redis; settings and backend reset to it (CPU unless JAIKOD_DEVICE says otherwise)."""
    from gpu_core.device import reset_backend
    from gpu_core.settings import reset_settings

    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=prefix)))
    if home is None:
        url = stack.enter_context(private_redis(tmp))
        os.environ.update(JAIKOD_HOME=str(tmp / "home"), JAIKOD_REDIS_URL=url)
        reset_settings()
        t0 = time.perf_counter()
        build_tiny_world(tmp / "home")
        world = f"tiny (seed 3, built by this benchmark in {time.perf_counter() - t0:.0f} s)"
    else:
        os.environ["JAIKOD_HOME"] = str(home.resolve())
        world = f"{home} (read only)"
    os.environ.setdefault("JAIKOD_DEVICE", "cpu")
    reset_settings()
    reset_backend()
    return tmp, world


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, help="an existing world's JAIKOD_HOME (default: build a tiny one)")
    ap.add_argument("--n", type=int, default=400, help="in-process requests")
    ap.add_argument("--http-n", type=int, default=300, help="sequential HTTP requests")
    ap.add_argument("--conns", default=",".join(map(str, CONCURRENCY)), help="wrk connections per level")
    ap.add_argument("--duration-s", type=float, default=4.0, help="seconds of wrk per level")
    ap.add_argument("--max-requests", type=int, default=600, help="(no wrk) requests per level")
    ap.add_argument("--max-s", type=float, default=8.0, help="(no wrk) seconds per level at most")
    ap.add_argument("--out", type=Path, default=LATEST)
    ap.add_argument("--workers", type=int, default=2, help="uvicorn workers for the second feed sweep")
    ap.add_argument("--search-vs-feed", action="store_true",
                    help="only the HTTP search vs feed comparison (no in-process, sweep or bare-app parts)")
    args = ap.parse_args(argv)
    conns = tuple(int(c) for c in args.conns.split(","))

    with contextlib.ExitStack() as stack:
        tmp, world = open_world(stack, args.home, "jk-bench-online-")
        state = make_state()
        users = user_ids(state)
        result: dict[str, Any] = {"n_products": len(state.mirror.ids),
                                  "model_version": state.models.get("production").label,
                                  "gpu": "GPU: not measured"}
        if not args.search_vs_feed:
            result["pipeline"] = bench_pipeline(state, users, args.n)
            result["scoring"] = bench_scoring(state, users)
            result["redis_mget"] = bench_mget(state)
        env = {k: os.environ[k] for k in ("JAIKOD_HOME", "JAIKOD_REDIS_URL", "JAIKOD_DEVICE") if k in os.environ}
        env["JAIKOD_REPLAY_SAMPLE_RATE"] = "0"
        env["PYTHONPATH"] = os.pathsep.join(x for x in (str(ROOT), os.environ.get("PYTHONPATH")) if x)
        bodies = [{"user_id": u, "limit": 20} for u in users]
        words = ("iphone มือสอง", "ไอโฟน", "กล้อง", "โซฟา ikea", "sony camera", "รองเท้า nike", "iphnoe", "zzzzqqq")
        search_bodies = [{**b, "query": words[i % len(words)]} for i, b in enumerate(bodies)]
        have_wrk = shutil.which("wrk") is not None

        def load(base: str, path: str, metrics: list[str] | None = None) -> list[dict[str, Any]]:
            if have_wrk:
                return wrk_sweep(base, path, bodies, conns, args.duration_s, tmp, metrics)
            return sweep(base, path, bodies, args.max_requests, args.max_s)

        http: dict[str, Any] = {"load_tool": "wrk" if have_wrk else "httpx asyncio (wrk not installed)"}
        if "pipeline" in result:
            http["candidates_scored_mean"] = result["pipeline"]["candidates_mean"]
        with uvicorn_server("online.app:create_app", env) as base:
            # the first search after /readyz said ready (the cold start), then both endpoints in turn
            http.update(first_search(base, search_bodies[0]))
            pair = http_alternating(base, {"feed": ("/v1/feed", bodies), "search": ("/v1/search", search_bodies)},
                                    args.http_n)
            http["feed_sequential"], http["search_sequential"] = pair["feed"], pair["search"]
            http["search_p99_over_feed_p99"] = http["search_sequential"]["p99_ms"] / http["feed_sequential"]["p99_ms"]
            http["search_p50_over_feed_p50"] = http["search_sequential"]["p50_ms"] / http["feed_sequential"]["p50_ms"]
            if not args.search_vs_feed:
                http["sweep_feed_1_worker"] = load(base, "/v1/feed", [base])
        if args.search_vs_feed:
            result["http"] = http
            state.stop()
            write_result(args.out / "online_search_vs_feed.json", result, world=world)
            print_search_vs_feed(result, world)
            return result
        if args.workers > 1:  # the same sweep with one uvicorn worker per core
            mport = _free_port()  # worker i serves its own /metrics on mport + i
            with uvicorn_server("online.app:create_app", {**env, "JAIKOD_METRICS_PORT": str(mport)},
                                workers=args.workers) as base:
                http[f"sweep_feed_{args.workers}_workers"] = load(
                    base, "/v1/feed", [f"http://127.0.0.1:{mport + i}" for i in range(args.workers)])
        with uvicorn_server("bench._bare_app:create_app", env) as base:
            http["bare_sequential"] = http_sequential(base, "/echo", bodies, args.http_n)
            http["sweep_bare_1_worker"] = load(base, "/echo")
        for key in _sweeps(http):
            http[f"knee_{key}"] = knee_point(http[f"sweep_{key}"])
        result["http"] = http
        state.stop()

    write_result(args.out / "online.json", result, world=world)
    plot(result, args.out / "online.png")
    print_table(result, world)
    return result


if __name__ == "__main__":
    main()
