"""Every threshold of the seed is a named setting with the seed's default, overridable by env."""

from __future__ import annotations

import pytest

from gpu_core.settings import Settings, reset_settings


def test_seed_defaults():
    s = Settings()
    assert s.max_distance_km == 500.0
    assert s.feature_store_timeout_ms == 100.0
    assert s.psi_threshold == 0.2
    assert s.safety_threshold == 0.4
    assert s.sponsored_slots == (4, 12)
    assert s.canary_share == 0.05
    assert s.retrain_interactions == 100_000
    assert s.attribution_window_s == 3600
    assert s.train_days == 28 and s.holdout_hours == 24
    assert s.result_size == 20
    assert s.max_per_seller_run == 3
    assert s.request_budget_ms == 200.0
    assert s.redis_url == "redis://127.0.0.1:6379/0"


def test_env_overrides(monkeypatch):
    monkeypatch.setenv("JAIKOD_MAX_DISTANCE_KM", "300")
    monkeypatch.setenv("JAIKOD_SPONSORED_SLOTS", "[2, 9]")
    s = Settings()
    assert s.max_distance_km == 300.0
    assert s.sponsored_slots == (2, 9)
    reset_settings()


def test_bad_env_value_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("JAIKOD_MAX_DISTANCE_KM", "far")
    with pytest.raises(Exception, match="max_distance_km"):
        Settings()


def test_digest_changes_with_a_setting():
    assert Settings().digest() == Settings().digest()
    assert Settings(w_ctr=2.0).digest() != Settings().digest()


def test_tracking_uri_defaults_to_sqlite_under_home(tmp_path):
    s = Settings(home=tmp_path)
    assert s.tracking_uri.startswith("sqlite:///") and str(tmp_path) in s.tracking_uri
    assert s.lake_dir == tmp_path / "lake"
