"""What a photo's pixels say about the listing photo itself (not the item's wear): sharpness,
exposure, resolution and clutter, each in [0, 1] (1 = good), and their mean as ``score``.

* ``sharpness`` = min(1, var(Laplacian) / ``quality_sharp_laplacian``) on the grey image scaled to a
  512-px longer side (a blurred or shaken photo has little high-frequency energy);
* ``exposure`` = 1 - (share of pixels clipped black (<= 5) or white (>= 250)) - the distance of the
  mean grey level from mid-grey beyond +-0.25, floored at 0;
* ``resolution`` = min(1, shorter side / ``quality_good_side``);
* ``clutter`` = 1 - min(1, share of Canny edge pixels / ``quality_clutter_edges``) (a busy
  background is many edges).

No labelled photos of worn goods exist here, so nothing in this module claims to grade condition.
"""

from __future__ import annotations

import cv2
import numpy as np

from engines.vision.config import VisionSettings, get_vision_settings


def image_quality(image: np.ndarray, s: VisionSettings | None = None) -> dict:
    s = s or get_vision_settings()
    h, w = image.shape[:2]
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    k = 512.0 / max(h, w)
    if k < 1.0:
        grey = cv2.resize(grey, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)
    lap = float(cv2.Laplacian(grey, cv2.CV_32F).var())
    g = grey.astype(np.float32) / 255.0
    clipped = float(((grey <= 5) | (grey >= 250)).mean())
    off_mid = max(0.0, abs(float(g.mean()) - 0.5) - 0.25)
    edges = float((cv2.Canny(grey, 100, 200) > 0).mean())
    parts = {
        "sharpness": min(1.0, lap / s.quality_sharp_laplacian),
        "exposure": max(0.0, 1.0 - clipped - off_mid),
        "resolution": min(1.0, min(h, w) / s.quality_good_side),
        "clutter": 1.0 - min(1.0, edges / s.quality_clutter_edges),
    }
    out = {k: round(v, 4) for k, v in parts.items()}
    out["score"] = round(float(np.mean(list(parts.values()))), 4)
    return out
