"""Personal data at rest: a keyed hash (HMAC-SHA-256, truncated) for any user-chosen id or text that a
store keeps only to match or count, never to read back (event ids in Redis key names, queries in the
replay log and the lake). The key is ``settings.pii_key``, else a random key generated once into
``<home>/pii_key`` (mode 0600) and shared by every process of a deployment, so the service, the stream
processor and the batch jobs hash the same text to the same value.

    >>> pseudonym("0812345678")          # 'h:3f1c...' (24 hex digits), stable per deployment
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
DIGITS = 24  # 96 bits: collisions are out of reach for the volumes a marketplace logs
KEY_FILE = "pii_key"
_lock = threading.Lock()
_keys: dict[str, bytes] = {}


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
