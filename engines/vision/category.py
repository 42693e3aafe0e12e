"""Listing category of a photo: ImageNet knowledge mapped to the marketplace, the world head only
for images like the world's drawings, and the gates that answer ``unknown``.

Per image, in order:

1. **Portrait gate**: nudenet found a face (``FACE_FEMALE``/``FACE_MALE``, score >=
   ``portrait_face_score``) whose box covers >= ``portrait_face_share`` of the image -> ``unknown``
   (reason ``person``). A listing photo is of the item; a selfie or portrait is not.
2. **World domain gate**: the cosine of the image's embedding to the nearest class centroid of the
   drawn training images is at or above the ``world_domain_quantile`` of the training images' own
   cosines -> the learned world head answers (``category_model`` = its registry version). Real
   photos sit far below (measured in ``bench``), so the world head never answers for them.
3. **ImageNet**: the category classifier's 1000-class softmax (``category_classifier``: the MobileNetV2
   backbone's own head by default; ``efficientnet_lite0``, chosen on the real photos' dev split by
   ``bench.vision_backbones``, as a second network), each class's probability added to its category
   by the reviewed table (:mod:`engines.vision.imagenet_map`); the category with the largest mass
   answers when the mass is >= ``category_min_confidence``, else ``unknown`` (reason
   ``low_confidence``). The mass is the model's probability that the photo shows an item of that
   category (a sum of softmax probabilities); the category is picked on the raw mass, its confidence
   is the mass after temperature scaling of the logits, ``T`` fitted on hand-labelled real photos
   (:mod:`engines.vision.calibration`; see :func:`decide`); animal classes count only when
   ``pet_animals_are_listings``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engines.vision.calibration import scale
from engines.vision.calibration import temperature as calibration_temperature
from engines.vision.config import VisionSettings, get_vision_settings
from engines.vision.imagenet_map import load_table
from gpu_core.schema import CATEGORIES

UNKNOWN = "unknown"
FACE_LABELS = frozenset({"FACE_FEMALE", "FACE_MALE"})


def imagenet_model(classifier: str | None = None) -> str:
    """The ``category_model`` of an ImageNet answer: the classifier and the mapping table."""
    return f"{classifier or get_vision_settings().category_classifier}_imagenet1k+imagenet_to_category"


@dataclass(frozen=True)
class WorldDomain:
    """Unit class centroids of the world head's training embeddings and the in-domain cosine."""

    centroids: np.ndarray  # float32 [k, d], unit rows
    min_cosine: float

    @classmethod
    def fit(cls, embeddings: np.ndarray, labels: np.ndarray, quantile: float) -> WorldDomain:
        cents = np.stack([embeddings[labels == c].mean(0) for c in np.unique(labels)])
        cents /= np.maximum(np.linalg.norm(cents, axis=1, keepdims=True), 1e-12)
        own = (embeddings @ cents.T).max(1)
        return cls(cents.astype(np.float32), float(np.quantile(own, quantile)))

    def cosine(self, embeddings: np.ndarray) -> np.ndarray:
        return (embeddings @ self.centroids.T).max(1)

    def to_json(self) -> dict:
        return {"centroids": np.round(self.centroids, 5).tolist(), "min_cosine": self.min_cosine}

    @classmethod
    def from_json(cls, d: dict) -> WorldDomain:
        return cls(np.asarray(d["centroids"], np.float32), float(d["min_cosine"]))


def category_mass(probs: np.ndarray, *, pet_animals: bool | None = None,
                  temperature: float | None = None) -> np.ndarray:
    """ImageNet probabilities [n, 1000] -> probability mass per marketplace category [n, 12], after
    the calibration's temperature (:mod:`engines.vision.calibration`, the category classifier's in force;
    ``temperature=1`` = raw)."""
    s = get_vision_settings()
    probs = scale(probs, calibration_temperature() if temperature is None else float(temperature))
    pet_animals = s.pet_animals_are_listings if pet_animals is None else pet_animals
    code, animal, _ = load_table()
    keep = code >= 0
    if not pet_animals:
        keep &= ~animal
    onehot = np.zeros((len(code), len(CATEGORIES)), np.float32)
    onehot[np.flatnonzero(keep), code[keep]] = 1.0
    return probs.astype(np.float32) @ onehot


def portrait(detections: list[dict], shape: tuple[int, ...], s: VisionSettings) -> bool:
    area = float(shape[0] * shape[1])
    return any(d["label"] in FACE_LABELS and d["score"] >= s.portrait_face_score
               and d["box"][2] * d["box"][3] >= s.portrait_face_share * area for d in detections)


def decide(mass: np.ndarray, *, is_portrait: bool, s: VisionSettings | None = None,
           calibrated: np.ndarray | None = None) -> dict:
    """One image's answer: ``{category, category_confidence, reason}``. The category is the argmax of
    the raw mass [12] (``temperature=1``); the confidence, and the ``unknown`` gate on it, is that
    category's **calibrated** mass (``calibrated``, after the fitted temperature; ``mass`` when None).

    Why not the argmax of the calibrated mass: softening the logits spreads probability over the long
    tail of classes, which favours the categories with many ImageNet classes (home_garden has 150)
    over the one the photo's top classes agree on; on the real photos' dev split the raw argmax was
    right more often (0.84 vs 0.81 of product photos never answered unknown; test split 0.71 both;
    ``bench.vision_accuracy``).
    """
    s = s or get_vision_settings()
    c = int(mass.argmax())
    conf = float((mass if calibrated is None else calibrated)[c])
    if is_portrait:
        return {"category": UNKNOWN, "category_confidence": round(conf, 4), "reason": "person"}
    if conf < s.category_min_confidence:
        return {"category": UNKNOWN, "category_confidence": round(conf, 4), "reason": "low_confidence"}
    return {"category": CATEGORIES[c], "category_confidence": round(conf, 4), "reason": "imagenet"}
