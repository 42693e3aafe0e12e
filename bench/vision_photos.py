"""The real-photo evaluation set: photos that ship inside PyPI packages, labelled by hand in
``bench/data/vision_real_photos.json``, and the edited variants used for the duplicate benchmark.

    >>> photos = load_photos()                     # [(row, RGB uint8)], rows whose package is installed
    >>> variants = edits(photos[0][1], seed=0)     # {edit name: RGB uint8}
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from engines.vision.imaging import decode_image

LABELS = Path(__file__).resolve().parent / "data" / "vision_real_photos.json"
ROOTS = {  # source -> (module, folder inside it)
    "skimage": ("skimage", "data"),
    "sklearn": ("sklearn", "datasets/images"),
    "matplotlib": ("matplotlib", "mpl-data/sample_data"),
    "interior_photos": ("interior_photos", "images"),
    "foolbox": ("foolbox", "data"),
    "saleor": ("saleor", "static/placeholders"),
    "shuup": ("shuup", "testing/modules/sample_data/images/default"),
}
# packages that cannot go into the venv (saleor 2.10 declares Python <3.9; pip >= 24.1 refuses shuup's
# metadata): `make bench-photos` puts them under .photos/<source>/ with --no-deps; nothing is
# downloaded at run time
EXTRA = Path(__file__).resolve().parent.parent / ".photos"


def _package_dir(source: str, module: str) -> Path | None:
    """The package's folder without importing it (saleor's and shuup's __init__ would import Django)."""
    local = EXTRA / source / module
    if local.is_dir():
        return local
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def photo_path(row: dict) -> Path | None:
    module, sub = ROOTS[row["source"]]
    root = _package_dir(row["source"], module)
    if root is None:
        return None
    path = root / sub / row["file"]
    return path if path.is_file() else None


def load_photos(labels: Path = LABELS) -> tuple[list[tuple[dict, np.ndarray]], list[str]]:
    """``(photos, missing sources)``: each photo as (label row, RGB uint8); rows of absent packages left out."""
    rows = json.loads(labels.read_text())["photos"]
    out, missing = [], set()
    for row in rows:
        path = photo_path(row)
        if path is None:
            missing.add(row["source"])
            continue
        out.append((row, decode_image(path.read_bytes())))  # as the service reads an upload
    return out, sorted(missing)


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def _watermark(img: np.ndarray, text: str) -> np.ndarray:
    out = img.copy()
    h, w = out.shape[:2]
    scale = max(0.6, w / 500)
    overlay = out.copy()
    cv2.putText(overlay, text, (int(0.05 * w), int(0.9 * h)), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (255, 255, 255), max(2, int(2 * scale)), cv2.LINE_AA)
    cv2.putText(overlay, "JaiKod", (int(0.55 * w), int(0.15 * h)), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (255, 255, 255), max(2, int(2 * scale)), cv2.LINE_AA)
    return cv2.addWeighted(overlay, 0.6, out, 0.4, 0)


def edits(img: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """What a re-uploader does to a photo: crop, resize, recompress, brighten, turn a little, caption."""
    rng = np.random.default_rng(seed)
    h, w = img.shape[:2]
    c = rng.uniform(0.08, 0.12)
    y0, x0 = int(h * rng.uniform(0, c)), int(w * rng.uniform(0, c))
    crop = img[y0:y0 + int(h * (1 - c)), x0:x0 + int(w * (1 - c))]
    angle = float(rng.choice([-1, 1]) * rng.uniform(3, 5))
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    rot = cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT)
    return {
        "crop": crop,
        "resize": cv2.resize(img, (max(16, w // 2), max(16, h // 2)), interpolation=cv2.INTER_AREA),
        "jpeg_q40": _jpeg(img, 40),
        "brightness": np.clip(img.astype(np.int16) + 40, 0, 255).astype(np.uint8),
        "rotate": rot,
        "watermark": _watermark(img, f"call 08{rng.integers(10_000_000, 99_999_999)}"),
        "combo": _jpeg(_watermark(cv2.resize(crop, (max(16, crop.shape[1] * 2 // 3), max(16, crop.shape[0] * 2 // 3)),
                                             interpolation=cv2.INTER_AREA), "line: @shop"), 60),
    }
