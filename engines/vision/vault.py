"""Privacy of faces for eKYC: keyed, non-reversible face records and encrypted, time-limited retention.

The stored record is ``HMAC-SHA256(key, quantised face vector)``; with retention enabled the original
uploads are encrypted with AES-256-GCM into the cold-storage folder and :func:`purge_cold_storage`
deletes them after ``retention_days`` (30). The cold store may be a folder or an ``s3://`` prefix on the
lake's object store (:mod:`gpu_core.lake`): there the vault also sets a bucket lifecycle rule expiring the
prefix after ``retention_days`` (the seed's Glacier tier: the store deletes on its own, the purge job is a
second line), and only ciphertext ever reaches the bucket (encryption happens here, before the PUT). Keys come from settings (hex) or from 0600 key files
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
from gpu_core.lake import AnyPath, LakePath, lake_path
from gpu_core.settings import get_settings

COLD_RULE_ID = "jaikod-ekyc-cold-retention"


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
        self.root = cold_root(self.s)
        self._rule_set = False

    def record(self, vector: np.ndarray) -> str:
        """HMAC-SHA256 of the face vector quantised to int8 steps of 1/16 (not reversible without the key)."""
        q = np.clip(np.round(np.asarray(vector, np.float32) * 16), -127, 127).astype(np.int8)
        return hmac.new(self._hmac_key, q.tobytes(), hashlib.sha256).hexdigest()

    def retain(self, blobs: list[bytes]) -> AnyPath | None:
        """AES-256-GCM encrypt the uploads into one file (nonce || ciphertext); None when disabled."""
        if not self.s.retention_enabled:
            return None
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        aes = AESGCM(_key(self.s.retention_key, "cold_storage"))
        payload = orjson.dumps([b.hex() for b in blobs])
        nonce = os.urandom(12)
        name = uuid.uuid4().hex
        self.root.mkdir(parents=True, exist_ok=True)
        if isinstance(self.root, LakePath) and not self._rule_set:
            self.root.expire_after(self.s.retention_days, COLD_RULE_ID)
            self._rule_set = True
        path = self.root / f"{name}.bin"
        path.write_bytes(nonce + aes.encrypt(nonce, payload, name.encode()))
        return path

    def open(self, path: AnyPath | str) -> list[bytes]:
        """Decrypt a retained file (for an audit)."""
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        path = lake_path(path)
        data = path.read_bytes()
        aes = AESGCM(_key(self.s.retention_key, "cold_storage"))
        plain = aes.decrypt(data[:12], data[12:], path.stem.encode())
        return [bytes.fromhex(h) for h in orjson.loads(plain)]


def cold_root(settings: VisionSettings | None = None) -> AnyPath:
    """The cold store: ``cold_storage_dir`` (a folder or ``s3://`` prefix), default ``<home>/cold_storage/ekyc``."""
    s = settings or get_vision_settings()
    return lake_path(s.cold_storage_dir) if s.cold_storage_dir else get_settings().home / "cold_storage" / "ekyc"


def purge_cold_storage(root: str | Path | None = None, older_than_days: int = 30, *, now: float | None = None) -> int:
    """Delete retained eKYC files older than ``older_than_days`` (by mtime: an object's last write); returns
    how many."""
    root = lake_path(root) if root is not None else cold_root()
    if not root.is_dir():
        return 0
    cutoff = (time.time() if now is None else now) - older_than_days * 86400
    n = 0
    for p in root.glob("*.bin"):
        if p.stat().st_mtime < cutoff:
            p.unlink(missing_ok=True)
            n += 1
    return n
