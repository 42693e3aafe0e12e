"""Dev/test split and scoring of the real-photo category benchmark (bench/vision_accuracy.py)."""

import numpy as np

from bench.vision_accuracy import answers, confusion, evaluate, score, split_of
from engines.vision.imagenet_map import load_table


def _rows():
    rows = [{"source": "s", "file": f"f{i}.jpg", "product": True, "category": "furniture"} for i in range(5)]
    rows += [{"source": "s", "file": f"n{i}.jpg", "product": False} for i in range(4)]
    rows.append({"source": "s", "file": "amb.jpg", "product": None})
    return rows


def test_split_is_stratified_stable_and_leaves_ambiguous_out():
    rows = _rows()
    split = split_of(rows)
    assert split[-1] is None
    assert [split[i] for i in range(5)].count("dev") == 3 and [split[i] for i in range(5, 9)].count("dev") == 2
    more = rows + [{"source": "s", "file": "b.jpg", "product": True, "category": "beauty"}]
    assert split_of(more)[:len(rows)] == split  # a photo of another stratum moves none of these


def test_answers_scores_and_confusion():
    rows = _rows()
    code, _, table = load_table()
    couch = next(r["index"] for r in table if r["name"] == "couch")
    p = np.full((len(rows), 1000), 1e-6, np.float32)
    p[:5, couch] = 1.0  # furniture photos: all couch
    p[5:, 970] = 1.0  # non-products: a mountain (no category)
    p /= p.sum(1, keepdims=True)
    portrait = np.zeros(len(rows), bool)
    portrait[0] = True
    ans, conf = answers(p, portrait, "raw", 0.5)
    assert ans[0] == "unknown" and ans[1:5] == ["furniture"] * 4 and set(ans[5:9]) == {"unknown"}
    assert 0.5 < conf[1] < 0.999  # the calibrated (softened) mass, not the raw one
    s = score(rows, ans, list(range(9)))
    assert s["top1"] == 0.8 and s["non_product_rejection"] == 1.0 and s["products"] == 5
    assert confusion(rows, ans, list(range(9))) == {"furniture": {"unknown": 1, "furniture": 4},
                                                    "non_product": {"unknown": 4}}
    r = evaluate(p, rows, portrait, 0.5)
    assert r["never_unknown"]["all"] == 1.0 and r["service"]["all"]["top1"] == 0.8
    assert r["chosen_on_dev"]["pick"] in ("raw", "calibrated", "top_class")
