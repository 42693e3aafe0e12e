"""Image decoding rejects bad input with the right 4xx; the perceptual hash survives re-encoding."""

from __future__ import annotations

import base64
import io

import cv2
import numpy as np
import pytest
from PIL import Image

from batch.world.images import draw_product_image
from engines.vision.config import reset_vision_settings
from engines.vision.errors import VisionInputError
from engines.vision.imaging import b64decode_image, decode_image, hamming, phash


def encode(img: np.ndarray, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.fixture()
def product():
    return draw_product_image(1, 4, seed=11)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_decode_accepted_formats(product, fmt):
    img = decode_image(encode(product, fmt))
    assert img.shape == product.shape and img.dtype == np.uint8


@pytest.mark.parametrize("raw, status", [
    (b"", 400),
    (b"this is not an image at all", 415),
    (b"GIF89a" + b"\x00" * 100, 415),
])
def test_decode_rejects(raw, status):
    with pytest.raises(VisionInputError) as e:
        decode_image(raw)
    assert e.value.http_status == status and e.value.field == "image"


def test_truncated_file_is_400(product):
    raw = encode(product, "PNG")
    with pytest.raises(VisionInputError) as e:
        decode_image(raw[: len(raw) // 2])
    assert e.value.http_status == 400


def test_gif_is_415(product):
    with pytest.raises(VisionInputError) as e:
        decode_image(encode(product, "GIF"))
    assert e.value.http_status == 415


def test_huge_dimensions_are_413(monkeypatch):
    monkeypatch.setenv("JAIKOD_VISION_MAX_IMAGE_SIDE", "500")
    reset_vision_settings()
    try:
        raw = encode(np.zeros((600, 20, 3), np.uint8), "PNG")  # small file, too tall
        with pytest.raises(VisionInputError) as e:
            decode_image(raw)
        assert e.value.http_status == 413
    finally:
        monkeypatch.undo()
        reset_vision_settings()


def test_too_many_bytes_is_413(monkeypatch, product):
    monkeypatch.setenv("JAIKOD_VISION_MAX_IMAGE_BYTES", "100")
    reset_vision_settings()
    try:
        with pytest.raises(VisionInputError) as e:
            decode_image(encode(product))
        assert e.value.http_status == 413
    finally:
        monkeypatch.undo()
        reset_vision_settings()


def test_tiny_image_is_422():
    with pytest.raises(VisionInputError) as e:
        decode_image(encode(np.zeros((8, 8, 3), np.uint8)))
    assert e.value.http_status == 422


def test_base64_variants(product):
    raw = encode(product)
    for text in (base64.urlsafe_b64encode(raw).decode().rstrip("="), base64.b64encode(raw).decode(),
                 "data:image/png;base64," + base64.b64encode(raw).decode()):
        assert b64decode_image(text) == raw
    with pytest.raises(VisionInputError) as e:
        b64decode_image("%%% not base64 ###")
    assert e.value.http_status == 400


def test_phash_reupload_close_other_product_far(product):
    reup = cv2.resize(product, (150, 150), interpolation=cv2.INTER_CUBIC)
    reup = decode_image(encode(reup, "JPEG", quality=60))
    other = draw_product_image(1, 4, seed=12)  # same category and grade, another listing
    assert hamming(phash(product), phash(reup)) <= 6
    assert hamming(phash(product), phash(other)) > 12
    assert hamming(phash(product), phash(product)) == 0
