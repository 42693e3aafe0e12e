"""FaceVault: keyed face records, encrypted retention and its purge (pure logic, no models)."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from engines.vision.config import VisionSettings
from engines.vision.vault import FaceVault, purge_cold_storage


@pytest.fixture()
def vault(tmp_path, monkeypatch):
    from gpu_core.settings import reset_settings

    monkeypatch.setenv("JAIKOD_HOME", str(tmp_path / "home"))
    reset_settings()
    yield FaceVault(VisionSettings(retention_enabled=True, cold_storage_dir=tmp_path / "cold"))
    monkeypatch.undo()
    reset_settings()


def test_face_record_is_keyed_and_stable(vault, tmp_path):
    v = np.random.default_rng(0).normal(size=128).astype(np.float32)
    v /= np.linalg.norm(v)
    assert len(vault.record(v)) == 64
    assert vault.record(v) == vault.record(v + 1e-4)  # quantised
    assert vault.record(v) != vault.record(-v)
    other_key = FaceVault(VisionSettings(face_hmac_key="11" * 32, cold_storage_dir=tmp_path / "cold"))
    assert other_key.record(v) != vault.record(v)  # the record means nothing without the key
    key_file = tmp_path / "home" / "secrets" / "face_hmac.key"
    assert key_file.is_file() and (key_file.stat().st_mode & 0o777) == 0o600


def test_retention_encrypts_and_opens(vault):
    blobs = [b"\x89PNG\r\n\x1a\n fake id photo", b"selfie bytes"]
    path = vault.retain(blobs)
    assert path is not None and path.parent == vault.root
    data = path.read_bytes()
    assert all(b not in data for b in blobs)  # ciphertext only
    assert vault.open(path) == blobs


def test_retention_disabled_writes_nothing(tmp_path):
    v = FaceVault(VisionSettings(face_hmac_key="22" * 32, cold_storage_dir=tmp_path / "cold"))
    assert v.retain([b"x"]) is None and not (tmp_path / "cold").exists()


def test_purge_deletes_only_old_files(vault):
    paths = [vault.retain([b"a"]), vault.retain([b"b"])]
    old = time.time() - 31 * 86400
    os.utime(paths[0], (old, old))
    assert purge_cold_storage(vault.root, older_than_days=30) == 1
    assert not paths[0].exists() and paths[1].exists()
    assert purge_cold_storage(vault.root / "missing") == 0
