"""Canary: ~5 % of users, sticky; promotion and rollback on crafted per-version metrics."""

from __future__ import annotations

import shutil

import numpy as np
import orjson
import pytest

from gpu_core.registry import PRODUCTION, RANKER, STAGING
from gpu_core.settings import Settings
from gpu_core.streams import CANARY, CANARY_BASELINE, CANARY_LOG, VERSION_STATS
from online.canary import CanaryController, VersionStats, decide, in_canary, user_share
from online.metrics import Metrics
from online.wiring import Services

S = Settings(canary_min_requests=1000, canary_min_impressions=200, canary_max_error_rate=0.01,
             canary_max_p99_ms=200.0, canary_ctr_tolerance=0.0)


def test_share_is_about_5_percent_and_sticky():
    users = np.arange(200_000)
    chosen = np.array([in_canary(int(u), 0.05) for u in users])
    assert abs(chosen.mean() - 0.05) < 0.003  # binomial sd ~0.0005
    again = np.array([in_canary(int(u), 0.05) for u in users[:5000]])
    assert np.array_equal(again, chosen[:5000])
    assert not any(in_canary(int(u), 0.0) for u in users[:1000])
    # a larger share keeps every user of the smaller one (users stay in the canary as it grows)
    assert all(in_canary(int(u), 0.2) for u in users[chosen][:2000])
    assert 0.0 <= min(user_share(u) for u in range(100)) and max(user_share(u) for u in range(100)) < 1.0


def stats(v, requests=2000, errors=0, impressions=1000, clicks=100, p99_bucket="le50") -> VersionStats:
    return VersionStats(v, requests, errors, 0, impressions, clicks, {"le20": requests - requests // 50,
                                                                       p99_bucket: requests // 50})


def test_decide_on_crafted_metrics():
    prod = stats("p", 40_000, 40, 20_000, 2000)  # CTR 0.10
    assert decide(prod, stats("s", 999), S).action == "wait"
    assert decide(prod, stats("s", impressions=150, clicks=30), S).action == "wait"  # too few impressions
    d = decide(prod, stats("s", clicks=100), S)  # CTR equal -> not worse
    assert d.action == "promote" and "CTR 0.1000 >= production 0.1000" in d.reason
    assert decide(prod, stats("s", clicks=99), S).action == "rollback"  # CTR worse
    assert decide(prod, stats("s", clicks=99), S.model_copy(update={"canary_ctr_tolerance": 0.05})).action \
        == "promote"
    d = decide(prod, stats("s", errors=21, clicks=150), S)  # 1.05 % errors
    assert d.action == "rollback" and "error rate" in d.reason
    assert decide(prod, stats("s", errors=20, clicks=150), S).action == "promote"  # 1.0 % is within
    d = decide(prod, stats("s", clicks=150, p99_bucket="le300"), S)
    assert d.action == "rollback" and "p99 300 ms" in d.reason
    assert decide(prod, stats("s", clicks=150, p99_bucket="le200"), S).action == "promote"


@pytest.fixture()
def canary_world(tiny_world, tmp_path, monkeypatch, redis_server, redis_client):
    """A copy of the tiny world's home (its registry is mutated), state on Redis db 0."""
    from gpu_core.device import backend, reset_backend
    from gpu_core.registry import Registry
    from gpu_core.settings import get_settings, reset_settings
    from online.state import ServiceState

    home = tmp_path / "home"
    shutil.copytree(tiny_world.home, home, ignore=shutil.ignore_patterns("lake"))
    monkeypatch.setenv("JAIKOD_HOME", str(home))
    monkeypatch.setenv("JAIKOD_REDIS_URL", redis_server.url)
    monkeypatch.setenv("JAIKOD_DEVICE", "cpu")
    monkeypatch.setenv("JAIKOD_CANARY_INTERVAL_S", "0")
    monkeypatch.setenv("JAIKOD_CANARY_MIN_REQUESTS", "100")
    monkeypatch.setenv("JAIKOD_CANARY_MIN_IMPRESSIONS", "50")
    reset_settings()
    reset_backend()
    reg = Registry()
    prod = reg.require(RANKER, PRODUCTION)
    state = ServiceState(get_settings(), backend(), reg, redis_client)
    svc = Services(settings=get_settings(), metrics=Metrics(), state=state)
    yield reg, prod, state, CanaryController(svc, get_settings())
    reset_settings()
    reset_backend()


def new_staging(reg, prod) -> str:
    ref = reg.register_dir(RANKER, prod.run_id, "ranker")
    reg.set_alias(RANKER, STAGING, ref.version)
    return ref.version


def craft(r, label, requests, impressions, clicks, errors=0):
    r.hset(VERSION_STATS.format(label), mapping={"requests": requests, "errors": errors, "impressions": impressions,
                                                 "clicks": clicks, "lat:le20": requests})


def test_promotion_and_rollback_through_the_registry(canary_world, redis_client):
    reg, prod, state, ctl = canary_world
    v2 = new_staging(reg, prod)
    state.models.refresh()
    assert state.models.get(STAGING).ref.version == v2
    # staging users get the staging arm, sticky
    users = [u for u in range(2000) if in_canary(u, 0.05)]
    assert users and all(ctl.arm_for(u) == STAGING for u in users)
    assert ctl.arm_for(next(u for u in range(2000) if not in_canary(u, 0.05))) == PRODUCTION
    craft(redis_client, prod.label, 5000, 4000, 400)
    craft(redis_client, f"{RANKER}/{v2}", 50, 40, 5)
    assert ctl.tick().action == "wait" and reg.get(RANKER, STAGING).version == v2  # baseline of production
    craft(redis_client, prod.label, 6000, 5000, 500)  # since the baseline: 1000 impressions, CTR 0.10
    craft(redis_client, f"{RANKER}/{v2}", 300, 200, 22)  # CTR 0.11 >= 0.10
    d = ctl.tick()
    assert d.action == "promote" and "production 0.1000" in d.reason
    assert reg.require(RANKER, PRODUCTION).version == v2
    assert reg.require(RANKER, "previous").version == prod.version and reg.get(RANKER, STAGING) is None
    assert state.models.get(PRODUCTION).ref.version == v2 and state.models.get(STAGING) is None
    assert all(ctl.arm_for(u) == PRODUCTION for u in users)  # no staging -> no canary
    # the next candidate is worse: rolled back, production untouched
    v3 = new_staging(reg, reg.require(RANKER, PRODUCTION))
    craft(redis_client, f"{RANKER}/{v2}", 5300, 4200, 462)
    craft(redis_client, f"{RANKER}/{v3}", 10, 10, 1)
    assert ctl.tick().action == "wait"  # production's baseline for v3
    craft(redis_client, f"{RANKER}/{v3}", 300, 200, 10)  # CTR 0.05 < 0.11
    craft(redis_client, f"{RANKER}/{v2}", 6300, 5200, 572)  # since the baseline: CTR 0.11
    d = ctl.tick()
    assert d.action == "rollback" and "CTR" in d.reason
    assert reg.get(RANKER, STAGING) is None and reg.require(RANKER, PRODUCTION).version == v2
    assert reg.require(RANKER, "rejected").version == v3
    assert redis_client.hget(CANARY, "action") == b"rollback"


def test_production_is_compared_over_the_period_staging_was_measured(canary_world, redis_client):
    """Production's CTR before the staging model existed does not count: a high early CTR (the first
    minutes of traffic) would otherwise roll back a candidate as good as production."""
    reg, prod, state, ctl = canary_world
    v2 = new_staging(reg, prod)
    craft(redis_client, prod.label, 4000, 4000, 480)  # CTR 0.12 before the canary saw v2
    craft(redis_client, f"{RANKER}/{v2}", 0, 0, 0)
    d = ctl.tick()
    assert d.action == "wait" and redis_client.hget(CANARY_BASELINE, "staging") == f"{RANKER}/{v2}".encode()
    craft(redis_client, prod.label, 5000, 5000, 530)  # since then: 1000 impressions, CTR 0.05
    craft(redis_client, f"{RANKER}/{v2}", 300, 400, 24)  # CTR 0.06: below lifetime 0.106, above 0.05
    d = ctl.tick()
    assert d.action == "promote" and "production 0.0500" in d.reason, d
    assert reg.require(RANKER, PRODUCTION).version == v2
    rec = orjson.loads(redis_client.lindex(CANARY_LOG, 0))
    assert rec["production_stats"]["impressions"] == 1000 and rec["production_stats"]["clicks"] == 50


def test_model_status_shows_the_canary(canary_world, redis_client):
    from typer.testing import CliRunner

    from jaikod_cli import app

    reg, prod, state, ctl = canary_world
    v2 = new_staging(reg, prod)
    craft(redis_client, f"{RANKER}/{v2}", 42, 30, 3)
    out = CliRunner().invoke(app, ["model", "status"])
    assert out.exit_code == 0, out.output
    assert "canary" in out.output and "staging" in out.output and "42" in out.output
