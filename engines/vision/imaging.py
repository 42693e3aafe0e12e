"""Decode and validate uploaded images; perceptual hash and colour signature for duplicates.

Decoding is done by Pillow with a pixel cap (decompression bombs: the header's dimensions are
checked before any pixel is decoded), a full ``load()`` (truncated files fail here, not later) and a
format whitelist. Every failure is a :class:`VisionInputError` with the HTTP status the API returns.
What is accepted is normalised to what the camera saw, as RGB ``uint8``: the EXIF orientation is
applied, CMYK is converted, 16-bit greyscale is scaled to 8 bits (not clipped), transparency is
composited on white, and an animated PNG/WebP is read as its first frame.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from engines.vision.config import get_vision_settings
from engines.vision.errors import VisionInputError


def b64decode_image(data: str, *, field: str = "image_base64") -> bytes:
    """URL-safe (or standard) base64, padding optional, ``data:`` URL prefix allowed."""
    if "," in data[:100] and data.startswith("data:"):
        data = data.split(",", 1)[1]
    data = data.strip().replace("+", "-").replace("/", "_")
    data += "=" * (-len(data) % 4)
    try:
        return base64.urlsafe_b64decode(data.encode("ascii"))
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise VisionInputError("image is not valid base64", field=field, http_status=400) from exc


def decode_image(raw: bytes, *, field: str = "image") -> np.ndarray:
    """Bytes -> RGB ``uint8 [H, W, 3]``, enforcing the size, dimension and format settings."""
    s = get_vision_settings()
    if not raw:
        raise VisionInputError("image is empty (0 bytes)", field=field, http_status=400)
    if len(raw) > s.max_image_bytes:
        raise VisionInputError(f"image is {len(raw)} bytes; the limit is {s.max_image_bytes}", field=field,
                               http_status=413)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(raw))
            fmt = img.format
            w, h = img.size
            if fmt not in s.allowed_formats:
                raise VisionInputError(f"image format {fmt} is not accepted; use JPEG, PNG or WebP", field=field,
                                       http_status=415)
            if max(w, h) > s.max_image_side or w * h > s.max_image_pixels:
                raise VisionInputError(f"image is {w}x{h}; the limit is {s.max_image_side} px a side and "
                                       f"{s.max_image_pixels} pixels", field=field, http_status=413)
            if min(w, h) < s.min_image_side:
                raise VisionInputError(f"image is {w}x{h}; at least {s.min_image_side} px a side is needed",
                                       field=field, http_status=422)
            img.load()  # the first frame of an animated image
            rgb = _to_rgb(ImageOps.exif_transpose(img))
    except VisionInputError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise VisionInputError("image has too many pixels", field=field, http_status=413) from exc
    except UnidentifiedImageError as exc:
        raise VisionInputError("file is not an image (JPEG, PNG or WebP expected)", field=field,
                               http_status=415) from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise VisionInputError("image is truncated or corrupt", field=field, http_status=400) from exc
    return np.ascontiguousarray(rgb)


def _to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit greyscale: scale, don't clip at 255
        grey = np.asarray(img, dtype=np.float64)
        top = 65535.0 if grey.max() > 255 else 255.0
        grey = np.clip(grey * (255.0 / top), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32)
        alpha = rgba[:, :, 3:4] / 255.0
        return (rgba[:, :, :3] * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def phash(image: np.ndarray) -> int:
    """64-bit DCT perceptual hash (the pHash construction: 32x32 grey, top-left 8x8 DCT vs its median)."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    small = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8].reshape(-1)
    bits = low > np.median(low[1:])
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


COLOUR_BINS = 16  # hue bins of the colour signature (22.5 degrees each)
COLOUR_SIDE = 64  # the signature is read from a 64x64 sample of the image


def colour_signature(image: np.ndarray) -> np.ndarray:
    """Chroma-weighted hue histogram in CIELAB, float32 [COLOUR_BINS]: bin k holds the mean (over all
    pixels) of the chroma ``C* = hypot(a*, b*)`` of pixels whose hue angle falls in bin k (each pixel split
    linearly between its two nearest bins), so its sum is the image's mean chroma and its shape says
    which hues carry it. Lightness is left out: a brightness edit moves L* and little else, while a
    recoloured twin of a product photo moves the hue. Read from a 64x64 bilinear sample (a statistic
    of colour needs no area filter: ~0.3 ms on a 1-megapixel photo)."""
    rgb = image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)
    small = cv2.resize(rgb, (COLOUR_SIDE, COLOUR_SIDE), interpolation=cv2.INTER_LINEAR)
    lab = cv2.cvtColor(small.astype(np.float32) * np.float32(1 / 255), cv2.COLOR_RGB2Lab).reshape(-1, 3)
    a, b = lab[:, 1], lab[:, 2]
    chroma = np.hypot(a, b)
    pos = (np.arctan2(b, a) * (COLOUR_BINS / (2 * np.pi))) % COLOUR_BINS
    lo = pos.astype(np.int64) % COLOUR_BINS
    frac = pos - np.floor(pos)
    hist = (np.bincount(lo, chroma * (1 - frac), COLOUR_BINS)
            + np.bincount((lo + 1) % COLOUR_BINS, chroma * frac, COLOUR_BINS))
    return (hist / len(chroma)).astype(np.float32)


def colour_distance(x: np.ndarray, y: np.ndarray, full_chroma: float = 4.0,
                    eps: float = 3.0) -> tuple[float, float]:
    """``(chroma ratio, hue distance)`` of two :func:`colour_signature` s: ``|ln((Cx + eps) / (Cy + eps))|``
    of their mean chromas (a white hoodie vs an orange one), and the earth mover's distance between their
    hue distributions on the circle, in half-turns (0 = same hues, 1 = opposite; a blue vs a teal paint
    tub is ~0.7, an orange vs a yellow juice bottle ~0.1), scaled by ``min(1, min(Cx, Cy) / full_chroma)``:
    the hue of a nearly grey image is noise that a recompression or a brightness edit moves by a quarter
    turn, so it counts for less."""
    cx, cy = float(x.sum()), float(y.sum())
    ratio = abs(float(np.log((cx + eps) / (cy + eps))))
    if min(cx, cy) <= 0.0:
        return ratio, 0.0
    cdf = np.cumsum(x / cx - y / cy, dtype=np.float64)
    emd = float(np.abs(cdf - np.median(cdf)).sum()) * 2.0 / len(x)
    return ratio, emd * min(1.0, min(cx, cy) / full_chroma)


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()
