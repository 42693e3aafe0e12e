"""Calibration of the category confidence on the hand-labelled real photos (issue 12).

Photos: ``bench/data/vision_real_photos.json`` (product photos: their category; non-product photos:
"no category"; ambiguous ones left out). Raw confidence = the network's own mass (T = 1). The
temperature is fitted by NLL **cross-validated**: the photos split into ``folds`` (seeded), ``T``
fitted on the other folds, each photo scored with the ``T`` that never saw it; ECE before/after and
the reliability tables come from those held-out scores. ``--write`` also refits ``T`` on all photos
and writes it, with where it came from, to the classifier's file,
``engines/vision/data/category_calibration_<classifier>.json`` (``JAIKOD_VISION_CATEGORY_CLASSIFIER``).

    python -m bench.vision_calibration [--write]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json

import numpy as np

from engines.vision.calibration import (
    calibration_path,
    expected_calibration_error,
    fit_temperature,
    reliability,
    with_none,
)
from engines.vision.category import category_mass
from gpu_core.schema import CATEGORIES

THRESHOLDS = [round(0.05 * i, 2) for i in range(20)]


def targets_of(rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(index of the rows used, target 0..11 = category, 12 = no category) for labelled rows."""
    keep, tgt = [], []
    for i, r in enumerate(rows):
        if r["product"] is True:
            keep.append(i)
            tgt.append(CATEGORIES.index(r["category"]))
        elif r["product"] is False:
            keep.append(i)
            tgt.append(len(CATEGORIES))
    return np.array(keep, int), np.array(tgt, int)


def _answers(mass: np.ndarray, tgt: np.ndarray, pick: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, right) of the answer; the category is the argmax of ``pick`` (the raw mass, as the
    service picks it) or of ``mass``, its confidence read from ``mass``."""
    top = (mass if pick is None else pick).argmax(1)
    return mass[np.arange(len(mass)), top], (top == tgt)  # non-products (12) are never right


def coverage_curve(conf: np.ndarray, correct: np.ndarray, is_product: np.ndarray) -> list[dict]:
    """Per ``unknown`` threshold: products answered (coverage), accuracy of those answers, top-1 with
    unknown counted wrong, and non-product photos answered unknown."""
    out = []
    for t in THRESHOLDS:
        ans = conf >= t
        p = is_product
        out.append({"threshold": t, "product_coverage": round(float(ans[p].mean()), 4),
                    "accuracy_answered": round(float(correct[p & ans].mean()), 4) if (p & ans).any() else None,
                    "top1": round(float((correct & ans)[p].mean()), 4),
                    "non_product_rejection": round(float((~ans)[~p].mean()), 4)})
    return out


def evaluate(probs: np.ndarray, rows: list[dict], folds: int = 5, seed: int = 0) -> dict:
    keep, tgt = targets_of(rows)
    probs = probs[keep]
    grid_cache: dict[float, np.ndarray] = {}

    def mass_at(t: float) -> np.ndarray:
        if t not in grid_cache:
            grid_cache[t] = with_none(category_mass(probs, temperature=t))
        return grid_cache[t]

    fold = np.random.default_rng(seed).permutation(len(keep)) % folds
    held = np.zeros((len(keep), len(CATEGORIES) + 1))
    fold_t = []
    for k in range(folds):
        tr, te = fold != k, fold == k
        t = fit_temperature(lambda x, tr=tr: mass_at(x)[tr], tgt[tr])
        fold_t.append(t)
        held[te] = mass_at(t)[te]
    raw = mass_at(1.0)
    is_product = tgt < len(CATEGORIES)
    conf0, ok0 = _answers(raw[:, :-1], tgt)
    conf1, ok1 = _answers(held[:, :-1], tgt, pick=raw[:, :-1])
    return {
        "photos": int(len(keep)), "products": int(is_product.sum()), "non_products": int((~is_product).sum()),
        "folds": folds, "seed": seed, "fold_temperatures": fold_t,
        "temperature_all_photos": fit_temperature(mass_at, tgt),
        "ece_raw": round(expected_calibration_error(conf0, ok0), 4),
        "ece_calibrated_heldout": round(expected_calibration_error(conf1, ok1), 4),
        "ece_products_raw": round(expected_calibration_error(conf0[is_product], ok0[is_product]), 4),
        "ece_products_calibrated_heldout": round(expected_calibration_error(conf1[is_product], ok1[is_product]), 4),
        "reliability_raw": reliability(conf0, ok0),
        "reliability_calibrated_heldout": reliability(conf1, ok1),
        "coverage_raw": coverage_curve(conf0, ok0, is_product),
        "coverage_calibrated_heldout": coverage_curve(conf1, ok1, is_product),
        "note": "ECE over 10 equal-width bins of the answer's confidence; correct = the top category is the "
                "label (never, for non-product photos); the face gate is not applied here",
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--write", action="store_true", help="refit T on all photos and write the calibration file")
    args = ap.parse_args(argv)
    from bench.vision_photos import load_photos
    from engines.vision.config import get_vision_settings
    from engines.vision.models import ImageNetClassifier

    photos, missing = load_photos()
    name = get_vision_settings().category_classifier
    clf = ImageNetClassifier(name)
    probs = np.concatenate([clf.probs([img]) for _, img in photos])
    res = evaluate(probs, [r for r, _ in photos], folds=args.folds)
    res["missing_sources"] = missing
    print(json.dumps({k: v for k, v in res.items() if not k.startswith(("reliability", "coverage"))}, indent=1))
    if args.write:
        calibration_path(name).write_text(json.dumps({
            "temperature": res["temperature_all_photos"],
            "classifier": name,
            "method": f"temperature scaling of {name}'s ImageNet logits; T minimises the NLL of the 13-way "
                      "outcome (12 categories + no category) on a grid 0.25..8",
            "fitted_on": f"bench/data/vision_real_photos.json: {res['products']} product + {res['non_products']} "
                         f"non-product photos (ambiguous left out), sources missing: {missing or 'none'}",
            "cross_validation": {"folds": res["folds"], "seed": res["seed"], "fold_temperatures": res["fold_temperatures"],
                                 "ece_raw": res["ece_raw"], "ece_calibrated_heldout": res["ece_calibrated_heldout"]},
            "fitted": dt.date.today().isoformat(),
            "refit": "python -m bench.vision_calibration --write",
        }, indent=1) + "\n")
    return res


if __name__ == "__main__":
    main()
