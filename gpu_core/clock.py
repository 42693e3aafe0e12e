"""Clocks and ids. Times are epoch milliseconds (int64) or ISO-8601 UTC strings.

Tests and replays pin the clock with :func:`frozen` so the same request can be re-scored as of its
original time.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid

_local = threading.local()


def now_ms() -> int:
    fixed = getattr(_local, "fixed_ms", None)
    return int(fixed) if fixed is not None else time.time_ns() // 1_000_000


def now_s() -> float:
    return now_ms() / 1000.0


@contextlib.contextmanager
def frozen(ms: int):
    """Pin :func:`now_ms` to ``ms`` in this thread."""
    prev = getattr(_local, "fixed_ms", None)
    _local.fixed_ms = ms
    try:
        yield
    finally:
        _local.fixed_ms = prev


def new_request_id() -> str:
    return uuid.uuid4().hex
