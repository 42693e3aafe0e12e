"""Benchmark of POST /v1/analyze-image's work: images/s and latency percentiles, batch 1 vs micro-batching.

Runs the real :class:`online.services.vision.VisionService` (nudenet + open_nsfw + MobileNetV2 +
heads + duplicate index) on the configured runtime (``JAIKOD_VISION_RUNTIME``, default onnxruntime
on CPU). Heads come from the registry alias when present, else are trained on the spot from drawn
world images (not timed). Decoding and HTTP are excluded (measured: the service's batch method).

* ``batch1``: one request at a time, ``analyze_batch([one])``.
* ``microbatch``: ``--concurrency`` clients keep requests in flight through the async micro-batcher
  (window ``--window-ms``, at most ``--max-batch`` images per run).

    python -m bench.bench_vision --n 96 --concurrency 16
Writes ``bench/results/vision.json`` and prints a rich table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def percentiles(lat_s: list[float]) -> dict:
    a = np.asarray(lat_s) * 1000.0
    return {"p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)),
            "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean())}


def build_service(window_ms: float, max_batch: int):
    from batch.vision_heads import drawn_images, train_heads
    from engines.vision.models import Head
    from gpu_core.errors import RegistryError
    from gpu_core.schema import CATEGORIES, CONDITION_GRADES
    from online.services import vision as vs

    try:
        heads = vs.load_heads()
    except RegistryError:
        out = Path(tempfile.mkdtemp(prefix="bench_vision_heads_"))
        trained = train_heads(drawn_images(240, seed=1), out)
        heads = vs._Heads(Head(trained["category"].onnx_path, list(CATEGORIES)),
                          Head(trained["condition"].onnx_path, list(CONDITION_GRADES)), "bench-trained")
    return vs.VisionService(heads=heads, faces=False, window_ms=window_ms, max_batch=max_batch)


def bench_batch1(svc, images) -> dict:
    lat = []
    t0 = time.perf_counter()
    for i, im in enumerate(images):
        t = time.perf_counter()
        svc.analyze_batch([(im, f"b1-{i}", True)])
        lat.append(time.perf_counter() - t)
    wall = time.perf_counter() - t0
    return {"images": len(images), "images_per_s": len(images) / wall, **percentiles(lat)}


def bench_microbatch(svc, images, concurrency: int) -> dict:
    lat: list[float] = []

    async def worker(queue: asyncio.Queue):
        while True:
            try:
                i, im = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            t = time.perf_counter()
            await svc.analyze(im, f"mb-{i}", True)
            lat.append(time.perf_counter() - t)

    async def main():
        q: asyncio.Queue = asyncio.Queue()
        for item in enumerate(images):
            q.put_nowait(item)
        await asyncio.gather(*[worker(q) for _ in range(concurrency)])

    before = len(svc.batcher.batches)
    t0 = time.perf_counter()
    asyncio.run(main())
    wall = time.perf_counter() - t0
    sizes = svc.batcher.batches[before:]
    return {"images": len(images), "concurrency": concurrency, "images_per_s": len(images) / wall,
            "mean_batch": float(np.mean(sizes)), "max_batch_seen": int(max(sizes)), **percentiles(lat)}


def bench_stages(svc, images, max_batch: int, repeats: int = 3) -> dict:
    """Milliseconds per image of each model at batch 1 and at ``max_batch`` (best of ``repeats``)."""
    stages = {
        "nudenet_320": lambda ims: svc.nudity.detect(ims),
        "open_nsfw_224": lambda ims: svc.nsfw.predict(ims),
        "mobilenet_v2": lambda ims: svc.backbone.features(ims),
    }
    out = {}
    for name, fn in stages.items():
        row = {}
        for b in (1, max_batch):
            best = float("inf")
            for _ in range(repeats):
                t = time.perf_counter()
                fn(images[:b])
                best = min(best, time.perf_counter() - t)
            row[f"ms_per_image_b{b}"] = best * 1000.0 / b
        out[name] = row
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=96, help="images per scenario")
    ap.add_argument("--size", type=int, default=256, help="side of the uploaded images (px)")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--window-ms", type=float, default=None)
    ap.add_argument("--max-batch", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "vision.json")
    args = ap.parse_args(argv)

    import onnxruntime as ort
    from rich.console import Console
    from rich.table import Table

    from batch.world.images import draw_product_image
    from engines.vision.config import get_vision_settings

    s = get_vision_settings()
    window = s.batch_window_ms if args.window_ms is None else args.window_ms
    max_batch = args.max_batch or s.max_batch
    svc = build_service(window, max_batch)
    rng = np.random.default_rng(0)
    images = [draw_product_image(int(c), int(g), int(sd), args.size)
              for c, g, sd in zip(rng.integers(0, 12, args.n), rng.integers(0, 5, args.n),
                                  rng.integers(0, 2**31 - 1, args.n), strict=True)]
    svc.analyze_batch([(images[0], None, False)])  # warm-up
    svc.analyze_batch([(im, None, False) for im in images[:max_batch]])
    results = {
        "runtime": svc.runtime,
        "device": "cpu" if "CUDAExecutionProvider" not in ort.get_available_providers() else "cuda",
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "image_side_px": args.size,
        "backbone_side_px": s.backbone_size,
        "window_ms": window,
        "max_batch": max_batch,
        "batch1": bench_batch1(svc, images),
        "microbatch": bench_microbatch(svc, images, args.concurrency),
        "stages": bench_stages(svc, images, max_batch),
        "note": "service batch path (nudenet 320 + open_nsfw 224 + MobileNetV2 + heads + duplicate index); "
                "decode and HTTP excluded; shared 2-core machine, other jobs may run",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))

    table = Table(title=f"analyze-image ({results['runtime']}, {results['device']}, {results['cpu_count']} cores)")
    for col in ("scenario", "images/s", "p50 ms", "p95 ms", "p99 ms", "mean batch"):
        table.add_column(col, justify="right")
    for name in ("batch1", "microbatch"):
        r = results[name]
        table.add_row(name, f"{r['images_per_s']:.1f}", f"{r['p50_ms']:.1f}", f"{r['p95_ms']:.1f}",
                      f"{r['p99_ms']:.1f}", f"{r.get('mean_batch', 1.0):.1f}")
    stages = Table(title="ms per image by model")
    for col in ("model", "batch 1", f"batch {max_batch}"):
        stages.add_column(col, justify="right")
    for name, row in results["stages"].items():
        stages.add_row(name, f"{row['ms_per_image_b1']:.1f}", f"{row[f'ms_per_image_b{max_batch}']:.1f}")
    console = Console()
    console.print(table)
    console.print(stages)
    return results


if __name__ == "__main__":
    main()
