"""Auto-boost autopilot: the bandit beats uniform (and random) allocation on the synthetic world; a live
round flags listings in the feature store, spends within the budget and lowers bids of boosts without clicks."""

from __future__ import annotations

import time

import numpy as np
import pytest

from batch.boost import run_boost, simulate
from engines.boost import ArmStats, BoostConfig, ThompsonBooster
from engines.realtime import read_product_rt
from gpu_core.feature_store import OnlineStore
from gpu_core.schema import CONTEXT_DAILY, PRODUCT_DAILY, USER_DAILY
from gpu_core.streams import BOOST_ACTIVE, BOOST_ARMS


@pytest.fixture(scope="module")
def sim_lake(tmp_path_factory):
    from batch.world.generate import build_world

    out = tmp_path_factory.mktemp("boost_world") / "lake"
    build_world("tiny", seed=11, out=out, images=False)
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_bandit_beats_uniform_and_random(sim_lake, seed):
    res = simulate(sim_lake, days=5, seed=seed)
    b, u, r = (res[k]["clicks_per_1000_thb"] for k in ("bandit", "uniform", "random"))
    assert b > u and b > r, res
    for k in ("bandit", "uniform", "random"):  # no policy overspends
        assert res[k]["spend_thb"] <= 5 * 2000.0 + 1e-6


def test_simulation_is_deterministic(sim_lake):
    assert simulate(sim_lake, days=1, seed=3) == simulate(sim_lake, days=1, seed=3)


def test_no_click_boost_lowers_bid():
    b = ThompsonBooster(BoostConfig(bid_decay=0.5, min_bid=0.2))
    b.update(np.array([1, 2]), np.array([40, 40]), np.array([0, 3]))
    assert b.arms[1].bid == 0.5 and b.arms[2].bid == 1.0
    b.update(np.array([1]), np.array([40]), np.array([0]))
    b.update(np.array([1]), np.array([40]), np.array([0]))
    assert b.arms[1].bid == 0.2  # floored
    again = ThompsonBooster.from_mapping(b.to_mapping())
    assert again.arms == b.arms and isinstance(again.arms[1], ArmStats)


def test_live_round_flags_and_feedback(redis_client, jaikod_env):
    store = OnlineStore(redis_client)
    n = 30
    ids = np.arange(1, n + 1, dtype=np.int64)
    store.write_snapshot("v1", user_ids=np.zeros(0, np.int64), user_rows=np.zeros((0, USER_DAILY.width), np.float32),
                         product_ids=ids, product_rows=np.zeros((n, PRODUCT_DAILY.width), np.float32),
                         product_seller=ids, product_region=np.zeros(n, np.int32),
                         context_row=np.zeros(CONTEXT_DAILY.width, np.float32))
    now = time.time()
    ts = int(now * 1000)
    k = 0
    for pid in ids[:10]:  # ten listings with momentum: clicks in the last hour
        for _ in range(int(pid)):
            store.apply_event(f"e{k}", "impression", ts, 1, int(pid), 0)
            store.apply_event(f"e{k}c", "click", ts, 1, int(pid), 0)
            k += 1
    first = run_boost(redis_client, rounds_per_day=24, daily_budget=2400.0, slot_cost=20.0, seed=0, now_s=now,
                      config=BoostConfig(candidates=10))
    assert first.boosted == 5 and first.spend == pytest.approx(100.0)  # 2400 / 24 = 100 THB = 5 slots
    active = sorted(int(x) for x in redis_client.hkeys(BOOST_ACTIVE))
    flags = read_product_rt(store, ids, now)["is_boosted_now"]
    assert sorted(ids[flags > 0].tolist()) == active and set(active) <= set(range(1, 11))
    # next round, an hour later: no clicks on the boosted listings -> their bids drop
    later = now + 3700
    second = run_boost(redis_client, rounds_per_day=24, daily_budget=2400.0, slot_cost=20.0, seed=1, now_s=later,
                       config=BoostConfig(candidates=10))
    assert second.feedback_listings == 5 and second.feedback_clicks == 0
    arms = ThompsonBooster.from_mapping(redis_client.hgetall(BOOST_ARMS)).arms
    assert all(arms[p].bid < 1.0 for p in active)
    still = read_product_rt(store, ids, later)["is_boosted_now"]
    assert sorted(ids[still > 0].tolist()) == sorted(int(x) for x in redis_client.hkeys(BOOST_ACTIVE))
