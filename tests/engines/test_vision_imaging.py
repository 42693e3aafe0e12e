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


# ---- inputs a phone or an editor really produces ----------------------------------------------
def _png_with_header_size(w: int, h: int) -> bytes:
    """A valid 32x32 PNG whose IHDR claims ``w`` x ``h`` (a decompression bomb costs nothing to send)."""
    import struct
    import zlib

    raw = bytearray(encode(np.zeros((32, 32, 3), np.uint8), "PNG"))
    ihdr = raw[12:29]  # b"IHDR" + 13 bytes
    ihdr[4:12] = struct.pack(">II", w, h)
    raw[12:29] = ihdr
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    return bytes(raw)


def test_decompression_bomb_header_is_413_before_decoding():
    with pytest.raises(VisionInputError) as e:
        decode_image(_png_with_header_size(50_000, 50_000))
    assert e.value.http_status == 413 and e.value.field == "image"


def test_cmyk_jpeg_is_converted(product):
    cmyk = Image.fromarray(product).convert("CMYK")
    buf = io.BytesIO()
    cmyk.save(buf, format="JPEG", quality=95)
    img = decode_image(buf.getvalue())
    assert img.shape == product.shape
    assert np.abs(img.astype(int) - product.astype(int)).mean() < 12


def test_16bit_greyscale_png_is_scaled_not_clipped():
    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(ramp).save(buf, format="PNG")  # mode I;16
    img = decode_image(buf.getvalue())
    assert img.shape == (64, 64, 3)
    assert img[0, 0, 0] < 5 and img[-1, -1, 0] > 250 and 100 < img[32, 32, 0] < 160  # a ramp, not all white


def test_transparent_png_is_on_white(product):
    rgba = np.dstack([product, np.zeros(product.shape[:2], np.uint8)])  # fully transparent
    img = decode_image(encode(rgba, "PNG"))
    assert (img == 255).all()


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_animated_image_is_its_first_frame(product, fmt):
    frames = [Image.fromarray(product), Image.fromarray(255 - product)]
    buf = io.BytesIO()
    frames[0].save(buf, format=fmt, save_all=True, append_images=frames[1:], duration=100, loop=0,
                   **({"lossless": True} if fmt == "WEBP" else {}))
    img = decode_image(buf.getvalue())
    assert np.abs(img.astype(int) - product.astype(int)).mean() < 3


def test_exif_orientation_is_applied():
    tall = np.zeros((80, 40, 3), np.uint8)
    tall[:10] = 255  # white band on top of the upright picture
    stored = Image.fromarray(np.rot90(tall, k=1).copy())  # the camera stored it turned (40 x 80)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buf = io.BytesIO()
    stored.save(buf, format="JPEG", quality=95, exif=exif)
    img = decode_image(buf.getvalue())
    assert img.shape[:2] == (80, 40)
    assert img[:8].mean() > 200 and img[20:].mean() < 40
