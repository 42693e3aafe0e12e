"""Personal data at rest: a keyed hash (HMAC-SHA-256, truncated) for any user-chosen id or text that a
store keeps only to match or count, never to read back (event ids in Redis key names, queries in the
replay log and the lake). The key is ``settings.pii_key``, else a random key generated once into
``<home>/pii_key`` (mode 0600) and shared by every process of a deployment, so the service, the stream
processor and the batch jobs hash the same text to the same value.

What a store must give back later (a dead-lettered bus payload, for its replay) is *sealed* instead:
AES-256-GCM (``cryptography``) under a key derived from the same secret with HKDF-SHA-256 (its own
``info`` label, so the hash key and the encryption key are never the same bytes), a random 96-bit nonce
per value and a caller's context bound in as associated data (a sealed value moved to another entry does
not open). Every process that holds the PII key can open what another sealed; the store holds none of it.

    >>> pseudonym("0812345678")          # 'h:3f1c...' (24 hex digits), stable per deployment
    >>> blob = seal(b'{"event_id": "0812345678"}', b"1700000000000-0")
    >>> unseal(blob, b"1700000000000-0")  # the payload back; another context -> SealError
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
from pathlib import Path

from gpu_core.settings import Settings, get_settings

PREFIX = "h:"
SEALED = b"\x01"  # version byte of a sealed value: 1 = AES-256-GCM, 12-byte nonce, 16-byte tag
SEAL_OVERHEAD = len(SEALED) + 12 + 16  # a sealed value is this much longer than its plaintext
_SEAL_INFO = b"jaikod sealed-at-rest v1"
DIGITS = 24  # 96 bits: collisions are out of reach for the volumes a marketplace logs
KEY_FILE = "pii_key"
_lock = threading.Lock()
_keys: dict[str, bytes] = {}
_sealers: dict[bytes, object] = {}


class SealError(ValueError):
    """A sealed value that does not open: not sealed, damaged, another context, or another deployment's key."""


def pii_key(settings: Settings | None = None) -> bytes:
    s = settings or get_settings()
    if s.pii_key:
        return s.pii_key.encode()
    path = Path(s.home) / KEY_FILE
    cache = str(path)
    key = _keys.get(cache)
    if key is not None:
        return key
    with _lock:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
            try:
                os.link(tmp, path)  # the first process wins; the others read its key
            except FileExistsError:
                pass
            finally:
                tmp.unlink(missing_ok=True)
        key = path.read_text().strip().encode()
        _keys[cache] = key
        return key


def pseudonym(text: str, settings: Settings | None = None, key: bytes | None = None) -> str:
    """The keyed hash of ``text`` (``h:`` + 24 hex digits); the same text always maps to the same value."""
    mac = hmac.new(key or pii_key(settings), text.encode("utf-8", "surrogatepass"), hashlib.sha256)
    return PREFIX + mac.hexdigest()[:DIGITS]


def is_pseudonym(text: str) -> bool:
    return text.startswith(PREFIX) and len(text) == len(PREFIX) + DIGITS


def _sealer(settings: Settings | None):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    secret = pii_key(settings)
    aes = _sealers.get(secret)
    if aes is None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_SEAL_INFO).derive(secret)
        aes = _sealers[secret] = AESGCM(key)
    return aes


def seal(data: bytes, context: bytes, settings: Settings | None = None) -> bytes:
    """``data`` encrypted for rest (see the module doc); :func:`unseal` with the same ``context`` opens it."""
    nonce = secrets.token_bytes(12)
    return SEALED + nonce + _sealer(settings).encrypt(nonce, data, context)


def unseal(blob: bytes, context: bytes, settings: Settings | None = None) -> bytes:
    """The plaintext of a :func:`seal` value; :class:`SealError` when it does not open."""
    from cryptography.exceptions import InvalidTag

    if len(blob) < SEAL_OVERHEAD or blob[:1] != SEALED:
        raise SealError("not a sealed value")
    try:
        return _sealer(settings).decrypt(blob[1:13], blob[13:], context)
    except InvalidTag:
        raise SealError("sealed value does not open (damaged, another entry's, or another key)") from None
