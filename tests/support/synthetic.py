"""Synthetic faces for tests, benchmarks and demos (no face photo dataset is available offline).

Drawn cartoon faces (blurred) are found by YuNet and embedded by SFace. Two renderings of one
``identity`` match; a real photo does not match any of them. SFace is not trained on cartoons, so
*different* synthetic identities are not reliably told apart (cosine 0.4-0.9): use a real photo
(:func:`sample_face_photo`) against a synthetic face for "different person" checks.
``yaw`` (-1..1) shifts the inner features sideways like a head turn; ``smile`` (0..1) widens the mouth;
``roll``/``shift``/``zoom`` move the whole picture rigidly (what a moved photo does).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def draw_face(identity: int, *, yaw: float = 0.0, smile: float = 0.0, roll: float = 0.0,
              shift: tuple[float, float] = (0.0, 0.0), zoom: float = 1.0, size: int = 320) -> np.ndarray:
    """RGB uint8 [size, size, 3]."""
    r = np.random.default_rng(identity)
    skin = r.uniform([160, 120, 90], [240, 200, 170])
    hair = r.uniform(10, 90, 3)
    fw, fh = r.uniform(70, 100), r.uniform(100, 130)
    ey, es = r.uniform(-25, -5), r.uniform(30, 50)
    nl, mw = r.uniform(30, 55), r.uniform(20, 45)
    img = np.empty((320, 320, 3), np.uint8)
    img[:] = r.uniform(150, 240, 3)
    cx, cy = 160.0, 170.0
    dx = 25.0 * yaw

    def p(x, y, inner=True):
        return int(cx + x + (dx if inner else 0)), int(cy + y)

    cv2.ellipse(img, p(0, 0, False), (int(fw), int(fh)), 0, 0, 360, skin.tolist(), -1)
    cv2.ellipse(img, p(0, -fh * 0.6, False), (int(fw * 1.05), int(fh * 0.5)), 0, 180, 360, hair.tolist(), -1)
    for sgn in (-1, 1):
        ex = sgn * es * (1 - 0.3 * yaw * sgn)
        cv2.ellipse(img, p(ex, ey - 10), (17, 9), 0, 0, 360, (250, 250, 250), -1)
        cv2.circle(img, p(ex, ey - 10), 6, (hair * 0.5).tolist(), -1)
        cv2.line(img, p(ex - 15, ey - 28), p(ex + 15, ey - 30), (hair * 0.8).tolist(), 4)
    cv2.line(img, p(0, ey), p(-6 + 35 * yaw, ey + nl), (skin * 0.7).tolist(), 3)
    cv2.circle(img, p(-6 + 35 * yaw, ey + nl), 7, (skin * 0.75).tolist(), -1)
    cv2.ellipse(img, p(0, ey + nl + 30), (int(mw * (1 + 1.0 * smile)), int(10 + 8 * smile)), 0, 0, 180,
                (170, 70, 70), 4)
    img = cv2.GaussianBlur(img, (15, 15), 0)
    m = cv2.getRotationMatrix2D((160, 170), roll, zoom)
    m[:, 2] += shift
    img = cv2.warpAffine(img, m, (320, 320), borderMode=cv2.BORDER_REPLICATE)
    return img if size == 320 else cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)


def sample_face_photo() -> np.ndarray | None:
    """The one real face photo available offline: matplotlib's ``grace_hopper.jpg`` (RGB), or None."""
    try:
        import matplotlib

        path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    except ImportError:
        return None
    if not path.is_file():
        return None
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
