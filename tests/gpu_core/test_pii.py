"""Sealing at rest (gpu_core.pii.seal): what opens, what does not, and the dead-letter entry built on it."""

from __future__ import annotations

import pytest

from gpu_core.pii import SEAL_OVERHEAD, SealError, seal, unseal
from gpu_core.settings import Settings
from gpu_core.streams import dead_letter_fields, dead_letter_payload, dead_letter_size

KEY_A = Settings(pii_key="a" * 64)
KEY_B = Settings(pii_key="b" * 64)
PAYLOAD = b'{"event_id": "0812345678-1", "session_id": "somchai@example.co.th", "query": "call 0812345678"}'


def test_seal_opens_with_its_context_and_key_only():
    blob = seal(PAYLOAD, b"1-0", KEY_A)
    assert b"0812345678" not in blob and b"somchai" not in blob
    assert len(blob) == len(PAYLOAD) + SEAL_OVERHEAD
    assert unseal(blob, b"1-0", KEY_A) == PAYLOAD
    assert seal(PAYLOAD, b"1-0", KEY_A) != blob  # a fresh nonce each time
    with pytest.raises(SealError):
        unseal(blob, b"2-0", KEY_A)  # moved to another entry
    with pytest.raises(SealError):
        unseal(blob, b"1-0", KEY_B)  # another deployment's key
    damaged = blob[:20] + bytes([blob[20] ^ 1]) + blob[21:]
    with pytest.raises(SealError):
        unseal(damaged, b"1-0", KEY_A)
    with pytest.raises(SealError):
        unseal(PAYLOAD, b"1-0", KEY_A)  # plaintext is not a sealed value


def test_dead_letter_entry_is_sealed_and_opens_back(monkeypatch, tmp_path):
    monkeypatch.setenv("JAIKOD_HOME", str(tmp_path))
    from gpu_core.settings import reset_settings

    reset_settings()
    try:
        fields = dead_letter_fields(PAYLOAD, "product_id is not an int64 id", "1700000000000-3", 1)
        assert b"0812345678" not in b"".join(v if isinstance(v, bytes) else v.encode() for v in fields.values())
        as_read = {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in fields.items()}  # as XRANGE
        assert dead_letter_payload(as_read) == PAYLOAD
        assert dead_letter_size(as_read) == len(PAYLOAD)
        with pytest.raises(SealError):
            dead_letter_payload({**as_read, b"source_id": b"1700000000000-4"})
        legacy = {b"e": PAYLOAD, b"reason": b"x", b"source_id": b"1-0"}  # written before the seal
        assert dead_letter_payload(legacy) == PAYLOAD and dead_letter_size(legacy) == len(PAYLOAD)
    finally:
        reset_settings()
