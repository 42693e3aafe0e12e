"""The production model hot-reloads when the registry alias moves, with no dropped request."""

from __future__ import annotations

import shutil
import threading

import pytest


@pytest.fixture()
def private_registry_home(served_world, tmp_path, monkeypatch):
    """A copy of the world's home (the registry database is changed here, never the session's)."""
    from gpu_core.device import reset_backend
    from gpu_core.settings import reset_settings

    home = tmp_path / "home"
    shutil.copytree(served_world.home, home, ignore=shutil.ignore_patterns("lake"), symlinks=True)
    (home / "lake").symlink_to(served_world.lake, target_is_directory=True)
    monkeypatch.setenv("JAIKOD_HOME", str(home))
    # this test is about the swap, not deadlines: a loaded CI machine must not turn requests into the
    # deadline fallback (which answers without a model, as model_version "none")
    monkeypatch.setenv("JAIKOD_REQUEST_BUDGET_MS", "5000")
    reset_settings()
    reset_backend()
    return home


def test_alias_move_hot_reloads_without_dropped_requests(private_registry_home, users):
    from fastapi.testclient import TestClient

    from gpu_core.registry import PRODUCTION, RANKER, Registry
    from gpu_core.settings import get_settings
    from online.app import create_app

    reg = Registry()
    old = reg.require(RANKER, PRODUCTION)
    # 4 hammering clients are never shed here (nor for queueing on a loaded machine)
    roomy = get_settings().model_copy(update={"max_in_flight": 16, "max_queue_ms": 60_000.0})
    with TestClient(create_app(settings=roomy, refresher=False, services=False)) as client:
        state = client.app.state.services.state
        assert state.models.get(PRODUCTION).label == old.label
        artifact_path = old.source.rsplit("/artifacts/", 1)[1]
        new = reg.register_dir(RANKER, old.run_id, artifact_path, tags={"test": "hot-reload"})
        assert new.version != old.version
        statuses, versions, errors = [], set(), []
        stop = threading.Event()

        def hammer(u: int) -> None:
            try:
                while not stop.is_set():
                    r = client.post("/v1/feed", json={"user_id": u, "limit": 10})
                    statuses.append(r.status_code)
                    versions.add(r.json().get("model_version"))
            except Exception as exc:  # noqa: BLE001 - any failure is a dropped request
                errors.append(exc)

        threads = [threading.Thread(target=hammer, args=(u,)) for u in users[:4]]
        for t in threads:
            t.start()
        try:
            reg.set_alias(RANKER, PRODUCTION, new.version)
            assert state.models.refresh()
            for _ in range(5):  # keep serving for a few more requests after the swap
                client.post("/v1/feed", json={"user_id": users[0]})
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert not errors
        assert statuses and set(statuses) == {200}
        assert versions <= {old.label, new.label}
        assert state.models.get(PRODUCTION).label == new.label
        assert client.post("/v1/feed", json={"user_id": users[0]}).json()["model_version"] == new.label
        assert not state.models.refresh()  # nothing moved since
