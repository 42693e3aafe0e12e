"""Benchmark: moderation quality on the hand-written set, then ``POST /v1/analyze-text`` over real HTTP.

python -m bench.bench_text [--requests 600] [--concurrency 4] [--cores 0,1] [--results bench/results/latest]
                           [--split test|dev|all] [--skip-http]

Quality: ``bench/data/text_eval.jsonl`` (461 messages + 244 honest listings written by hand, independently
of the generator's templates, with a dev/test split; lexicons were tuned on dev only). Per class
precision/recall and the honest-listing false-positive rate for three systems: the lexicon-only baseline
(rules, detectors, word lists; no model), the heads alone (the embedding classifier at
``prohibited_threshold``, as served before the taxonomy) and the served analyzer (rules + gated heads).
Writes ``<results>/text_quality.json`` and ``text_quality.png``.

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

from bench._meta import LATEST, write_result

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RESULTS = LATEST


EVAL_PATH = ROOT / "bench" / "data" / "text_eval.jsonl"


def load_eval_set(path: Path = EVAL_PATH) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _predicted_labels(analysis, offensive_threshold: float) -> set[str]:
    return ({i for i, _ in analysis.prohibited} | {d.kind for d in analysis.diversion}
            | ({"offensive"} if analysis.offensive >= offensive_threshold else set()))


def _gold_labels(row: dict) -> set[str]:
    return set(row["prohibited"]) | set(row["diversion"]) | ({"offensive"} if row["offensive"] else set())


def score_predictions(rows: list[dict], predicted: list[set[str]], classes: list[str]) -> dict[str, Any]:
    """Per-class precision/recall/support over all rows; honest-listing false-positive rate."""
    per_class = {}
    for c in classes:
        tp = sum(c in p and c in _gold_labels(r) for r, p in zip(rows, predicted, strict=True))
        fp = sum(c in p and c not in _gold_labels(r) for r, p in zip(rows, predicted, strict=True))
        fn = sum(c not in p and c in _gold_labels(r) for r, p in zip(rows, predicted, strict=True))
        per_class[c] = {"precision": round(tp / (tp + fp), 4) if tp + fp else None,
                        "recall": round(tp / (tp + fn), 4) if tp + fn else None, "support": tp + fn,
                        "false_positives": fp}
    honest = [p for r, p in zip(rows, predicted, strict=True) if r["subset"] == "honest_listings"]
    flagged = sum(bool(p) for p in honest)
    return {"per_class": per_class, "honest_listings": len(honest), "honest_flagged": flagged,
            "honest_fp_rate": round(flagged / len(honest), 4) if honest else None}


def quality(model_dir: Path, split: str = "test") -> dict[str, Any]:
    """The three systems on the hand-written set (``split``: test = held out from lexicon tuning)."""
    from engines.text.analyzer import TextAnalyzer
    from engines.text.detectors import DIVERSION_KINDS
    from engines.text.heads import PROHIBITED_ITEMS, ClassifierHeads
    from engines.text.settings import get_text_settings

    s = get_text_settings()
    rows = [r for r in load_eval_set() if split == "all" or r["split"] == split]
    heads = ClassifierHeads.load(model_dir)
    systems = {
        "lexicon_only": TextAnalyzer(None),
        "heads_only": TextAnalyzer(heads, use_rules=False,
                                   settings=s.model_copy(update={"head_alone_reports": True,
                                                                 "head_alone_threshold": s.prohibited_threshold})),
        "served": TextAnalyzer(heads),
    }
    classes = [*PROHIBITED_ITEMS, *DIVERSION_KINDS, "offensive"]
    out: dict[str, Any] = {"split": split, "rows": len(rows), "eval_set": str(EVAL_PATH.relative_to(ROOT)),
                           "offensive_threshold": s.offensive_threshold, "systems": {}}
    for name, analyzer in systems.items():
        predicted: list[set[str]] = [set()] * len(rows)
        for ctx in ("listing", "chat"):
            idx = [i for i, r in enumerate(rows) if r["context"] == ctx]
            for i, a in zip(idx, analyzer.analyze_batch([rows[i]["text"] for i in idx], ctx), strict=True):
                predicted[i] = _predicted_labels(a, s.offensive_threshold)
        out["systems"][name] = {"model_version": analyzer.model_version,
                                **score_predictions(rows, predicted, classes)}
    served = out["systems"]["served"]
    p_ok = [m["precision"] is None or m["precision"] >= 0.9 for m in served["per_class"].values()]
    r_ok = [m["recall"] is None or m["recall"] >= 0.85 for m in served["per_class"].values()]
    out["goals"] = {"precision_ge_0.9_every_class": all(p_ok), "recall_ge_0.85_every_class": all(r_ok),
                    "honest_fp_rate_le_0.01": (served["honest_fp_rate"] or 0.0) <= 0.01}
    return out


def print_quality(q: dict[str, Any], console: Console | None = None) -> None:
    sysn = list(q["systems"])
    table = Table(title=f"text moderation on the hand-written set, split={q['split']} ({q['rows']} rows)")
    table.add_column("class")
    table.add_column("support", justify="right")
    for n in sysn:
        table.add_column(f"{n} P / R", justify="right")

    def fmt(v):
        return "—" if v is None else f"{v:.2f}"

    for c, m in q["systems"]["served"]["per_class"].items():
        table.add_row(c, str(m["support"]), *(f"{fmt(q['systems'][n]['per_class'][c]['precision'])} / "
                                              f"{fmt(q['systems'][n]['per_class'][c]['recall'])}" for n in sysn))
    table.add_row("honest-listing FP rate", str(q["systems"]["served"]["honest_listings"]),
                  *(f"{q['systems'][n]['honest_fp_rate']:.3f} ({q['systems'][n]['honest_flagged']})" for n in sysn))
    (console or Console()).print(table)


def plot_quality(q: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = list(q["systems"]["served"]["per_class"])
    fig, axes = plt.subplots(2, 1, figsize=(13, 7), sharex=True)
    width = 0.8 / len(q["systems"])
    for k, metric in enumerate(("precision", "recall")):
        ax = axes[k]
        for j, (name, sysq) in enumerate(q["systems"].items()):
            vals = [sysq["per_class"][c][metric] or 0.0 for c in classes]
            ax.bar([i + j * width for i in range(len(classes))], vals, width, label=name)
        ax.axhline(0.9 if metric == "precision" else 0.85, color="k", linestyle="--", linewidth=0.8)
        ax.set_ylabel(metric)
        ax.set_ylim(0, 1.05)
    axes[0].legend(loc="lower left", fontsize=8)
    axes[1].set_xticks([i + 0.4 - width / 2 for i in range(len(classes))], classes, rotation=45, ha="right")
    fp = ", ".join(f"{n} {s['honest_fp_rate']:.3f}" for n, s in q["systems"].items())
    fig.suptitle(f"text moderation, hand-written set ({q['split']}); honest-listing FP rate: {fp}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


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
    from batch.text_train import ensure_heads

    ensure_heads(d, register=False)  # missing or stale (older taxonomy) heads are trained first
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
    ap.add_argument("--split", default="test", choices=("test", "dev", "all"))
    ap.add_argument("--skip-http", action="store_true", help="quality only")
    args = ap.parse_args(argv)
    args.results.mkdir(parents=True, exist_ok=True)
    q = quality(_ensure_model(), args.split)
    print_quality(q)
    write_result(args.results / "text_quality.json", q, world="bench/data/text_eval.jsonl (hand-written)")
    plot_quality(q, args.results / "text_quality.png")
    Console().print(f"wrote {args.results / 'text_quality.json'} and text_quality.png; goals: {q['goals']}")
    if args.skip_http:
        return q
    cores = [int(c) for c in args.cores.split(",") if c.strip()]
    cores = [c for c in cores if c in os.sched_getaffinity(0)] or sorted(os.sched_getaffinity(0))[:2]
    result = run(args.requests, args.concurrency, cores)
    print_result(result)
    path = args.results / "text.json"
    write_result(path, result, world="bench/data/text_eval.jsonl (hand-written)")
    Console().print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
