"""Duplicates on a real photo (scikit-learn's ``flower.jpg``) with the real backbone and the service's
thresholds: each of the benchmark's 7 edits is found, a recoloured twin (the same picture with its hues
turned in CIELAB, lightness kept: what a product mock-up in another colour is) is not, though its pHash
is within the re-upload distance."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from engines.vision.config import reset_vision_settings
from engines.vision.duplicates import DuplicateIndex
from engines.vision.imaging import colour_signature, hamming, phash


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    from engines.vision.models import Backbone
    from gpu_core.settings import reset_settings

    mp = pytest.MonkeyPatch()
    mp.setenv("JAIKOD_HOME", str(tmp_path_factory.mktemp("dup_home")))
    mp.delenv("JAIKOD_VISION_BACKBONE_SIZE", raising=False)  # the size the thresholds were chosen at
    reset_settings()
    reset_vision_settings()
    yield Backbone()
    mp.undo()
    reset_settings()
    reset_vision_settings()


def recolour(img: np.ndarray, degrees: float) -> np.ndarray:
    lab = cv2.cvtColor(img, cv2.COLOR_RGB2Lab).astype(np.float32)
    a, b = lab[..., 1] - 128, lab[..., 2] - 128
    t = np.deg2rad(degrees)
    lab[..., 1], lab[..., 2] = a * np.cos(t) - b * np.sin(t) + 128, a * np.sin(t) + b * np.cos(t) + 128
    return cv2.cvtColor(np.clip(lab, 0, 255).astype(np.uint8), cv2.COLOR_Lab2RGB)


@pytest.fixture(scope="module")
def indexed(backbone):
    from sklearn.datasets import load_sample_image

    from engines.vision.models import embed

    photo = load_sample_image("flower.jpg")
    index = DuplicateIndex()
    index.add("FLOWER", embed(backbone.features([photo]))[0], phash(photo), colour_signature(photo))
    return photo, index


def search(backbone, index, img, with_colour=True):
    from engines.vision.models import embed

    return index.search(embed(backbone.features([img]))[0], phash(img), colour_signature(img) if with_colour else None)


def test_every_edit_of_a_real_photo_is_its_duplicate(backbone, indexed):
    from bench.vision_photos import edits

    photo, index = indexed
    variants = edits(photo, seed=0)
    assert len(variants) == 7
    found = {name: (search(backbone, index, img) or {}).get("listing_id") for name, img in variants.items()}
    assert found == dict.fromkeys(variants, "FLOWER")


@pytest.mark.parametrize("degrees", [90, 180])
def test_a_recoloured_twin_is_another_listing(backbone, indexed, degrees):
    photo, index = indexed
    twin = recolour(photo, degrees)
    assert hamming(phash(twin), phash(photo)) <= index.s.phash_max_distance  # same grey layout
    assert search(backbone, index, twin, with_colour=False)["listing_id"] == "FLOWER"  # the old rule: a duplicate
    assert search(backbone, index, twin) is None
