"""Benchmark: the streaming loop on this machine (2 cores) — events/s the event API accepts over HTTP,
events/s one stream processor applies + archives, and end-to-end freshness (event API ack -> the
product's real-time feature visible in Redis to the ranking service) p50/p99.

python -m bench.bench_stream [--events 100000] [--results bench/results/latest]

Runs a private redis-server (appendonly yes, appendfsync everysec: the production setting of
scripts/ensure_redis.sh), the event API under uvicorn (1 worker) and ``python -m online.stream`` as
real processes. Writes ``<results>/stream.json`` and ``stream.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench._meta import LATEST, write_result
from engines.realtime import read_product_rt

ROOT = Path(__file__).resolve().parents[1]


def events_app():
    """The event API alone (what a dedicated ingest deployment would run)."""
    from fastapi import FastAPI

    from online.errors import install_error_handlers
    from online.events import router
    from online.metrics import Metrics

    app = FastAPI()
    app.state.metrics = Metrics()
    install_error_handlers(app)
    app.include_router(router)
    return app


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float = 30.0) -> None:
    import httpx

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            httpx.get(url, timeout=0.5)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def start_redis(port: int, data_dir: Path):
    """A private redis-server with the production persistence (appendonly, fsync every second) and a client
    once it answers."""
    import redis

    server = subprocess.Popen([shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(data_dir)],
                              stdout=subprocess.DEVNULL)
    r = redis.Redis(host="127.0.0.1", port=port)
    for _ in range(100):
        try:
            r.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    return server, r


def _events(n: int, start: int, now: int, n_products: int = 5000) -> list[dict]:
    rng = np.random.default_rng(start)
    types = np.where(rng.random(n) < 0.2, "click", "impression")
    pids = rng.integers(0, n_products, n)
    uids = rng.integers(0, 20000, n)
    return [{"event_id": f"b{start + i}", "event_type": str(types[i]), "ts": now, "user_id": int(uids[i]),
             "product_id": int(pids[i]), "model_version": "jaikod-ranker/1", "position": i % 20}
            for i in range(n)]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000, help="events for the processor throughput run")
    ap.add_argument("--http-seconds", type=float, default=8.0)
    ap.add_argument("--freshness-samples", type=int, default=300)
    ap.add_argument("--results", type=Path, default=LATEST)
    args = ap.parse_args(argv)
    import httpx

    tmp = Path(tempfile.mkdtemp(prefix="jaikod-bench-stream-"))
    rport, aport = _port(), _port()
    url = f"redis://127.0.0.1:{rport}/0"
    env = {**os.environ, "JAIKOD_HOME": str(tmp / "home"), "JAIKOD_REDIS_URL": url, "PYTHONPATH": str(ROOT)}
    os.environ.update({k: env[k] for k in ("JAIKOD_HOME", "JAIKOD_REDIS_URL")})
    from gpu_core.settings import get_settings, reset_settings

    reset_settings()
    procs: list[subprocess.Popen] = []
    result: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                "redis": "appendonly yes, appendfsync everysec"}}
    try:
        server, r = start_redis(rport, tmp)
        procs.append(server)
        from online.bus import RedisStreamsBus
        from online.stream import StreamProcessor

        # 1. stream processor throughput (in-process, one consumer): pre-filled stream, drain it
        bus = RedisStreamsBus(r)
        now = int(time.time() * 1000)
        for i in range(0, args.events, 5000):
            bus.publish(_events(min(5000, args.events - i), i, now))
        proc = StreamProcessor(r, tmp / "lake", "bench")
        t0 = time.perf_counter()
        out = proc.run(max_idle_s=0.3)
        dt_proc = time.perf_counter() - t0 - 0.3
        result["processor"] = {"events": out["applied"], "archived": out["archived"], "seconds": round(dt_proc, 3),
                               "events_per_s": round(out["applied"] / dt_proc)}
        r.flushdb()

        # 2. event API throughput over HTTP (uvicorn, 1 worker; 2 client threads, batches of 100 and of 1)
        procs.append(subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "bench.bench_stream:events_app",
                                       "--port", str(aport), "--log-level", "warning", "--no-access-log"],
                                      cwd=ROOT, env=env))
        base = f"http://127.0.0.1:{aport}"
        _wait_http(base + "/docs")
        for batch in (100, 1):
            counter = [0]
            lat: list[float] = []
            stop = time.monotonic() + args.http_seconds / 2

            def load(tid: int, batch: int = batch, counter: list = counter, lat: list = lat,
                     stop: float = stop) -> None:
                with httpx.Client(base_url=base, timeout=10) as c:
                    k = 0
                    while time.monotonic() < stop:
                        evs = _events(batch, (tid * 10**8) + k * batch + batch * 10**7, int(time.time() * 1000))
                        t = time.perf_counter()
                        resp = c.post("/v1/events", json={"events": evs})
                        lat.append(time.perf_counter() - t)
                        assert resp.status_code == 200, resp.text
                        counter[0] += resp.json()["accepted"]
                        k += 1

            threads = [threading.Thread(target=load, args=(t,)) for t in range(2)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            el = time.perf_counter() - t0
            result[f"event_api_batch{batch}"] = {
                "events": counter[0], "seconds": round(el, 3), "events_per_s": round(counter[0] / el),
                "requests_per_s": round(len(lat) / el), "p50_ms": round(float(np.percentile(lat, 50)) * 1e3, 2),
                "p99_ms": round(float(np.percentile(lat, 99)) * 1e3, 2)}
        r.flushdb()

        # 3. freshness: POST one click -> ack -> poll Redis until the product's views_last_hour moves
        procs.append(subprocess.Popen([sys.executable, "-m", "online.stream", "--consumer", "fresh", "--lake",
                                       str(tmp / "lake2")], cwd=ROOT, env=env, stderr=subprocess.DEVNULL))
        time.sleep(2.0)
        from gpu_core.feature_store import OnlineStore

        store = OnlineStore(r)
        fresh = []
        with httpx.Client(base_url=base, timeout=10) as c:
            for i in range(args.freshness_samples):
                pid = 900_000 + i
                ev = {"event_id": f"f{i}", "event_type": "click", "ts": int(time.time() * 1000), "user_id": 1,
                      "product_id": pid}
                resp = c.post("/v1/events", json={"events": [ev]})
                t_ack = time.perf_counter()
                assert resp.status_code == 200
                while read_product_rt(store, [pid], time.time())["views_last_hour"][0] < 1:
                    if time.perf_counter() - t_ack > 5:
                        raise RuntimeError("event not visible within 5 s")
                    time.sleep(0.0005)
                fresh.append(time.perf_counter() - t_ack)
        f = np.array(fresh) * 1000
        result["freshness_ms"] = {"samples": len(f), "p50": round(float(np.percentile(f, 50)), 2),
                                  "p99": round(float(np.percentile(f, 99)), 2), "max": round(float(f.max()), 2),
                                  "within_1s": float((f <= 1000).mean())}
        result["settings"] = {k: getattr(get_settings(), k) for k in ("stream_batch", "stream_block_ms",
                                                                      "stream_archive_events")}
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    args.results.mkdir(parents=True, exist_ok=True)
    write_result(args.results / "stream.json", result, world="events generated by this benchmark")
    _plot(result, fresh, args.results / "stream.png")
    print(json.dumps(result, indent=2))
    return result


def _plot(result: dict, fresh: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    names = ["event API\n(batch 100)", "event API\n(batch 1)", "stream\nprocessor"]
    vals = [result["event_api_batch100"]["events_per_s"], result["event_api_batch1"]["events_per_s"],
            result["processor"]["events_per_s"]]
    a.bar(names, vals, color=["#4c72b0", "#8da0cb", "#55a868"])
    a.set_ylabel("events / s")
    a.set_title("throughput (2 cores)")
    for i, v in enumerate(vals):
        a.text(i, v, f"{v:,}", ha="center", va="bottom")
    ms = np.sort(np.array(fresh) * 1000)
    b.plot(ms, np.arange(1, len(ms) + 1) / len(ms))
    b.axvline(result["freshness_ms"]["p50"], ls="--", c="gray", label=f"p50 {result['freshness_ms']['p50']} ms")
    b.axvline(result["freshness_ms"]["p99"], ls=":", c="red", label=f"p99 {result['freshness_ms']['p99']} ms")
    b.set_xlabel("ack -> feature visible (ms)")
    b.set_ylabel("CDF")
    b.set_title("end-to-end freshness")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
