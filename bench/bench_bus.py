"""Benchmark: the event bus backends side by side on the same events — Redis Streams (the embedded default)
and a real Kafka broker (KRaft, one node, jars from Maven Central): events/s appended through the bus
(``publish``: dedupe markers + append), events/s one stream processor applies and archives from it
(the same :class:`online.StreamProcessor`), freshness (append acknowledged -> the product's real-time
feature visible in Redis) p50/p99, and what the broker costs: start-up seconds and resident memory.

python -m bench.bench_bus [--events 50000] [--freshness-samples 200] [--results bench/results/latest]

Writes ``<results>/bus.json`` and ``bus.png``. Needs java + mvn for the Kafka column (skipped, with the
reason in the JSON, when the jars cannot be had).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from bench._meta import LATEST, write_result
from bench.bench_stream import _events, start_redis
from deploy.engines import EngineUnavailable, KafkaBroker, free_port

ROOT = Path(__file__).resolve().parents[1]


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def _settings_for(bus: str, bootstrap: str | None, tag: str) -> None:
    from gpu_core.settings import reset_settings

    os.environ["JAIKOD_EVENT_BUS"] = bus
    if bootstrap:
        os.environ["JAIKOD_KAFKA_BOOTSTRAP"] = bootstrap
    os.environ["JAIKOD_EVENT_STREAM"] = f"bench-events-{tag}"
    os.environ["JAIKOD_EVENT_GROUP"] = f"bench-group-{tag}"
    reset_settings()


def _measure(bus_name: str, r, tmp: Path, args, bootstrap: str | None = None) -> dict:
    from gpu_core.feature_store import OnlineStore
    from gpu_core.settings import get_settings
    from online.bus import make_bus
    from online.stream import StreamProcessor

    _settings_for(bus_name, bootstrap, f"{bus_name}-{uuid.uuid4().hex[:6]}")
    r.flushdb()
    s = get_settings()
    bus = make_bus(r, s)
    bus.ensure_group()
    now = int(time.time() * 1000)
    batches = [_events(min(5000, args.events - i), i, now) for i in range(0, args.events, 5000)]
    # one event first, untimed: connections, Kafka's idempotent-producer id and topic metadata
    bus.publish([{"event_id": "warm-up", "event_type": "impression", "ts": now, "user_id": 1, "product_id": 1}])
    t0 = time.perf_counter()
    for b in batches:
        bus.publish(b)
    dt_pub = time.perf_counter() - t0
    bus.close()
    out: dict = {"publish": {"events": args.events, "seconds": round(dt_pub, 3),
                             "events_per_s": round(args.events / dt_pub)}}
    # 1. one processor drains the pre-filled bus (join/assignment excluded: started first, then timed)
    proc = StreamProcessor(r, tmp / f"lake-{bus_name}", "bench")
    proc.start()
    t0 = time.perf_counter()
    end = time.monotonic() + 600
    while proc.applied < args.events + 1 and time.monotonic() < end:
        proc.step()
    proc.flush()
    dt_proc = time.perf_counter() - t0
    out["processor"] = {"events": proc.applied, "archived": proc.archived, "seconds": round(dt_proc, 3),
                        "events_per_s": round(proc.applied / dt_proc)}
    # 2. freshness: a processor thread at work; append one click, poll Redis until the feature moves
    stop = threading.Event()
    worker = threading.Thread(target=proc.run, args=(stop,), daemon=True)
    worker.start()
    pub = make_bus(r, s)
    store = OnlineStore(r)
    from engines.realtime import read_product_rt

    time.sleep(1.0)
    fresh = []
    for i in range(args.freshness_samples):
        pid = 900_000 + i
        pub.publish([{"event_id": f"f-{bus_name}-{i}", "event_type": "click", "ts": int(time.time() * 1000),
                      "user_id": 1, "product_id": pid}])
        t_ack = time.perf_counter()
        while read_product_rt(store, [pid], time.time())["views_last_hour"][0] < 1:
            if time.perf_counter() - t_ack > 10:
                raise RuntimeError(f"{bus_name}: event not visible within 10 s")
            time.sleep(0.0005)
        fresh.append((time.perf_counter() - t_ack) * 1000)
    stop.set()
    worker.join(timeout=30)
    pub.close()
    proc.bus.close()
    f = np.array(fresh)
    out["freshness_ms"] = {"samples": len(f), "p50": round(float(np.percentile(f, 50)), 2),
                           "p99": round(float(np.percentile(f, 99)), 2), "max": round(float(f.max()), 2)}
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--freshness-samples", type=int, default=200)
    ap.add_argument("--heap-mb", type=int, default=384)
    ap.add_argument("--results", type=Path, default=LATEST)
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="jaikod-bench-bus-"))
    rport = free_port()
    url = f"redis://127.0.0.1:{rport}/0"
    os.environ.update({"JAIKOD_HOME": str(tmp / "home"), "JAIKOD_REDIS_URL": url,
                       "JAIKOD_STREAM_CLAIM_IDLE_MS": "10000"})
    result: dict = {"events": args.events, "machine": {"cpus": os.cpu_count(), "load_1m": os.getloadavg()[0]},
                    "backends": {}}
    redis_proc, r = start_redis(rport, tmp)
    broker = None
    try:
        result["backends"]["redis"] = _measure("redis", r, tmp, args)
        result["backends"]["redis"]["server"] = {"rss_mb": _rss_mb(redis_proc.pid),
                                                 "note": "redis-server also holds the online store"}
        broker = KafkaBroker(tmp / "kafka", heap_mb=args.heap_mb)
        try:
            broker.start().wait_ready(300)
        except EngineUnavailable as exc:
            result["backends"]["kafka"] = {"skipped": str(exc)}
            broker = None
        if broker is not None:
            idle_rss = broker.rss_bytes()
            result["backends"]["kafka"] = _measure("kafka", r, tmp, args, broker.bootstrap)
            result["backends"]["kafka"]["server"] = {
                "start_s": round(broker.started_s, 1), "heap_mb": args.heap_mb,
                "rss_mb_ready": round(idle_rss / 2**20, 1) if idle_rss else None,
                "rss_mb_after": round((broker.rss_bytes() or 0) / 2**20, 1)}
    finally:
        if broker is not None:
            broker.stop()
        redis_proc.terminate()
        redis_proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)
    write_result(args.results / "bus.json", result, world="events generated by this benchmark")
    _table(result)
    _plot(result, args.results / "bus.png")
    return result


def _table(result: dict) -> None:
    rows = [("backend", "publish ev/s", "processor ev/s", "fresh p50 ms", "fresh p99 ms", "server RSS MB",
             "start s")]
    for name, b in result["backends"].items():
        if "skipped" in b:
            rows.append((name, "skipped: " + b["skipped"], "", "", "", "", ""))
            continue
        srv = b["server"]
        rows.append((name, f"{b['publish']['events_per_s']:,}", f"{b['processor']['events_per_s']:,}",
                     f"{b['freshness_ms']['p50']}", f"{b['freshness_ms']['p99']}",
                     str(srv.get("rss_mb_after", srv.get("rss_mb"))), str(srv.get("start_s", "-"))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    print(json.dumps(result["backends"], indent=1))


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, b in result["backends"].items() if "skipped" not in b]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    for ax, (key, label) in zip(axes, [("publish", "publish events/s"), ("processor", "processor events/s")],
                                strict=False):
        vals = [result["backends"][n][key]["events_per_s"] for n in names]
        ax.bar(names, vals, color=["#c44e52", "#4c72b0"][: len(names)])
        ax.set_title(label)
        for i, v in enumerate(vals):
            ax.text(i, v, f"{v:,}", ha="center", va="bottom")
    ax = axes[2]
    x = np.arange(len(names))
    ax.bar(x - 0.2, [result["backends"][n]["freshness_ms"]["p50"] for n in names], 0.4, label="p50")
    ax.bar(x + 0.2, [result["backends"][n]["freshness_ms"]["p99"] for n in names], 0.4, label="p99")
    ax.set_xticks(x, names)
    ax.set_title("append -> feature visible (ms)")
    ax.legend()
    fig.suptitle(f"event bus, {result['events']:,} events, {result['machine']['cpus']} cores")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
