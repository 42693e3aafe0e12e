"""Checksums of published artifacts (the model's files, a snapshot's index folder): written by the
producer next to the files, verified by the service before any parser reads a byte, so a truncated or
damaged artifact is refused (and the version already loaded keeps serving) instead of half-loaded,
silently wrong, or crashing a native reader (faiss, xgboost).

    >>> digests = file_digests(folder, exclude={"manifest.json"})   # {"vectors.faiss": "9f2c...", ...}
    >>> verify(folder, digests)                                      # [] or ["vectors.faiss: ..."]
"""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 20


class ArtifactCorrupt(Exception):
    """An artifact's files do not match the checksums published with it."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_digests(folder: Path, exclude: set[str] | frozenset[str] = frozenset()) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` (paths relative, '/'-separated), but ``exclude``."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.relative_to(folder).as_posix() not in exclude}


def verify(folder: Path, digests: dict[str, str]) -> list[str]:
    """What is wrong with ``folder`` against ``digests`` (empty: every file present and equal)."""
    problems = []
    folder = Path(folder)
    for rel, want in sorted(digests.items()):
        p = folder / rel
        if not p.is_file():
            problems.append(f"{rel}: missing")
        elif sha256_file(p) != want:
            problems.append(f"{rel}: checksum mismatch ({p.stat().st_size} bytes)")
    return problems


def check(folder: Path, digests: dict[str, str], what: str) -> None:
    """:func:`verify`, raising :class:`ArtifactCorrupt` naming ``what`` and the bad files."""
    problems = verify(folder, digests)
    if problems:
        raise ArtifactCorrupt(f"{what} refused: " + "; ".join(problems[:5]))
