"""The product mirror's id -> row look-up (a hash table since issue 16; binary search as the fallback)."""

from __future__ import annotations

import numpy as np

from online.state import ProductMirror


def _mirror(ids: np.ndarray) -> ProductMirror:
    n = len(ids)
    return ProductMirror("v1", ids, np.zeros(n, np.int64), {}, np.zeros(n, np.int64), np.zeros(n, np.int64),
                         ids[:3], np.array([str(i) for i in ids], dtype=object))


def test_index_of_finds_each_row_and_minus_one_for_unknown_ids():
    rng = np.random.default_rng(3)
    ids = np.sort(rng.choice(1_000_000, 5000, replace=False)).astype(np.int64)
    m = _mirror(ids)
    held = rng.choice(ids, 700)
    absent = np.setdiff1d(rng.integers(0, 1_000_000, 300), ids)
    query = rng.permutation(np.concatenate([held, absent, [ids[0] - 1, ids[-1] + 1]]))
    got = m.index_of(query)
    assert got.dtype == np.int64
    expect = np.array([int(np.flatnonzero(ids == q)[0]) if q in set(ids.tolist()) else -1 for q in query.tolist()])
    assert got.tolist() == expect.tolist()
    assert m.index_of(np.empty(0, np.int64)).tolist() == []


def test_index_of_on_a_mirror_with_repeated_ids_falls_back_to_binary_search():
    m = _mirror(np.array([5, 7, 7, 9], np.int64))
    assert m.index_of(np.array([9, 5, 8], np.int64)).tolist() == [3, 0, -1]
    assert m.index_of(np.array([7], np.int64))[0] in (1, 2)


def test_a_snapshot_loads_off_the_request_budget(world_env, monkeypatch):
    """The mirror is read whole with its own timeout (snapshot_load_timeout_ms), not the request path's:
    while Redis answers nothing for 0.6 s (CLIENT PAUSE), a request-path read times out after its 50 ms
    but the snapshot load waits and completes."""
    import pytest
    import redis

    from gpu_core.device import backend
    from gpu_core.feature_store import OnlineStore
    from gpu_core.settings import get_settings, reset_settings
    from online.state import ServiceState

    monkeypatch.setenv("JAIKOD_FEATURE_STORE_TIMEOUT_MS", "50")
    reset_settings()
    settings = get_settings()
    admin = redis.Redis.from_url(settings.redis_url)
    version = OnlineStore(admin).current_version()
    state = ServiceState(settings, backend(), None)
    state.store.current_version()  # connections opened before the pause
    state.bulk_store.current_version()
    admin.execute_command("CLIENT", "PAUSE", 600, "ALL")
    with pytest.raises(redis.TimeoutError):
        state.store.current_version()
    mirror = state.ensure_snapshot(version)
    assert mirror.version == version and len(mirror.ids) > 0
    assert state.context_row is not None
    state.stop()
