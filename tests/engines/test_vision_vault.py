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


def test_cold_store_on_s3_is_encrypted_and_expires_by_lifecycle_rule(s3_bucket, tmp_path, monkeypatch, photo):
    """The eKYC cold store on the lake's object store (a real S3-compatible server): the vault sets a lifecycle
    rule expiring its prefix after 30 days, the bucket holds only ciphertext, and the purge deletes by age."""
    import cv2

    from engines.vision.vault import COLD_RULE_ID
    from gpu_core.lake import LakePath, s3_client

    monkeypatch.setenv("JAIKOD_HOME", str(tmp_path / "home"))
    v = FaceVault(VisionSettings(retention_enabled=True, cold_storage_dir=f"s3://{s3_bucket}/cold/ekyc"))
    assert isinstance(v.root, LakePath)
    face = cv2.imencode(".jpg", photo)[1].tobytes()
    blobs = [face, face[::-1]]
    first, second = v.retain(blobs), v.retain([b"selfie-frame"])
    assert isinstance(first, LakePath) and str(first).startswith(f"s3://{s3_bucket}/cold/ekyc/")
    assert v.open(first) == blobs  # the audit path reads it back

    s3 = s3_client()
    rules = s3.get_bucket_lifecycle_configuration(Bucket=s3_bucket)["Rules"]
    assert [(r["ID"], r["Filter"]["Prefix"], r["Status"], r["Expiration"]["Days"]) for r in rules] == \
        [(COLD_RULE_ID, "cold/ekyc/", "Enabled", 30)]
    # at rest: no object in the bucket holds the face bytes (or any 64-byte run of them), in any encoding
    objects = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert {first.key, second.key} <= set(objects)
    stored = b"".join(s3.get_object(Bucket=s3_bucket, Key=k)["Body"].read() for k in objects)
    for needle in (face[:64], face[len(face) // 2:len(face) // 2 + 64], face[:64].hex().encode(), b"selfie-frame"):
        assert needle not in stored

    # a second vault keeps one rule (replaced, not duplicated), beside the bucket's other rules
    s3.put_bucket_lifecycle_configuration(Bucket=s3_bucket, LifecycleConfiguration={"Rules": [
        *rules, {"ID": "other", "Filter": {"Prefix": "tmp/"}, "Status": "Enabled", "Expiration": {"Days": 1}}]})
    FaceVault(VisionSettings(retention_enabled=True, cold_storage_dir=f"s3://{s3_bucket}/cold/ekyc")).retain([b"x"])
    ids = sorted(r["ID"] for r in s3.get_bucket_lifecycle_configuration(Bucket=s3_bucket)["Rules"])
    assert ids == sorted([COLD_RULE_ID, "other"])

    # the purge job on the same store: nothing is 30 days old now; 31 days from now everything is
    assert purge_cold_storage(v.root, older_than_days=30) == 0
    assert purge_cold_storage(v.root, older_than_days=30, now=time.time() + 31 * 86400) == 3
    assert not first.exists() and not any(v.root.glob("*.bin"))
