"""The ImageNet -> category table and the category decision (pure logic, no models)."""

from __future__ import annotations

import json

import cv2
import numpy as np

from engines.vision.category import UNKNOWN, WorldDomain, category_mass, decide, portrait
from engines.vision.config import VisionSettings
from engines.vision.imagenet_map import TABLE_PATH, derive, load_table
from engines.vision.quality import image_quality
from gpu_core.schema import CATEGORIES


def test_committed_table_is_what_the_rules_derive():
    rows = json.loads(TABLE_PATH.read_text())
    assert len(rows) == 1000 and [r["index"] for r in rows] == list(range(1000))
    assert derive([r["name"] for r in rows], [r["wnid"] for r in rows]) == rows  # no hand edit drifts
    assert {r["category"] for r in rows} - {None} <= set(CATEGORIES)


def test_table_spot_checks():
    _, _, rows = load_table()
    by = {r["name"]: r for r in rows}
    assert by["laptop computer"]["category"] == "electronics"
    assert by["mobile phone"]["category"] == "mobile_phones"
    assert by["couch"]["category"] == "furniture"
    assert by["moped"]["category"] == "vehicles_parts"
    for name in ("espresso", "restaurant", "valley", "baseball player", "tabby cat", "assault rifle", "website"):
        assert by[name]["category"] in (None, "pets"), name
    assert by["tabby cat"]["kind"] == "animal" and by["goldfish"]["category"] == "pets"
    assert by["great white shark"]["category"] is None


def test_category_mass_adds_mapped_probabilities_and_leaves_animals_out():
    code, animal, rows = load_table()
    p = np.zeros((2, 1000), np.float32)
    couch = next(r["index"] for r in rows if r["name"] == "couch")
    tabby = next(r["index"] for r in rows if r["name"] == "tabby cat")
    p[0, couch], p[0, tabby], p[0, 970] = 0.5, 0.3, 0.2  # 970: mountain
    p[1, tabby] = 1.0
    m = category_mass(p, pet_animals=False, temperature=1.0)
    assert m[0, CATEGORIES.index("furniture")] == np.float32(0.5) and m[0].sum() == np.float32(0.5)
    assert m[1].sum() == 0
    assert category_mass(p, pet_animals=True, temperature=1.0)[1, CATEGORIES.index("pets")] == 1.0


def test_decide_unknown_below_confidence_and_for_portraits():
    s = VisionSettings(category_min_confidence=0.5)
    m = np.zeros(12, np.float32)
    m[CATEGORIES.index("sports")] = 0.7
    assert decide(m, is_portrait=False, s=s)["category"] == "sports"
    assert decide(m, is_portrait=True, s=s) == {"category": UNKNOWN, "category_confidence": 0.7, "reason": "person"}
    m[:] = 0.04
    assert decide(m, is_portrait=False, s=s)["reason"] == "low_confidence"


def test_decide_picks_on_raw_mass_and_gates_on_the_calibrated_one():
    """One dominant furniture class vs many small home_garden classes: softening the logits (T = 3)
    hands the argmax to home_garden; the answer stays furniture, with the calibrated confidence."""
    code, _, rows = load_table()
    p = np.full((1, 1000), 1e-6, np.float32)
    p[0, next(r["index"] for r in rows if r["name"] == "couch")] = 0.55
    garden = np.flatnonzero(code == CATEGORIES.index("home_garden"))[:40]
    p[0, garden] = 0.45 / len(garden)
    p /= p.sum()
    raw, cal = category_mass(p, temperature=1.0)[0], category_mass(p, temperature=3.0)[0]
    assert CATEGORIES[int(cal.argmax())] == "home_garden" and CATEGORIES[int(raw.argmax())] == "furniture"
    d = decide(raw, calibrated=cal, is_portrait=False, s=VisionSettings(category_min_confidence=0.0))
    assert d["category"] == "furniture"
    assert d["category_confidence"] == round(float(cal[CATEGORIES.index("furniture")]), 4) < raw.max()
    gated = decide(raw, calibrated=cal, is_portrait=False, s=VisionSettings(category_min_confidence=0.5))
    assert raw.max() >= 0.5 and gated["reason"] == "low_confidence"  # the gate reads the calibrated mass


def test_review_maps_a_vest_and_a_shoe_shop_to_fashion():
    by = {r["name"]: r for r in load_table()[2]}
    assert by["bulletproof vest"]["category"] == "fashion" and by["shoe store"]["category"] == "fashion"


def test_portrait_needs_a_big_confident_face():
    s = VisionSettings(portrait_face_share=0.02, portrait_face_score=0.5)
    big = {"label": "FACE_FEMALE", "score": 0.8, "box": [0, 0, 40, 40]}
    assert portrait([big], (200, 200, 3), s)
    assert not portrait([{**big, "box": [0, 0, 10, 10]}], (200, 200, 3), s)  # a face in the background
    assert not portrait([{**big, "score": 0.3}], (200, 200, 3), s)
    assert not portrait([{**big, "label": "FEET_EXPOSED"}], (200, 200, 3), s)


def test_world_domain_accepts_its_own_images_only():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(3, 32))
    x = np.concatenate([base[i] + 0.1 * rng.normal(size=(50, 32)) for i in range(3)])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    d = WorldDomain.fit(x.astype(np.float32), np.repeat(np.arange(3), 50), quantile=0.01)
    far = rng.normal(size=(20, 32))
    far /= np.linalg.norm(far, axis=1, keepdims=True)
    assert (d.cosine(x) >= d.min_cosine).mean() >= 0.98
    assert (d.cosine(far.astype(np.float32)) >= d.min_cosine).sum() == 0
    again = WorldDomain.from_json(json.loads(json.dumps(d.to_json())))
    np.testing.assert_allclose(again.cosine(x), d.cosine(x), atol=1e-4)


def test_image_quality_measures_move_the_right_way():
    rng = np.random.default_rng(1)
    sharp = (rng.random((600, 900, 3)) * 255).astype(np.uint8)
    sharp = cv2.GaussianBlur(sharp, (0, 0), 1.0)
    q = image_quality(sharp)
    assert set(q) == {"sharpness", "exposure", "resolution", "clutter", "score"}
    assert image_quality(cv2.GaussianBlur(sharp, (0, 0), 8))["sharpness"] < q["sharpness"]
    assert image_quality(np.full((600, 900, 3), 252, np.uint8))["exposure"] < 0.1  # blown out
    assert image_quality(cv2.resize(sharp, (150, 100)))["resolution"] < q["resolution"]
    assert image_quality(np.full((600, 900, 3), 128, np.uint8))["clutter"] == 1.0  # a plain background
