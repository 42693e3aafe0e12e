"""Copies of the tiny world's lake for tests that change or move it."""

from __future__ import annotations

import shutil
from pathlib import Path

KEEP_DAYS = 8


def copy_lake(src: Path, dst: Path, days: int = KEEP_DAYS) -> Path:
    """The tiny lake's tables and its last ``days`` event partitions (no features)."""
    for t in ("users", "sellers", "products"):
        p = src / t
        (shutil.copytree if p.is_dir() else shutil.copy2)(p, dst / t)
    parts = sorted((src / "events").glob("date=*"))[-days:]
    for p in parts:
        shutil.copytree(p, dst / "events" / p.name)
    return dst
