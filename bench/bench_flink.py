"""Benchmark: Flink as the stream processor beside ours, on the same events from the same Kafka broker —
events/s applied + archived, freshness (Kafka ack -> the product's real-time feature visible in Redis)
p50/p99, start-up seconds (process start -> first event applied) and resident memory.

python -m bench.bench_flink [--events 20000] [--freshness-samples 200] [--results bench/results/latest]

Runs a private redis-server, a KRaft Kafka broker (deploy/engines.py, jars from Maven Central), then each
engine in turn as its own process on its own copy of the topic: ``python -m online.stream`` with the Kafka
bus, and the PyFlink job (``python -m online.flink_job`` in the Flink venv, local mini-cluster,
parallelism 1). Writes ``<results>/flink.json`` and ``flink.png``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench._meta import LATEST, tree_rss_mb, write_result

ROOT = Path(__file__).resolve().parents[1]


def _events(n: int, start: int, now: int, n_products: int = 5000) -> list[dict]:
    rng = np.random.default_rng(start)
    types = np.where(rng.random(n) < 0.2, "click", "impression")
    pids = rng.integers(0, n_products, n)
    uids = rng.integers(0, 20000, n)
    return [{"event_id": f"b{start + i}", "event_type": str(types[i]), "ts": now, "user_id": int(uids[i]),
             "product_id": int(pids[i]), "model_version": "jaikod-ranker/1", "position": i % 20}
            for i in range(n)]


def _applied(r) -> int:
    from gpu_core.streams import STREAM_STATS

    return int(r.hget(STREAM_STATS, "applied") or 0)


def run_engine(name: str, cmd: list[str], env: dict, r, bus, n: int, samples: int, timeout_s: float) -> dict:
    """Start one engine on a topic pre-filled with ``n`` events; time the drain, then the freshness probes."""
    from engines.realtime import read_product_rt
    from gpu_core.feature_store import OnlineStore

    t_start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out: dict = {"engine": name}
    try:
        end = time.monotonic() + timeout_s
        while _applied(r) == 0:
            assert proc.poll() is None, f"{name} exited with {proc.returncode}"
            assert time.monotonic() < end, f"{name} applied nothing in {timeout_s} s"
            time.sleep(0.01)
        t_first = time.perf_counter()
        out["startup_s"] = round(t_first - t_start, 2)
        while _applied(r) < n:
            assert proc.poll() is None, f"{name} exited with {proc.returncode}"
            assert time.monotonic() < end, f"{name} applied {_applied(r)} of {n} in {timeout_s} s"
            time.sleep(0.005)
        dt = time.perf_counter() - t_first
        out.update(events=n, seconds=round(dt, 3), events_per_s=round(n / dt), rss_mb=tree_rss_mb(proc.pid))
        store = OnlineStore(r)
        fresh = []
        for i in range(samples):
            pid = 900_000 + i
            ev = {"event_id": f"{name}-f{i}", "event_type": "click", "ts": int(time.time() * 1000), "user_id": 1,
                  "product_id": pid}
            bus.publish([ev])  # returns after the broker's ack (acks=all)
            t_ack = time.perf_counter()
            while read_product_rt(store, [pid], time.time())["views_last_hour"][0] < 1:
                if time.perf_counter() - t_ack > 10:
                    raise RuntimeError(f"{name}: event not visible within 10 s")
                time.sleep(0.0005)
            fresh.append((time.perf_counter() - t_ack) * 1000)
        f = np.array(fresh)
        out["freshness_ms"] = {"samples": len(f), "p50": round(float(np.percentile(f, 50)), 2),
                               "p99": round(float(np.percentile(f, 99)), 2), "max": round(float(f.max()), 2)}
        out["_fresh"] = fresh
        out["rss_mb_end"] = tree_rss_mb(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--freshness-samples", type=int, default=200)
    ap.add_argument("--timeout-s", type=float, default=600.0)
    ap.add_argument("--results", type=Path, default=LATEST)
    args = ap.parse_args(argv)
    import redis
    from confluent_kafka.admin import AdminClient, NewTopic

    from deploy.engines import KafkaBroker, free_port
    from online.bus import KafkaBus
    from online.flink_job import ensure_flink_python, job_command, job_env

    flink_python = ensure_flink_python()
    tmp = Path(tempfile.mkdtemp(prefix="jaikod-bench-flink-"))
    rport = free_port()
    base = f"redis://127.0.0.1:{rport}"
    redis_proc = subprocess.Popen([shutil.which("redis-server"), "--port", str(rport), "--bind", "127.0.0.1",
                                   "--save", "", "--appendonly", "no", "--dir", str(tmp)], stdout=subprocess.DEVNULL)
    broker = KafkaBroker(tmp / "kafka", heap_mb=512, partitions=1)
    result: dict = {"settings": {"partitions": 1, "flink_parallelism": 1, "redis": "appendonly no"}}
    try:
        t0 = time.perf_counter()
        broker.start().wait_ready(180)
        rss = broker.rss_bytes()
        result["kafka"] = {"startup_s": round(time.perf_counter() - t0, 1),
                           "rss_mb": round(rss / 2**20, 1) if rss else None}
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        now = int(time.time() * 1000)
        runs = []
        for i, name in enumerate(("ours", "flink")):
            topic = f"bench-{name}"
            for f in admin.create_topics([NewTopic(topic, 1, 1)]).values():
                f.result(timeout=60)
            bus = KafkaBus(broker.bootstrap, topic, "pub", dedupe=None, timeout_s=30.0)
            for j in range(0, args.events, 5000):
                bus.publish(_events(min(5000, args.events - j), j, now))
            url = f"{base}/{i + 1}"
            r = redis.Redis.from_url(url)
            env = job_env(JAIKOD_HOME=str(tmp / "home"), JAIKOD_REDIS_URL=url, JAIKOD_EVENT_BUS="kafka",
                          JAIKOD_KAFKA_BOOTSTRAP=broker.bootstrap, JAIKOD_EVENT_STREAM=topic)
            if name == "ours":
                cmd = [sys.executable, "-m", "online.stream", "--consumer", "bench", "--lake", str(tmp / "lake-ours")]
            else:
                cmd = job_command(flink_python, broker.bootstrap, topic, "bench-flink", tmp / "lake-flink")
            runs.append(run_engine(name, cmd, env, r, bus, args.events, args.freshness_samples, args.timeout_s))
        result["engines"] = {run["engine"]: {k: v for k, v in run.items() if not k.startswith("_")} for run in runs}
    finally:
        broker.stop()
        redis_proc.terminate()
        redis_proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)
    e = result["engines"]
    result["flink_vs_ours"] = {"events_per_s": round(e["flink"]["events_per_s"] / e["ours"]["events_per_s"], 3),
                               "freshness_p99": round(e["flink"]["freshness_ms"]["p99"] /
                                                      max(e["ours"]["freshness_ms"]["p99"], 1e-9), 2)}
    args.results.mkdir(parents=True, exist_ok=True)
    write_result(args.results / "flink.json", result, world="events generated by this benchmark")
    _plot(runs, args.results / "flink.png")
    print(f"{'engine':<8}{'events/s':>10}{'fresh p50 ms':>14}{'fresh p99 ms':>14}{'start-up s':>12}{'RSS MB':>9}")
    for run in runs:
        print(f"{run['engine']:<8}{run['events_per_s']:>10,}{run['freshness_ms']['p50']:>14}"
              f"{run['freshness_ms']['p99']:>14}{run['startup_s']:>12}{run['rss_mb_end']:>9}")
    print(json.dumps(result, indent=2))
    return result


def _plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    names = [r["engine"] for r in runs]
    vals = [r["events_per_s"] for r in runs]
    a.bar(names, vals, color=["#55a868", "#dd8452"])
    a.set_ylabel("events / s (apply + archive)")
    a.set_title("throughput, 1 partition, 1 worker")
    for i, v in enumerate(vals):
        a.text(i, v, f"{v:,}", ha="center", va="bottom")
    for r in runs:
        ms = np.sort(np.array(r["_fresh"]))
        b.plot(ms, np.arange(1, len(ms) + 1) / len(ms), label=f"{r['engine']} p99 {r['freshness_ms']['p99']} ms")
    b.set_xscale("log")
    b.set_xlabel("Kafka ack -> feature visible (ms)")
    b.set_ylabel("CDF")
    b.set_title("end-to-end freshness")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
