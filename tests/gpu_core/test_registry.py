"""The registry contract: absent is None, unreachable is RegistryUnavailable; one promote/rollback; the
ranker artifact written and read by one class."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import xgboost as xgb

from gpu_core.errors import RegistryError, RegistryUnavailable
from gpu_core.registry import (
    PREVIOUS,
    PRODUCTION,
    RANKER,
    STAGING,
    RankerArtifact,
    Registry,
    promote,
    rollback,
)
from kernels.features import MODEL_FEATURES


def _booster(seed: int) -> xgb.Booster:
    rng = np.random.default_rng(seed)
    X = rng.random((200, len(MODEL_FEATURES)), dtype=np.float32)
    d = xgb.DMatrix(X, label=(X[:, 0] > 0.5).astype(np.float32), feature_names=list(MODEL_FEATURES))
    b = xgb.train({"objective": "binary:logistic", "max_depth": 2, "nthread": 1}, d, num_boost_round=4)
    b.set_attr(best_iteration="2")
    return b


@pytest.fixture()
def registry(jaikod_env, tmp_path):
    return Registry(f"sqlite:///{tmp_path / 'mlflow.db'}")


def _register(reg: Registry, tmp_path, n: int) -> list[str]:
    versions = []
    for i in range(n):
        with reg.mlflow.start_run(experiment_id=reg.experiment("t")) as run:
            d = RankerArtifact(_booster(i), _booster(i + 10), MODEL_FEATURES, {"as_of": "2026-01-01"}).save(
                tmp_path / f"art{i}")
            reg.mlflow.log_artifacts(str(d), artifact_path="ranker")
        versions.append(reg.register_dir(RANKER, run.info.run_id, "ranker").version)
    return versions


def test_artifact_roundtrip_keeps_best_iteration_and_checks_features(tmp_path):
    art = RankerArtifact(_booster(0), _booster(1), MODEL_FEATURES, {"as_of": "2026-01-01"})
    art.save(tmp_path / "r")
    back = RankerArtifact.load(tmp_path / "r", MODEL_FEATURES)
    assert RankerArtifact.best_iterations(back.ctr) == 3 and back.meta["as_of"] == "2026-01-01"
    assert RankerArtifact.read_meta(tmp_path / "r")["features"] == list(MODEL_FEATURES)
    with pytest.raises(RegistryError) as e:
        RankerArtifact.load(tmp_path / "r", MODEL_FEATURES[:-1])
    assert e.value.field == "features"
    (tmp_path / "r" / "pcvr.ubj").write_bytes(b"truncated")
    with pytest.raises(RegistryError, match="unreadable"):
        RankerArtifact.load(tmp_path / "r", MODEL_FEATURES)


def test_absent_is_none_and_promote_rollback_move_aliases(registry, tmp_path):
    assert registry.get(RANKER, PRODUCTION) is None and registry.versions(RANKER) == []
    assert registry.aliases(RANKER) == {}
    with pytest.raises(RegistryError, match="nothing to promote"):
        promote(registry)
    v1, v2 = _register(registry, tmp_path, 2)
    registry.set_alias(RANKER, STAGING, v1)
    assert promote(registry) == (v1, None)
    assert registry.get(RANKER, STAGING) is None  # promoted staging leaves nothing to canary
    registry.set_alias(RANKER, STAGING, v2)
    assert promote(registry, v2) == (v2, v1) and registry.get(RANKER, PREVIOUS).version == v1
    before = registry.aliases(RANKER)
    with pytest.raises(RegistryError) as e:  # an unknown version: a clear error, nothing changed
        promote(registry, "77")
    assert e.value.field == "version" and registry.aliases(RANKER) == before
    with pytest.raises(RegistryError, match="nothing to promote"):  # no staging left
        promote(registry)
    assert registry.aliases(RANKER) == before
    assert rollback(registry) == v1 and registry.get(RANKER, PRODUCTION).version == v1
    assert registry.get(RANKER, PREVIOUS).version == v2


def test_unreachable_registry_is_unavailable_not_absent(jaikod_env, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    reg = Registry(f"http://127.0.0.1:{port}")
    for call in (lambda: reg.get(RANKER, PRODUCTION), lambda: reg.versions(RANKER), lambda: reg.aliases(RANKER)):
        with pytest.raises(RegistryUnavailable) as e:
            call()
        assert "unavailable" in e.value.message and e.value.field == "registry"
