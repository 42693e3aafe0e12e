"""The full stack beside the embedded one (issue 17.5 and its goal), not a test: one world served twice at
the same time -- `jaikod serve` on the embedded backends (Redis Streams, in-process keyword index, faiss)
and on the seed's engines (Kafka, OpenSearch, milvus-lite; `jaikod stack prepare` publishes the world into
them) -- with the same requests sent to both in alternation: /v1/feed, /v1/search and /v1/events latency
p50/p95/p99 per stack and the full/embedded ratio (goal: feed p99 <= 1.5x); each engine's start-up seconds
and resident memory, and each API process's.

    python -m bench.bench_stack                      # builds a tiny world first (~2 min)
    python -m bench.bench_stack --home var --requests 600   # a built home (copied, never changed)

Writes bench/results/latest/stack.json + .png.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench._meta import LATEST, print_rows, tree_rss_mb, write_result

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, str(ROOT / "jaikod_cli.py")]
QUERIES = ["iphone", "ไอโฟน", "กล้อง", "sony camera", "รองเท้า nike", "โซฟา ikea", "samsung", "จักรยาน", "ps5",
           "nintendo switch", "lego", "guitar"]


def _run(args: list[str], env: dict, timeout: float = 1800) -> str:
    out = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(args[1:])} failed:\n{out.stderr[-3000:]}")
    return out.stderr


def _serve(env: dict, port: int, log: Path) -> tuple[subprocess.Popen, float]:
    import httpx

    t0 = time.perf_counter()
    proc = subprocess.Popen([*CLI, "serve", "--port", str(port), "--workers", "1"], env=env, cwd=ROOT,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"jaikod serve exited {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc, time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"jaikod serve on {port} not ready in 300 s: {log.read_text()[-3000:]}")


def _pcts(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"n": len(a), "p50": round(float(np.percentile(a, 50)), 2), "p95": round(float(np.percentile(a, 95)), 2),
            "p99": round(float(np.percentile(a, 99)), 2), "mean": round(float(a.mean()), 2)}


def drive(bases: dict[str, str], users: list[int], n: int, warmup: int = 40) -> dict[str, dict[str, list[float]]]:
    """The same request sequence to every stack, alternating which goes first; client-side ms per call."""
    import httpx

    clients = {k: httpx.Client(base_url=b, timeout=30) for k, b in bases.items()}
    lat: dict[str, dict[str, list[float]]] = {k: {"feed": [], "search": [], "events": []} for k in bases}
    errors: dict[str, int] = dict.fromkeys(bases, 0)
    rng = np.random.default_rng(0)
    order = list(bases)
    now = int(time.time() * 1000)
    try:
        for i in range(warmup + n):
            uid = int(users[i % len(users)])
            kind = ("feed", "feed", "search", "events")[int(rng.integers(0, 4))]
            q = QUERIES[int(rng.integers(0, len(QUERIES)))]
            pid = int(rng.integers(1, 1000))
            order.reverse()
            for k in order:
                t0 = time.perf_counter()
                if kind == "feed":
                    r = clients[k].post("/v1/feed", json={"user_id": uid})
                elif kind == "search":
                    r = clients[k].post("/v1/search", json={"user_id": uid, "query": q})
                else:
                    r = clients[k].post("/v1/events", json={"events": [{
                        "event_id": f"bench-stack-{k}-{i}", "event_type": "click", "user_id": uid,
                        "product_id": pid, "ts": now + i}]})
                ms = (time.perf_counter() - t0) * 1000
                if r.status_code != 200:
                    errors[k] += 1
                elif i >= warmup:
                    lat[k][kind].append(ms)
    finally:
        for c in clients.values():
            c.close()
    lat["_errors"] = errors  # type: ignore[assignment]
    return lat


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, default=None, help="a built home to copy (else a tiny world is built)")
    ap.add_argument("--requests", type=int, default=600, help="request rounds (each sent to both stacks)")
    ap.add_argument("--out", type=Path, default=LATEST)
    args = ap.parse_args(argv)
    import pandas as pd

    from deploy.engines import KafkaBroker, free_port
    from deploy.milvus_lite import MilvusLiteServer
    from deploy.opensearch import OpenSearchNode

    tmp = Path(tempfile.mkdtemp(prefix="jaikod-bench-stack-"))
    rport = free_port()
    redis_proc = subprocess.Popen([shutil.which("redis-server"), "--port", str(rport), "--bind", "127.0.0.1",
                                   "--save", "", "--appendonly", "no", "--dir", str(tmp)], stdout=subprocess.DEVNULL)
    procs: list[subprocess.Popen] = []
    engines: dict = {}
    broker = KafkaBroker(tmp / "kafka", heap_mb=384)
    node = OpenSearchNode(tmp / "opensearch")
    milvus = MilvusLiteServer(tmp / "milvus")
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("JAIKOD_")}
    base_env.update(JAIKOD_DEVICE="cpu", JAIKOD_LOG_REQUESTS="false", JAIKOD_REPLAY_SAMPLE_RATE="0")
    try:
        emb_home = tmp / "embedded"
        emb = {**base_env, "JAIKOD_HOME": str(emb_home), "JAIKOD_REDIS_URL": f"redis://127.0.0.1:{rport}/0",
               "JAIKOD_STACK": "embedded"}
        if args.home is None:
            world = "tiny (seed 3)"
            _run([*CLI, "world", "build", "--size", "tiny", "--seed", "3", "--out", str(emb_home / "lake")], emb)
            _run([*CLI, "batch", "nightly", "--lake", str(emb_home / "lake")], emb)
        else:
            world = f"copy of {args.home}"
            shutil.copytree(args.home, emb_home, symlinks=True, ignore=shutil.ignore_patterns("redis", "kafka",
                                                                                               "opensearch", "milvus"))
            _run([*CLI, "batch", "materialize", "--lake", str(emb_home / "lake")], emb)
        for name, start, rss in (("kafka", lambda: broker.start().wait_ready(180), lambda: broker.rss_bytes() / 2**20),
                                 ("opensearch", node.start, node.rss_mb),
                                 ("milvus-lite", milvus.start, milvus.rss_mb)):
            t0 = time.perf_counter()
            start()
            engines[name] = {"start_s": round(time.perf_counter() - t0, 1)}
            engines[name]["rss_mb_idle"] = round(rss(), 1)
        full_home = tmp / "full"
        shutil.copytree(emb_home, full_home, symlinks=True, ignore=shutil.ignore_patterns("lake"))
        (full_home / "lake").symlink_to(emb_home / "lake", target_is_directory=True)
        full = {**base_env, "JAIKOD_HOME": str(full_home), "JAIKOD_REDIS_URL": f"redis://127.0.0.1:{rport}/1",
                "JAIKOD_STACK": "full", "JAIKOD_KAFKA_BOOTSTRAP": broker.bootstrap, "JAIKOD_OPENSEARCH_URL": node.url,
                "JAIKOD_MILVUS_URI": milvus.uri}
        t0 = time.perf_counter()
        _run([*CLI, "stack", "prepare"], full)
        prepare_s = time.perf_counter() - t0
        ports = {"embedded": free_port(), "full": free_port()}
        servers = {}
        for k, env in (("embedded", emb), ("full", full)):
            proc, up_s = _serve(env, ports[k], tmp / f"serve-{k}.log")
            procs.append(proc)
            servers[k] = {"proc": proc, "ready_s": round(up_s, 1)}
        users = pd.read_parquet(emb_home / "lake" / "users", columns=["user_id"])["user_id"].to_numpy()[:200]
        load_before = os.getloadavg()[0]
        lat = drive({k: f"http://127.0.0.1:{p}" for k, p in ports.items()}, users.tolist(), args.requests)
        errors = lat.pop("_errors")
        for s in servers.values():
            s["api_rss_mb"] = tree_rss_mb(s["proc"].pid)
        for name, rss in (("kafka", lambda: broker.rss_bytes() / 2**20), ("opensearch", node.rss_mb),
                          ("milvus-lite", milvus.rss_mb)):
            engines[name]["rss_mb_after"] = round(rss(), 1)
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        for stop in (broker.stop, node.stop, milvus.stop):
            try:
                stop()
            except Exception as exc:  # noqa: BLE001 - one engine failing to stop must not keep the others up
                print(f"stop: {exc}", file=sys.stderr)
        redis_proc.terminate()
        redis_proc.wait(timeout=10)
    pcts = {k: {kind: _pcts(v) for kind, v in d.items() if v} for k, d in lat.items()}
    ratio = {kind: round(pcts["full"][kind]["p99"] / pcts["embedded"][kind]["p99"], 2)
             for kind in pcts["embedded"] if kind in pcts["full"]}
    res = {"world": world, "requests_per_stack": args.requests, "errors": errors, "latency_ms": pcts,
           "full_vs_embedded_p99": ratio,
           "goal": {"feed_p99_ratio_max": 1.5, "met": bool(ratio.get("feed", 99) <= 1.5)},
           "engines": engines, "prepare_s": round(prepare_s, 1),
           "api": {k: {"ready_s": s["ready_s"], "rss_mb": s["api_rss_mb"]} for k, s in servers.items()},
           "load_average_1m": {"before": round(load_before, 1), "after": round(os.getloadavg()[0], 1)}}
    rows = [{"stack": k, "endpoint": kind, **v} for k, d in pcts.items() for kind, v in d.items()]
    print_rows(rows)
    print("full / embedded p99:", ratio, "errors:", errors)
    print("engines:", json.dumps(engines), "api:", json.dumps(res["api"]), f"prepare {res['prepare_s']} s")
    args.out.mkdir(parents=True, exist_ok=True)
    write_result(args.out / "stack.json", res, world=world)
    _plot(res, args.out / "stack.png")
    shutil.rmtree(tmp, ignore_errors=True)
    return res


def _plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4))
    kinds = [k for k in ("feed", "search", "events") if k in res["latency_ms"]["embedded"]]
    x = np.arange(len(kinds))
    for i, (stack, color) in enumerate((("embedded", "#4c72b0"), ("full", "#dd8452"))):
        p50 = [res["latency_ms"][stack][k]["p50"] for k in kinds]
        p99 = [res["latency_ms"][stack][k]["p99"] for k in kinds]
        a.bar(x + i * 0.38, p99, 0.36, color=color, alpha=0.45, label=f"{stack} p99")
        a.bar(x + i * 0.38, p50, 0.36, color=color, label=f"{stack} p50")
        for xi, v in zip(x, p99, strict=True):
            a.text(xi + i * 0.38, v, f"{v:.1f}", ha="center", va="bottom", fontsize=8)
    a.set_xticks(x + 0.19, [f"{k}\n(full/emb p99 {res['full_vs_embedded_p99'][k]}x)" for k in kinds])
    a.set_ylabel("client ms (HTTP, 1 worker each)")
    a.set_title(f"same requests, both stacks at once ({res['requests_per_stack']} rounds)")
    a.legend(fontsize=8)
    names = list(res["engines"])
    b.bar(names, [res["engines"][n]["rss_mb_after"] for n in names], color="#8172b2")
    for i, n in enumerate(names):
        b.text(i, res["engines"][n]["rss_mb_after"], f"{res['engines'][n]['rss_mb_after']:.0f} MB\n"
               f"start {res['engines'][n]['start_s']} s", ha="center", va="bottom", fontsize=8)
    b.set_ylabel("resident MB")
    b.set_title("the full stack's engines")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
