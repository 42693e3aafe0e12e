"""Benchmark of POST /v1/analyze-image's work: images/s and latency percentiles, batch 1 vs micro-batching.

Runs the real :class:`online.services.vision.VisionService` (nudenet + open_nsfw + MobileNetV2 +
the category's ImageNet classifier + heads + duplicate index) on the configured runtime (``JAIKOD_VISION_RUNTIME``, default onnxruntime
on CPU). Heads come from the registry alias when present, else are trained on the spot from drawn
world images (not timed). Decoding and HTTP are excluded (measured: the service's batch method).

* ``batch1``: one request at a time, ``analyze_batch([one])``.
* ``microbatch``: ``--concurrency`` clients keep requests in flight through the async micro-batcher
  (window ``--window-ms``, at most ``--max-batch`` images per run).
* ``category_classifiers``: the batch-1 path with MobileNetV2's own head vs EfficientNet-Lite0 as the
  category classifier, alternating image by image, drawn images and real photos.

    python -m bench.bench_vision --n 96 --concurrency 16
Writes ``bench/results/vision.json`` and prints a rich table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from bench._meta import LATEST, write_result


def percentiles(lat_s: list[float]) -> dict:
    a = np.asarray(lat_s) * 1000.0
    return {"p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)),
            "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean())}


def build_service(window_ms: float, max_batch: int):
    from batch.vision_heads import drawn_images, train_heads
    from gpu_core.errors import RegistryError
    from online.services import vision as vs

    try:
        heads = vs.load_heads()
        if heads.domain is None:  # registered at another backbone size: train for this one
            raise RegistryError("heads of another backbone size")
    except RegistryError:
        out = Path(tempfile.mkdtemp(prefix="bench_vision_heads_"))
        heads = vs.heads_from_trained(train_heads(drawn_images(240, seed=1), out), "bench-trained")
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


def bench_classifiers(svc, images, photos: list[np.ndarray]) -> dict:
    """The whole analyze path at batch 1 with each category classifier: the backbone's own head
    (``mobilenet_v2``, one pass) and EfficientNet-Lite0 (a second network for photos outside the world
    domain), image by image in alternation so both run under the same machine load: wall p50/p99 and
    CPU ms per image (process time, all threads)."""
    from online.services.vision import VisionService

    other = "efficientnet_lite0" if svc.classifier is None else "mobilenet_v2"
    alt = VisionService(heads=svc.heads, faces=False, category_classifier=other)
    runs = {svc.category_model: svc, alt.category_model: alt}
    out: dict = {"in_force": svc.category_model}
    names = list(runs)
    for what, ims in (("drawn", images), ("photos", photos)):
        for r in runs.values():
            r.analyze_batch([(ims[0], None, False)])
        lat: dict[str, list[float]] = {k: [] for k in runs}
        cpu: dict[str, list[float]] = {k: [] for k in runs}
        for i, im in enumerate(ims):
            for k in (names if i % 2 == 0 else names[::-1]):
                t, c = time.perf_counter(), time.process_time()
                runs[k].analyze_batch([(im, f"cc-{what}-{i}", True)])
                lat[k].append(time.perf_counter() - t)
                cpu[k].append(time.process_time() - c)
        out[what] = {k: {**percentiles(lat[k]), "cpu_ms_per_image": float(np.mean(cpu[k]) * 1000.0)} for k in runs}
    out["load_average"] = os.getloadavg()
    return out


def bench_stages(svc, images, max_batch: int, repeats: int = 3) -> dict:
    """Milliseconds per image of each model at batch 1 and at ``max_batch`` (best of ``repeats``)."""
    stages = {
        "nudenet_320": lambda ims: svc.nudity.detect(ims),
        "open_nsfw_224": lambda ims: svc.nsfw.predict(ims),
        "mobilenet_v2": lambda ims: svc.backbone.features(ims),
    }
    if svc.classifier is not None:
        stages[f"{svc.classifier.name}_{svc.classifier.size} (category, photos only)"] = svc.classifier.probs
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
    ap.add_argument("--out", type=Path, default=LATEST / "vision.json")
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
        "category_model": svc.category_model,
        "note": "service batch path (nudenet 320 + open_nsfw 224 + MobileNetV2 + the category classifier on photos "
                "outside the world heads' domain + heads + duplicate index); "
                "decode and HTTP excluded; shared 2-core machine, other jobs may run",
        "gpu": "not measured (no GPU on this machine)" if "CUDAExecutionProvider" not in ort.get_available_providers()
        else "onnxruntime CUDA provider",
    }
    from bench.bench_vision_real import run as run_real
    from bench.vision_photos import load_photos

    results["category_classifiers"] = bench_classifiers(svc, images, [im for _, im in load_photos()[0]])
    results["real_photos"] = run_real(svc, s)
    write_result(args.out, results, world="drawn world images + real photos shipped in wheels")

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
    cc = results["category_classifiers"]
    t = Table(title=f"whole path, batch 1, per category classifier (alternating; load average {cc['load_average'][0]:.2f})")
    for col in ("images", "category_model", "p50 ms", "p99 ms", "CPU ms/image"):
        t.add_column(col, justify="right")
    for what in ("drawn", "photos"):
        for k, r in cc[what].items():
            t.add_row(what, k + (" (in force)" if k == cc["in_force"] else ""), f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}",
                      f"{r['cpu_ms_per_image']:.1f}")
    console.print(t)
    real = results["real_photos"]
    if "skipped" in real:
        console.print(f"real photos: {real['skipped']}")
    else:
        _print_real(console, real, results)
        _plot(results, args.out.with_suffix(".png"))
    return results


def _print_real(console, real: dict, results: dict) -> None:
    from rich.table import Table

    c, d = real["category"], real["duplicates"]
    t = Table(title=f"real photos ({real['photos']}: {c['n_product']} product, {c['n_non_product']} non-product, "
                    f"{c['n_ambiguous']} ambiguous left out)")
    for col in ("measure", "value", "goal"):
        t.add_column(col, justify="right")
    t.add_row("category top-1 (products; unknown = wrong)", f"{c['category_top1']:.2f}", ">= 0.80")
    t.add_row("category top-1 if never unknown", f"{c['category_top1_ignoring_unknown']:.2f}", "")
    t.add_row("world head top-1 (baseline)", f"{c['world_head_top1_baseline']:.2f}", "")
    t.add_row("non-product answered unknown", f"{c['non_product_rejection']:.2f}", "")
    cal = c["calibration"]
    t.add_row("ECE raw -> calibrated (held-out folds)", f"{cal['ece_raw']:.3f} -> {cal['ece_calibrated_heldout']:.3f}", "")
    t.add_row("safety flags on product photos", str(c["safety_flags_on_products"]), "0 (>= 0.5)")
    t.add_row("max unsafe score on product photos", f"{c['max_unsafe_score_on_products']:.2f}", "< 0.5")
    t.add_row("duplicate precision", f"{d['precision']:.3f}", ">= 0.95")
    t.add_row("duplicate recall", f"{d['recall']:.3f}", ">= 0.95")
    t.add_row("batch-1 p50 / p99 ms (drawn 256 px)",
              f"{results['batch1']['p50_ms']:.1f} / {results['batch1']['p99_ms']:.1f}", "p99 <= 72")
    lr = c["latency_real_photos_batch1"]
    t.add_row("batch-1 p50 / p99 ms (real photos)", f"{lr['p50_ms']:.1f} / {lr['p99_ms']:.1f}", "")
    t.add_row("GPU", results["gpu"], "")
    console.print(t)
    e = Table(title="duplicate recall per edit")
    e.add_column("edit")
    e.add_column("recall", justify="right")
    for k, v in d["recall_per_edit"].items():
        e.add_row(k, f"{v:.2f}")
    console.print(e)


def _plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    real = results["real_photos"]
    c, d = real["category"], real["duplicates"]
    fig, ax = plt.subplots(1, 5, figsize=(24, 4))
    cal = c["calibration"]
    for key, lab in (("reliability_raw", "raw (T=1)"), ("reliability_calibrated_heldout", "calibrated, held out")):
        ax[3].plot([r["mean_confidence"] for r in cal[key]], [r["accuracy"] for r in cal[key]], "o-", label=lab)
    ax[3].plot([0, 1], [0, 1], "k--", lw=1)
    ax[3].set_title(f"reliability (ECE {cal['ece_raw']:.3f} -> {cal['ece_calibrated_heldout']:.3f})")
    ax[3].set_xlabel("confidence")
    ax[3].set_ylabel("accuracy")
    ax[3].legend()
    for key, ls in (("coverage_raw", "--"), ("coverage_calibrated_heldout", "-")):
        cv = cal[key]
        th = [r["threshold"] for r in cv]
        ax[4].plot(th, [r["top1"] for r in cv], "C0" + ls, label=f"top-1 ({key.split('_', 1)[1]})")
        ax[4].plot(th, [r["product_coverage"] for r in cv], "C1" + ls, label="product coverage")
        ax[4].plot(th, [r["non_product_rejection"] for r in cv], "C2" + ls, label="non-product rejected")
    ax[4].axvline(0.5, color="k", lw=1, ls=":")
    ax[4].set_xlabel("unknown threshold")
    ax[4].set_title("unknown threshold trade-off (dashed: raw)")
    ax[4].legend(fontsize=7)
    names = ["top-1", "top-1 (no unknown)", "world head", "non-product rejected"]
    vals = [c["category_top1"], c["category_top1_ignoring_unknown"], c["world_head_top1_baseline"],
            c["non_product_rejection"]]
    ax[0].bar(names, vals, color=["C0", "C0", "C7", "C2"])
    ax[0].axhline(0.8, color="k", ls="--", lw=1)
    ax[0].set_ylim(0, 1)
    ax[0].set_title("category on real photos")
    ax[0].tick_params(axis="x", rotation=20)
    ax[1].bar(list(d["recall_per_edit"]), list(d["recall_per_edit"].values()))
    ax[1].axhline(0.95, color="k", ls="--", lw=1)
    ax[1].set_ylim(0, 1.05)
    ax[1].set_title(f"duplicate recall per edit (P={d['precision']:.2f}, R={d['recall']:.2f})")
    ax[1].tick_params(axis="x", rotation=30)
    lat = [results["batch1"]["p50_ms"], results["batch1"]["p99_ms"], c["latency_real_photos_batch1"]["p50_ms"],
           c["latency_real_photos_batch1"]["p99_ms"]]
    ax[2].bar(["drawn p50", "drawn p99", "photo p50", "photo p99"], lat)
    ax[2].axhline(72, color="k", ls="--", lw=1)
    ax[2].set_title(f"batch-1 latency, ms ({results['runtime']}, {results['cpu_count']} CPU cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
