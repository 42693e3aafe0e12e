"""Privacy of faces for eKYC: keyed, non-reversible face records and encrypted, time-limited retention.

The stored record is ``HMAC-SHA256(key, quantised face vector)``; with retention enabled the original
uploads are encrypted with AES-256-GCM into the cold-storage folder and :func:`purge_cold_storage`
deletes them after ``retention_days`` (30). Keys come from settings (hex) or from 0600 key files
under ``<home>/secrets`` created once.

    >>> vault = FaceVault()
    >>> vault.record(face_vector)          # 64 hex chars
    >>> purge_cold_storage(older_than_days=30)
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
import uuid
from pathlib import Path

import numpy as np
import orjson

from engines.vision.config import VisionSettings, get_vision_settings
from gpu_core.settings import get_settings


def _key(hex_value: str | None, name: str) -> bytes:
    """A 32-byte key: from settings (hex) or a 0600 key file under ``<home>/secrets`` created once."""
    if hex_value:
        return bytes.fromhex(hex_value)
    path = get_settings().home / "secrets" / f"{name}.key"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(32))
    return path.read_bytes()


class FaceVault:
    """Keyed face records and optional encrypted retention of the uploads."""

    def __init__(self, settings: VisionSettings | None = None):
        self.s = settings or get_vision_settings()
        self._hmac_key = _key(self.s.face_hmac_key, "face_hmac")
        self.root = self.s.cold_storage_dir or (get_settings().home / "cold_storage" / "ekyc")

    def record(self, vector: np.ndarray) -> str:
        """HMAC-SHA256 of the face vector quantised to int8 steps of 1/16 (not reversible without the key)."""
        q = np.clip(np.round(np.asarray(vector, np.float32) * 16), -127, 127).astype(np.int8)
        return hmac.new(self._hmac_key, q.tobytes(), hashlib.sha256).hexdigest()

    def retain(self, blobs: list[bytes]) -> Path | None:
        """AES-256-GCM encrypt the uploads into one file (nonce || ciphertext); None when disabled."""
        if not self.s.retention_enabled:
            return None
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        aes = AESGCM(_key(self.s.retention_key, "cold_storage"))
        payload = orjson.dumps([b.hex() for b in blobs])
        nonce = os.urandom(12)
        name = uuid.uuid4().hex
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f"{name}.bin"
        path.write_bytes(nonce + aes.encrypt(nonce, payload, name.encode()))
        return path

    def open(self, path: Path) -> list[bytes]:
        """Decrypt a retained file (for an audit)."""
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        data = Path(path).read_bytes()
        aes = AESGCM(_key(self.s.retention_key, "cold_storage"))
        plain = aes.decrypt(data[:12], data[12:], Path(path).stem.encode())
        return [bytes.fromhex(h) for h in orjson.loads(plain)]


def purge_cold_storage(root: str | Path | None = None, older_than_days: int = 30, *, now: float | None = None) -> int:
    """Delete retained eKYC files older than ``older_than_days`` (by mtime); returns how many."""
    root = Path(root) if root is not None else (
        get_vision_settings().cold_storage_dir or get_settings().home / "cold_storage" / "ekyc")
    if not root.is_dir():
        return 0
    cutoff = (time.time() if now is None else now) - older_than_days * 86400
    n = 0
    for p in root.glob("*.bin"):
        if p.stat().st_mtime < cutoff:
            p.unlink(missing_ok=True)
            n += 1
    return n
