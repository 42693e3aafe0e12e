"""Continuous training: the trigger at each threshold and not below, PSI against a hand-computed value,
new-interaction counting, and a dry run over the tiny world."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest

from batch.continuous import DRIFT_FEATURES, check_trigger, count_new_interactions, run_continuous
from kernels.metrics import psi


def test_interactions_threshold_fires_at_not_below():
    assert not check_trigger(99_999, {}, retrain_interactions=100_000, psi_threshold=0.2).fire
    d = check_trigger(100_000, {}, retrain_interactions=100_000, psi_threshold=0.2)
    assert d.fire and "100,000 new interactions" in d.reasons[0]


def test_psi_threshold_fires_at_not_below():
    below = {"price_ratio": 0.1999, "distance_km": 0.05, "score": 0.19}
    assert not check_trigger(0, below, retrain_interactions=100_000, psi_threshold=0.2).fire
    for name in below:
        d = check_trigger(0, {**below, name: 0.2}, retrain_interactions=100_000, psi_threshold=0.2)
        assert d.fire and d.reasons == (f"drift: PSI({name}) = 0.200 >= 0.2",)
    assert not check_trigger(0, {"x": float("nan")}, retrain_interactions=1, psi_threshold=0.2).fire


def test_defaults_come_from_settings(jaikod_env, monkeypatch):
    from gpu_core.settings import reset_settings

    assert not check_trigger(99_999, {"f": 0.19}).fire and check_trigger(100_000, {}).fire
    monkeypatch.setenv("JAIKOD_RETRAIN_INTERACTIONS", "10")
    monkeypatch.setenv("JAIKOD_PSI_THRESHOLD", "0.5")
    reset_settings()
    assert check_trigger(10, {}).fire and not check_trigger(9, {"f": 0.49}).fire


def test_psi_matches_hand_computed_reference():
    expected = np.arange(100, dtype=float)  # quartile edges 24.75, 49.5, 74.25 -> 25 / 25 / 25 / 25
    actual = np.array([0.0] * 40 + [30.0] * 30 + [60.0] * 20 + [90.0] * 10)  # 40 / 30 / 20 / 10
    p, q = [0.25] * 4, [0.4, 0.3, 0.2, 0.1]
    hand = sum((b - a) * math.log(b / a) for a, b in zip(p, q, strict=True))
    assert hand == pytest.approx(0.2282175, abs=1e-6)
    assert psi(expected, actual, bins=4, xp=np) == pytest.approx(hand, abs=1e-9)
    assert check_trigger(0, {"price_ratio": psi(expected, actual, bins=4, xp=np)},
                         retrain_interactions=10**9, psi_threshold=0.2).fire


def test_count_new_interactions(tmp_path):
    for day, n in (("2026-03-01", 5), ("2026-03-02", 7), ("2026-03-03", 11)):
        part = tmp_path / "events" / f"date={day}"
        part.mkdir(parents=True)
        pd.DataFrame({"event_id": [f"{day}-{i}" for i in range(n)]}).to_parquet(part / "part-000.parquet")
    pd.DataFrame({"event_id": ["s1", "s2"]}).to_parquet(tmp_path / "events" / "date=2026-03-03" /
                                                       "stream-x.parquet")
    assert count_new_interactions(tmp_path, dt.date(2026, 3, 1)) == 7 + 11 + 2
    assert count_new_interactions(tmp_path, None) == 25
    assert count_new_interactions(tmp_path, dt.date(2026, 3, 3)) == 0


def test_dry_run_on_the_tiny_world(world_env, redis_server, redis_client, monkeypatch):
    from gpu_core.settings import reset_settings
    from gpu_core.streams import DRIFT_PSI

    monkeypatch.setenv("JAIKOD_REDIS_URL", redis_server.url)  # drift goes to db 0, not the world's db
    reset_settings()
    redis_client.hset(DRIFT_PSI, "stale", 0.9)  # a gauge left from an earlier run is cleared
    out = run_continuous(world_env.lake, dry_run=True)
    # a fresh install: the nightly trained on the last day and nothing came since, so there is no window
    # to compare (comparing the holdout day with the 28 training days fired at PSI 0.216 on the demo world)
    assert out.decision.new_interactions == 0 and out.decision.psi == {}
    assert not out.decision.fire and not out.trained
    assert "no events after the last training" in out.notes[0]
    assert redis_client.hgetall(DRIFT_PSI) == {}


def test_new_interactions_trigger_a_real_retrain(world_env, redis_server, tmp_path, monkeypatch):
    """A new day of events past the threshold -> ETL + training on a copy of the world -> registry."""
    import shutil

    import pandas as pd

    from gpu_core.registry import RANKER, Registry
    from gpu_core.settings import reset_settings

    home = tmp_path / "home"
    shutil.copytree(world_env.home, home, ignore=shutil.ignore_patterns("index", "cold_storage"))
    lake = home / "lake"
    last = sorted(p.name for p in (lake / "events").glob("date=*"))[-1]
    day = dt.date.fromisoformat(last.split("=", 1)[1])
    new_day = day + dt.timedelta(days=1)
    ev = pd.read_parquet(lake / "events" / last)
    ev["ts"] = ev["ts"] + pd.Timedelta(days=1)
    ev["event_id"] = "cont-" + ev["event_id"].astype(str)
    (lake / "events" / f"date={new_day}").mkdir()
    ev.to_parquet(lake / "events" / f"date={new_day}" / "part-0.parquet", index=False)
    monkeypatch.setenv("JAIKOD_HOME", str(home))
    monkeypatch.setenv("JAIKOD_REDIS_URL", redis_server.url)
    monkeypatch.setenv("JAIKOD_RETRAIN_INTERACTIONS", str(len(ev)))  # exactly at the threshold
    monkeypatch.setenv("JAIKOD_DRIFT_MIN_REQUESTS", "1")  # the tiny world's day is small; PSI is computed
    reset_settings()
    registry = Registry()
    before = len(registry.versions(RANKER))
    aliases_before = registry.aliases(RANKER)
    out = run_continuous(lake, registry=registry)
    assert out.decision.fire and out.trained
    assert out.decision.new_interactions == len(ev)
    # the new day against the last 7 training days is computed (this copy of the last day repeats every
    # user x listing pair of the day before, so user_item_similarity does move: it is not a no-drift case)
    assert set(out.decision.psi) == set(DRIFT_FEATURES) | {"score"}
    assert any("interactions" in r for r in out.decision.reasons)
    assert out.as_of == new_day.isoformat()
    train = out.train
    assert train["holdout_rows"] > 0 and train["ndcg_production"] is not None  # compared with production
    after = registry.versions(RANKER)
    if train["version"] is not None:  # better than production -> a new staging version
        assert len(after) == before + 1 and registry.aliases(RANKER)["staging"] == int(train["version"])
    else:
        assert len(after) == before and registry.aliases(RANKER) == aliases_before
    assert registry.aliases(RANKER)["production"] == aliases_before["production"]  # never auto-promoted
    # the job remembers what it trained on: nothing new since -> no interaction trigger
    again = run_continuous(lake, registry=registry, dry_run=True)
    assert again.decision.new_interactions == 0


def test_a_few_hours_of_traffic_do_not_drift_against_whole_days():
    """Live windows cover a few hours, references whole days: compared at the same hours, an unchanged
    world shows no drift on the hour features (unmatched, the same rows give PSI >> 0.2)."""
    from batch.continuous import hour_matched, hour_of_rows
    from kernels.features import MODEL_FEATURES
    from kernels.metrics import psi

    rng = np.random.default_rng(0)
    n = 20_000
    hours = rng.integers(0, 24, n) + rng.random(n)
    X = np.zeros((n, len(MODEL_FEATURES)), np.float32)
    X[:, MODEL_FEATURES.index("hour_sin")] = np.sin(hours * 2 * np.pi / 24)
    X[:, MODEL_FEATURES.index("hour_cos")] = np.cos(hours * 2 * np.pi / 24)
    X[:, MODEL_FEATURES.index("session_clicks_last_5m")] = rng.poisson(1 + (hours > 18) * 3)  # busier evenings
    assert (hour_of_rows(X) == np.floor(hours).astype(int)).mean() > 0.999
    cur = X[(hours >= 19) & (hours < 21)][:2000]  # two evening hours of "live" traffic, same world
    j = MODEL_FEATURES.index("hour_sin")
    k = MODEL_FEATURES.index("session_clicks_last_5m")
    assert psi(X[:, j], cur[:, j], bins=10, xp=np) > 0.2  # the false alarm the matching removes
    ref = hour_matched(X, cur, rng)
    assert psi(ref[:, j], cur[:, j], bins=10, xp=np) < 0.05
    assert psi(ref[:, k], cur[:, k], bins=10, xp=np) < 0.05


def _copy_home(world_env, tmp_path):
    import shutil

    home = tmp_path / "home"
    shutil.copytree(world_env.home, home, ignore=shutil.ignore_patterns("index", "cold_storage"))
    return home


def _trained_during(lake, day: dt.date, share: float = 0.1):
    """A training time during ``day``: after its first ``share`` of events."""
    import pandas as pd

    ev = pd.read_parquet(lake / "events" / f"date={day}")
    trained = ev["ts"].quantile(share).floor("min")
    assert trained.date() == day
    return trained, int(trained.value // 1_000_000)


def _events_after(lake, trained):
    """{day: events of that partition} for the partitions from ``trained``'s day on, and the count after it."""
    import pandas as pd

    out, n, n_requests = {}, 0, 0
    for part in sorted((lake / "events").glob("date=*")):
        day = dt.date.fromisoformat(part.name.split("=", 1)[1])
        if day >= trained.date():
            ev = out[day] = pd.read_parquet(part)
            after = ev["ts"] > trained
            n += int(after.sum())
            n_requests += ev.loc[after & (ev["event_type"] == "impression"), "request_id"].nunique()
    return out, n, n_requests


def _to_fashion(lake, events: dict, trained, share: float, seed: int = 0) -> None:
    """``share`` of the requests after ``trained`` get every listing swapped for a fashion one: the impression
    mix moves the way the traffic driver's ``--drift-category fashion`` moves it."""
    import pandas as pd

    from gpu_core.schema import CATEGORIES

    rng = np.random.default_rng(seed)
    products = pd.read_parquet(lake / "products")
    cat = products["category"]
    is_fashion = (cat == CATEGORIES.index("fashion")) if pd.api.types.is_numeric_dtype(cat) else (cat == "fashion")
    fashion = products.loc[is_fashion, "product_id"].to_numpy()
    assert len(fashion) > 0
    swap = {int(p): int(rng.choice(fashion)) for p in products["product_id"]}
    for day, ev in events.items():
        reqs = ev.loc[ev["ts"] > trained, "request_id"].dropna().unique()
        moved = ev["request_id"].isin(rng.choice(reqs, size=int(len(reqs) * share), replace=False))
        rows = moved & ev["product_id"].notna()
        ev = ev.copy()
        ev.loc[rows, "product_id"] = ev.loc[rows, "product_id"].map(swap)
        part = lake / "events" / f"date={day}"
        for f in part.glob("*.parquet"):
            f.unlink()
        ev.to_parquet(part / "part-0.parquet", index=False)


def _state(home, as_of: dt.date, at_ms: int) -> None:
    import json

    (home / "continuous").mkdir(exist_ok=True)
    (home / "continuous" / "state.json").write_text(json.dumps({"as_of": as_of.isoformat(), "at_ms": at_ms}))


def test_live_traffic_after_the_training_time_counts_from_its_own_day(world_env, redis_server, tmp_path, monkeypatch):
    """Events after the last training's *time* count, its own day included (a continuous retrain trains on
    the live day): too few requests -> no PSI; enough of an unchanged world -> no drift; the same
    traffic with half its requests moved to fashion listings -> drift on the category."""
    from gpu_core.registry import RANKER, Registry
    from gpu_core.settings import reset_settings

    home = _copy_home(world_env, tmp_path)
    lake = home / "lake"
    monkeypatch.setenv("JAIKOD_HOME", str(home))
    monkeypatch.setenv("JAIKOD_REDIS_URL", redis_server.url)
    reset_settings()
    registry = Registry()
    aliases = registry.aliases(RANKER)
    last = max(dt.date.fromisoformat(p.name.split("=", 1)[1]) for p in (lake / "events").glob("date=*"))

    # trained during the world's last day: the rest of that day is new, and too little for a PSI (default 500)
    trained, at_ms = _trained_during(lake, last)
    _state(home, last, at_ms)
    _, n_after, n_requests = _events_after(lake, trained)
    few = run_continuous(lake, registry=registry, dry_run=True)
    assert few.decision.new_interactions == n_after > 0
    assert few.decision.psi == {} and not few.decision.fire
    assert few.notes[0].startswith(f"{n_requests} requests after the last training (as of {last}, trained ")
    assert "< 500 (drift_min_requests)" in few.notes[0]

    # trained during day last-5: the rest of it and five more days of the same world
    trained, at_ms = _trained_during(lake, last - dt.timedelta(days=5))
    _state(home, last - dt.timedelta(days=5), at_ms)
    events, n_after, n_requests = _events_after(lake, trained)
    monkeypatch.setenv("JAIKOD_DRIFT_MIN_REQUESTS", str(n_requests))
    reset_settings()
    same = run_continuous(lake, registry=registry, dry_run=True)
    assert same.decision.new_interactions == n_after
    assert set(same.decision.psi) == set(DRIFT_FEATURES) | {"score"}
    assert not same.decision.fire, same.decision.reasons
    assert max(same.decision.psi.values()) < 0.2

    _to_fashion(lake, events, trained, share=0.5)
    shifted = run_continuous(lake, registry=registry, dry_run=True)
    assert shifted.decision.fire
    assert any(r.startswith("drift: PSI(category)") for r in shifted.decision.reasons), shifted.decision.reasons
    assert registry.aliases(RANKER) == aliases  # a dry run trains nothing

    # a candidate in the canary (staging != production, in this copy's registry): no retrain replaces it
    prod = registry.require(RANKER, "production")
    candidate = registry.register_dir(RANKER, prod.run_id, "ranker").version
    registry.set_alias(RANKER, "staging", candidate)
    waiting = run_continuous(lake, registry=registry)
    assert waiting.decision.fire and not waiting.trained
    assert f"{RANKER}/{candidate} is in the canary" in waiting.notes[-1]
    assert registry.aliases(RANKER)["staging"] == int(candidate) and len(registry.versions(RANKER)) == int(candidate)
