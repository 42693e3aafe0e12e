"""Bad artifacts and an unreachable registry, caused for real.

* A newly published model version whose booster is truncated, or has random bytes in the middle (same
  size: a reader without checksums could load it and score wrong), and a new snapshot whose vector index
  is random bytes and whose keyword index is truncated: each new version is refused (logged, counted in
  ``jaikod_artifacts_refused_total``, named in ``/readyz``) and the version loaded before keeps serving.
  In-process app (``TestClient``) over a private copy of the tiny world's home.
* The registry unreachable at start (nothing listens on its port), real uvicorn: the service starts
  from the local cache of the last good model written by an earlier start (``model_source: cache`` in
  ``/readyz`` and ``/v1/admin/status``); a damaged cache is refused (clear not-ready).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest
import redis

from tests.reliability.conftest import ADMIN_TOKEN, LiveServer, free_port, server_env


@pytest.fixture()
def private_home(tiny_world, redis_server, tmp_path, monkeypatch):
    """A copy of the tiny world's home (registry and index folders changed here only) over its Redis db
    (restored afterwards)."""
    from gpu_core.device import reset_backend
    from gpu_core.settings import reset_settings

    tiny_world.ensure_redis(redis_server)
    home = tmp_path / "home"
    shutil.copytree(tiny_world.home, home, ignore=shutil.ignore_patterns("lake", "model_cache"), symlinks=True)
    (home / "lake").symlink_to(tiny_world.lake, target_is_directory=True)
    monkeypatch.setenv("JAIKOD_HOME", str(home))
    monkeypatch.setenv("JAIKOD_REDIS_URL", tiny_world.redis_url)
    monkeypatch.setenv("JAIKOD_DEVICE", os.environ.get("JAIKOD_DEVICE", "cpu"))
    monkeypatch.setenv("JAIKOD_REQUEST_BUDGET_MS", "5000")  # about artifacts, not deadlines
    reset_settings()
    reset_backend()
    yield home
    tiny_world.restore(redis_server)
    reset_settings()


def _refused(client, kind: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f'jaikod_artifacts_refused_total{{kind="{kind}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:  # random bytes in the middle, same size
        mid = len(data) // 2
        path.write_bytes(data[:mid] + os.urandom(min(256, len(data) - mid)) + data[mid + 256:])


def test_corrupt_model_and_index_are_refused_and_the_previous_ones_keep_serving(private_home, world_users):
    from fastapi.testclient import TestClient

    from gpu_core.feature_store import POINTER, OnlineStore, snap_key
    from gpu_core.registry import PRODUCTION, RANKER, RANKER_FILES, Registry
    from gpu_core.settings import get_settings
    from online.app import create_app

    reg = Registry()
    old = reg.require(RANKER, PRODUCTION)
    src = reg.download(old)
    with TestClient(create_app(settings=get_settings(), refresher=False, services=False)) as client:
        state = client.app.state.services.state
        assert state.models.get(PRODUCTION).label == old.label
        # ---- models: a truncated booster, then one with random bytes in place (same size)
        for n, how in enumerate(("truncate", "random")):
            bad = private_home / f"bad-model-{how}"
            shutil.copytree(src, bad)
            _damage(bad / RANKER_FILES["ctr" if n == 0 else "cvr"], how)
            mv = reg.client.create_model_version(RANKER, source=bad.as_uri(), run_id=old.run_id)
            reg.set_alias(RANKER, PRODUCTION, mv.version)
            assert not state.models.refresh()
            assert not state.models.refresh()  # refused once: not loaded, logged or counted again
            assert state.models.get(PRODUCTION).label == old.label
            assert state.models.refused[PRODUCTION]["version"] == str(mv.version)
            assert "checksum mismatch" in state.models.refused[PRODUCTION]["reason"]
            assert _refused(client, "model") == n + 1
            r = client.post("/v1/feed", json={"user_id": world_users[0]})
            assert r.status_code == 200 and r.json()["model_version"] == old.label
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["model_refused"][PRODUCTION]["serving"] == old.version
        # ---- indexes: a new snapshot whose vector index is random bytes and keyword index truncated
        r = redis.Redis.from_url(get_settings().redis_url)
        v_old = OnlineStore(r).current_version()
        v_new = f"{v_old}-bad"
        pipe = r.pipeline(transaction=False)
        for key in r.scan_iter(match=snap_key(v_old, "*"), count=1000):
            pipe.restore(snap_key(v_new, key.decode().split(":", 3)[3]), 0, r.dump(key), replace=True)
        pipe.execute()
        idx_root = get_settings().artifacts_dir / "index"
        shutil.copytree(idx_root / v_old, idx_root / v_new)
        _damage(idx_root / v_new / "vectors.faiss", "random")
        _damage(idx_root / v_new / "search" / "docs.npz", "truncate")
        before = state.indexes.keyword
        r.set(POINTER, v_new)
        assert state.ensure_snapshot(OnlineStore(r).current_version()).version == v_new  # the new mirror
        assert state.indexes.version == v_old and state.indexes.keyword is before
        assert state.indexes.refused["version"] == v_new and "checksum mismatch" in state.indexes.refused["reason"]
        assert _refused(client, "index") == 1
        for path, body in (("/v1/search", {"user_id": world_users[0], "query": "iphone"}),
                           ("/v1/feed", {"user_id": world_users[1]})):
            res = client.post(path, json=body)
            assert res.status_code == 200, res.text
            used = res.json()["fallbacks_used"]
            assert "keyword_index_down" not in used and "vector_index_down" not in used, used
        ready = client.get("/readyz").json()
        assert ready["checks"]["indexes"] and ready["index_refused"]["serving"] == v_old
        assert ready["snapshot_version"] == v_new


def test_damaged_model_cache_is_refused(private_home, tmp_path):
    """No registry and a cache whose booster was damaged: refused, a clear not-ready (no model)."""
    from gpu_core.device import backend
    from gpu_core.registry import PRODUCTION, RANKER, RANKER_FILES, Registry
    from gpu_core.settings import get_settings
    from online.state import ModelCache, ModelHolder

    reg = Registry()
    ref = reg.require(RANKER, PRODUCTION)
    cache = ModelCache(tmp_path / "cache")
    cache.save(reg.download(ref), ref)
    assert cache.load(backend()).label == ref.label  # a good copy loads
    _damage(cache.root / RANKER_FILES["ctr"], "random")
    dead = Registry(settings=get_settings().model_copy(update={"mlflow_uri": f"http://127.0.0.1:{free_port()}"}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        mp.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
        holder = ModelHolder(dead, backend(), cache.root)
        holder.refresh()
    assert holder.get(PRODUCTION) is None and holder.source is None
    assert holder.unavailable and "model cache refused" in holder.error and "checksum mismatch" in holder.error


def test_registry_unreachable_at_start_serves_the_cached_last_good_model(tiny_world, redis_server, tmp_path,
                                                                        world_users):
    tiny_world.ensure_redis(redis_server)
    cache = tmp_path / "model_cache"
    first = LiveServer(server_env(tiny_world, model_cache=cache), tmp_path / "first.log")
    try:
        first.wait_ready()
        ready = httpx.get(f"{first.base}/readyz", timeout=30).json()
        assert ready["model_source"] == "registry"
        label = ready["model_version"]
    finally:
        first.stop()
    assert (cache / "cache.json").exists()  # written when the model loaded OK
    env = server_env(tiny_world, model_cache=cache, mlflow_uri=f"http://127.0.0.1:{free_port()}")
    env.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="2")
    server = LiveServer(env, tmp_path / "uvicorn.log")
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.base, timeout=30) as c:
            ready = c.get("/readyz").json()
            assert ready["ready"] and ready["model_source"] == "cache" and ready["registry"] == "unavailable"
            assert ready["model_version"] == label
            status = c.get("/v1/admin/status", headers={"X-Admin-Token": ADMIN_TOKEN}).json()
            assert status["model_source"] == "cache"
            r = c.post("/v1/feed", json={"user_id": world_users[0], "limit": 10})
            assert r.status_code == 200 and r.json()["model_version"] == label
            assert "model_unavailable" not in r.json()["fallbacks_used"]
    finally:
        server.stop()
