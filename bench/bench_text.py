"""Benchmark: ``POST /v1/analyze-text`` over real HTTP (uvicorn, one worker) pinned to 2 cores.

python -m bench.bench_text [--requests 600] [--concurrency 4] [--cores 0,1] [--results bench/results]

Uses the heads under ``<artifacts_dir>/text`` (trains them first if missing). The server runs in a
subprocess pinned with ``os.sched_setaffinity`` to ``--cores``; the client (keep-alive HTTP, threads)
shares the machine. Texts come from the shipped labelled set (Thai, English, mixed; listing and chat).
Prints a rich table and writes ``<results>/text.json``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RESULTS = ROOT / "bench" / "results"


def make_app():
    """uvicorn factory: the text router on a bare app (the bench does not need the whole service)."""
    from fastapi import FastAPI

    from online.services.text import TextService, text_router

    app = FastAPI()
    app.include_router(text_router(TextService()))
    return app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ensure_model() -> Path:
    from gpu_core.settings import get_settings

    d = get_settings().artifacts_dir / "text"
    if not (d / "heads.npz").is_file():
        from batch.text_train import train_heads

        train_heads(out_dir=d)
    return d


def _wait_ready(port: int, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError("server exited during start-up")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            c.request("POST", "/v1/analyze-text", body=json.dumps({"text": "warm up", "context": "chat"}),
                      headers={"Content-Type": "application/json"})
            if c.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("server not ready")


def run(n_requests: int, concurrency: int, cores: list[int]) -> dict[str, Any]:
    from batch.text_data import load_dataset

    model_dir = _ensure_model()
    rows = load_dataset()
    texts = [(r["text"], r["context"]) for r in rows]
    port = _free_port()
    env = {**os.environ, "JAIKOD_TEXT_MODEL_DIR": str(model_dir.resolve()), "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "bench.bench_text:make_app", "--port", str(port),
           "--log-level", "warning", "--workers", "1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, preexec_fn=lambda: os.sched_setaffinity(0, cores))
    try:
        t_start = time.perf_counter()
        _wait_ready(port, proc)
        startup_s = time.perf_counter() - t_start

        def worker(idx: list[int]) -> list[float]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            lat = []
            for i in idx:
                text, context = texts[i % len(texts)]
                body = json.dumps({"text": text, "context": context})
                t = time.perf_counter()
                conn.request("POST", "/v1/analyze-text", body=body, headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                lat.append(time.perf_counter() - t)
                if r.status != 200:
                    raise RuntimeError(f"status {r.status}")
            return lat

        chunks = [list(range(k, n_requests, concurrency)) for k in range(concurrency)]
        t0 = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as ex:
            lats = [x for part in ex.map(worker, chunks) for x in part]
        wall = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    ms = np.array(lats) * 1000
    return {
        "endpoint": "POST /v1/analyze-text",
        "requests": n_requests,
        "concurrency": concurrency,
        "server_cores": cores,
        "server_workers": 1,
        "requests_per_second": round(n_requests / wall, 1),
        "latency_ms": {"p50": round(float(np.percentile(ms, 50)), 2), "p90": round(float(np.percentile(ms, 90)), 2),
                       "p99": round(float(np.percentile(ms, 99)), 2), "max": round(float(ms.max()), 2),
                       "mean": round(float(ms.mean()), 2)},
        "server_startup_s": round(startup_s, 2),
        "wall_s": round(wall, 2),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
    }


def print_result(result: dict[str, Any], console: Console | None = None) -> None:
    table = Table(title=f"analyze-text over HTTP, server on cores {result['server_cores']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("requests", f"{result['requests']:,}")
    table.add_row("client concurrency", str(result["concurrency"]))
    table.add_row("requests / s", f"{result['requests_per_second']:,.1f}")
    for k, v in result["latency_ms"].items():
        table.add_row(f"latency {k} (ms)", f"{v:.2f}")
    table.add_row("server start-up (s)", f"{result['server_startup_s']:.2f}")
    (console or Console()).print(table)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=600)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--cores", default="0,1", help="CPU ids the server is pinned to")
    ap.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    args = ap.parse_args(argv)
    cores = [int(c) for c in args.cores.split(",") if c.strip()]
    cores = [c for c in cores if c in os.sched_getaffinity(0)] or sorted(os.sched_getaffinity(0))[:2]
    result = run(args.requests, args.concurrency, cores)
    print_result(result)
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / "text.json"
    path.write_text(json.dumps(result, indent=2))
    Console().print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
