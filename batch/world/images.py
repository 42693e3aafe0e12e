"""Procedurally drawn product photos: the shape and palette say the category, wear says the condition.

Each of the 12 categories has its own silhouette (t-shirt, screen, phone, house, ...) and colour
palette; worse condition grades add noise, scratches, dark stains and fade the colours toward grey.
A seed varies position, size and colour, so two listings of one category never look identical.

    >>> img = draw_product_image(category=1, condition_grade=4, seed=7)   # uint8 [64, 64, 3]
"""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from gpu_core.schema import CATEGORIES, CONDITION_GRADES

# (background RGB, foreground RGB) per category code, in CATEGORIES order.
PALETTES: tuple[tuple[tuple[int, int, int], tuple[int, int, int]], ...] = (
    ((250, 228, 236), (214, 51, 132)),  # fashion: pink / magenta t-shirt
    ((220, 230, 245), (30, 40, 70)),  # electronics: pale blue / dark screen
    ((235, 235, 235), (20, 20, 20)),  # mobile_phones: light grey / black phone
    ((225, 245, 220), (40, 140, 50)),  # home_garden: pale green / green house-plant
    ((255, 248, 205), (250, 160, 30)),  # baby_kids: cream / orange bubbles
    ((200, 235, 255), (230, 90, 20)),  # sports: sky / orange ball
    ((245, 235, 215), (120, 70, 30)),  # books_hobbies: paper / brown book stack
    ((215, 215, 200), (60, 60, 60)),  # vehicles_parts: concrete / dark wheel
    ((255, 235, 245), (170, 60, 200)),  # beauty: blush / purple bottle
    ((205, 238, 230), (150, 95, 55)),  # pets: mint / brown paw
    ((40, 30, 70), (240, 200, 40)),  # collectibles: night blue / gold star
    ((235, 225, 205), (110, 60, 20)),  # furniture: beige / walnut chair
)
assert len(PALETTES) == len(CATEGORIES)


def _shape_mask(category: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Boolean silhouette in normalised coordinates (x, y in about -1..1, y down)."""
    ax, ay = np.abs(x), np.abs(y)
    r = np.sqrt(x * x + y * y)
    if category == 0:  # t-shirt: body + sleeves
        body = (ax < 0.45) & (y > -0.6) & (y < 0.8)
        sleeves = (ax < 0.85) & (y > -0.6) & (y < -0.15)
        neck = (r < 0.2) & (y < -0.45)
        return (body | sleeves) & ~neck
    if category == 1:  # screen on a stand
        screen = (ax < 0.85) & (y > -0.6) & (y < 0.35)
        stand = (ax < 0.12) & (y >= 0.35) & (y < 0.65)
        base = (ax < 0.4) & (y >= 0.65) & (y < 0.75)
        return screen | stand | base
    if category == 2:  # tall rounded phone
        return ((ax < 0.38) & (ay < 0.85)) & ~(
            (ax > 0.28) & (ay > 0.75) & ((ax - 0.28) ** 2 + (ay - 0.75) ** 2 > 0.01)
        )
    if category == 3:  # house: triangle roof + square
        roof = (y < -0.1) & (y > -0.85) & (ax < (y + 0.85) * 1.1)
        walls = (ax < 0.6) & (y >= -0.1) & (y < 0.8)
        return roof | walls
    if category == 4:  # bubbles / toy balls
        c = [(-0.45, -0.35, 0.3), (0.4, -0.3, 0.35), (0.0, 0.4, 0.4)]
        return np.any([(x - cx) ** 2 + (y - cy) ** 2 < rr * rr for cx, cy, rr in c], axis=0)
    if category == 5:  # ball with a stripe (stripe is cut out)
        return (r < 0.8) & ~(np.abs(y - 0.3 * x) < 0.08)
    if category == 6:  # stack of books
        bars = np.zeros_like(x, dtype=bool)
        for k, (w, y0) in enumerate(((0.8, 0.45), (0.65, 0.05), (0.75, -0.35))):
            bars |= (np.abs(x - 0.08 * (k - 1)) < w) & (np.abs(y - y0) < 0.17)
        return bars
    if category == 7:  # wheel: ring + hub
        return ((r < 0.85) & (r > 0.55)) | (r < 0.18)
    if category == 8:  # bottle: body + neck + cap
        body = (ax < 0.35) & (y > -0.1) & (y < 0.85)
        neck = (ax < 0.14) & (y > -0.5) & (y <= -0.1)
        cap = (ax < 0.2) & (y > -0.8) & (y <= -0.5)
        return body | neck | cap
    if category == 9:  # paw: pad + 4 toes
        pad = (x / 0.5) ** 2 + ((y - 0.35) / 0.4) ** 2 < 1
        toes = [(-0.55, -0.2), (-0.2, -0.55), (0.2, -0.55), (0.55, -0.2)]
        return pad | np.any([(x - cx) ** 2 + (y - cy) ** 2 < 0.04 for cx, cy in toes], axis=0)
    if category == 10:  # five-pointed star
        theta = np.arctan2(y, x) + np.pi / 2
        return r < 0.35 + 0.5 * np.maximum(np.cos(5 * theta), 0.0) ** 2
    if category == 11:  # chair: back, seat, legs
        back = (np.abs(x + 0.4) < 0.1) & (y > -0.85) & (y < 0.1)
        seat = (np.abs(x) < 0.5) & (np.abs(y - 0.1) < 0.09)
        legs = ((np.abs(x + 0.4) < 0.08) | (np.abs(x - 0.4) < 0.08)) & (y > 0.1) & (y < 0.85)
        return back | seat | legs
    raise ValueError(f"unknown category code {category}")


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    lin = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    y, x = np.meshgrid(lin, lin, indexing="ij")
    y.setflags(write=False)
    x.setflags(write=False)
    return y, x


def draw_product_image(category: int, condition_grade: int, seed: int, size: int = 64) -> np.ndarray:
    """Draw one product photo, uint8 [size, size, 3].

    ``category`` is a code of CATEGORIES, ``condition_grade`` a code of CONDITION_GRADES
    (0 = for parts ... 4 = new). Deterministic for (category, condition_grade, seed, size).
    """
    if not 0 <= category < len(CATEGORIES):
        raise ValueError(f"category code out of range: {category}")
    if not 0 <= condition_grade < len(CONDITION_GRADES):
        raise ValueError(f"condition grade out of range: {condition_grade}")
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(category), int(condition_grade), int(size)])
    bg, fg = (np.asarray(c, dtype=np.float32) for c in PALETTES[category])
    bg = np.clip(bg + rng.normal(0, 10, 3), 0, 255)
    fg = np.clip(fg + rng.normal(0, 18, 3), 0, 255)

    # Jittered placement and scale of the silhouette.
    cx, cy = rng.uniform(-0.15, 0.15, 2)
    scale = rng.uniform(0.8, 1.05)
    y, x = _grid(size)
    mask = _shape_mask(category, (x - cx) / scale, (y - cy) / scale)

    img = np.empty((size, size, 3), dtype=np.float32)
    img[:] = bg
    # soft vertical lighting gradient so the foreground is not flat
    shade = 1.0 + 0.15 * (-(y - cy))[..., None]
    img[mask] = np.clip(fg * shade[mask], 0, 255)

    wear = (len(CONDITION_GRADES) - 1 - condition_grade) / (len(CONDITION_GRADES) - 1)  # 0 new .. 1 parts
    if wear > 0:
        # fading toward grey
        grey = img.mean(axis=2, keepdims=True)
        fade = 0.55 * wear
        img = (img * (1 - fade) + (0.5 * grey + 0.5 * 170.0) * fade).astype(np.float32)
        # scratches: bright thin lines across the item
        n_scratch = int(round(10 * wear))
        steps = np.linspace(0.0, 1.0, 2 * size)
        for _ in range(n_scratch):
            p0 = rng.uniform(0.1, 0.9, 2) * size
            p1 = p0 + rng.normal(0, 0.35, 2) * size
            pts = np.clip((p0[None, :] + steps[:, None] * (p1 - p0)[None, :]).astype(int), 0, size - 1)
            img[pts[:, 1], pts[:, 0]] = 235.0
        # dark stains
        for _ in range(int(round(4 * wear))):
            sx, sy = rng.uniform(-0.8, 0.8, 2)
            sr = rng.uniform(0.05, 0.18)
            stain = (x - sx) ** 2 + (y - sy) ** 2 < sr * sr
            img[stain] *= 0.55
    # sensor noise: a little on every photo, much more on worn items
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(3.0 + 28.0 * wear)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_product_images(
    out_dir: Path,
    product_ids: np.ndarray,
    categories: np.ndarray,
    grades: np.ndarray,
    seed: int,
    size: int = 64,
) -> int:
    """Draw and save ``<out_dir>/<product_id>.png`` for each product (a local folder or a prefix on object
    storage, one PUT per image); returns the count written."""
    if isinstance(out_dir, Path):
        out_dir.mkdir(exist_ok=True)  # never re-creates a removed build folder (see generate._mkdir_inside)
    for pid, cat, grade in zip(product_ids.tolist(), categories.tolist(), grades.tolist(), strict=True):
        arr = draw_product_image(int(cat), int(grade), seed=(seed * 1_000_003 + pid) & 0x7FFFFFFF, size=size)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
        (out_dir / f"{pid}.png").write_bytes(buf.getvalue())
    return len(product_ids)
