"""Auto-boost autopilot jobs: ``jaikod boost run`` (one round against the live feature store) and the
simulation on the synthetic world (``jaikod boost simulate``, ``bench/bench_boost.py``).

Run (one round, e.g. hourly from cron):

1. feedback: the listings boosted in the previous round (``jk:boost:active``) get their clicks and
   impressions of the last hour from the real-time ring buffers; the bandit's posteriors and bids update;
2. candidates: the live snapshot's in-stock listings, momentum = ``views_last_hour``;
3. allocate this round's share of the daily budget (never more than what is left of today's budget,
   ``jk:boost:spend:{YYYY-MM-DD}``); un-flag the old boosts, flag the new ones with
   ``OnlineStore.set_flags(pid, boosted=...)`` (the ``is_boosted_now`` feature the ranker scores).

Simulation: rounds of a simulated week over the world's listings; the momentum of a listing is its
organic click rate from the world's last days of events (Poisson per round), a boosted slot is shown to
users drawn by activity, and clicks are drawn from the world's *hidden* click model
(:class:`batch.world.hidden.HiddenModel`) at the slot's position and the round's hour. Policies get the same
budget and the same user draws: the bandit, uniform (the same momentum shortlist, evenly), random (any
in-stock listing).
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import redis

from engines.boost import Allocation, BoostConfig, ThompsonBooster, uniform_allocation
from engines.realtime import product_window_counts, read_product_rt
from gpu_core.feature_store import OnlineStore
from gpu_core.redis_client import connect
from gpu_core.settings import get_settings
from gpu_core.streams import BOOST_ACTIVE, BOOST_ARMS, BOOST_SPEND
from kernels.windows import smoothed_ctr


# ---- one live round -----------------------------------------------------------------------------------
@dataclass
class BoostRunSummary:
    boosted: int
    unboosted: int
    spend: float
    budget_left: float
    feedback_listings: int
    feedback_clicks: int
    seconds: float
    listing_ids: tuple[int, ...] = ()  # what this round boosted, with its bid each
    bids: tuple[float, ...] = ()

    def as_rows(self) -> dict:
        return {"boosted now": self.boosted, "un-boosted": self.unboosted, "spent this round (THB)": round(self.spend, 2),
                "budget left today (THB)": round(self.budget_left, 2), "feedback listings": self.feedback_listings,
                "feedback clicks": self.feedback_clicks, "seconds": round(self.seconds, 2)}


def _window_counts(store: OnlineStore, ids: np.ndarray, now_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(impressions, clicks) of the last hour per listing, from the real-time ring buffers."""
    return product_window_counts(store.read_product_rt_raw(ids), now_s)


def run_boost(client: redis.Redis | None = None, *, rounds_per_day: int = 24, daily_budget: float | None = None,
              slot_cost: float | None = None, seed: int | None = None, now_s: float | None = None,
              config: BoostConfig | None = None) -> BoostRunSummary:
    t0 = time.perf_counter()
    s = get_settings()
    r = client or connect(s.redis_url)
    store = OnlineStore(r)
    now_s = time.time() if now_s is None else now_s
    budget = s.boost_daily_budget if daily_budget is None else daily_budget
    cost = s.boost_slot_cost if slot_cost is None else slot_cost
    booster = ThompsonBooster.from_mapping(r.hgetall(BOOST_ARMS), config)
    # 1. feedback of the previous round
    prev = {int(k): float(v) for k, v in r.hgetall(BOOST_ACTIVE).items()}
    fb_clicks = 0
    if prev:
        pids = np.array(sorted(prev), dtype=np.int64)
        impr, clicks = _window_counts(store, pids, now_s)
        booster.update(pids, impr, clicks)
        fb_clicks = int(clicks.sum())
    # 2. candidates: the live snapshot's listings that are in stock
    version = store.current_version()
    if version is None:
        from gpu_core.errors import FeatureStoreError

        raise FeatureStoreError("no feature snapshot materialised yet (run `jaikod batch materialize`)")
    ids = store.load_product_mirror(version)["ids"]
    rt = read_product_rt(store, ids, now_s)
    ok = rt["stock_status"] > 0
    ids, velocity, ctr = ids[ok], rt["views_last_hour"][ok], rt["ctr_last_hour"][ok]
    # 3. this round's budget
    day_key = BOOST_SPEND.format(dt.datetime.fromtimestamp(now_s, dt.UTC).date().isoformat())
    spent_today = float(r.get(day_key) or 0.0)
    round_budget = min(budget / rounds_per_day, max(budget - spent_today, 0.0))
    rng = np.random.default_rng(seed)
    alloc = booster.allocate(ids, velocity, ctr, round_budget, cost, rng)
    new = {int(i): float(b) for i, b in zip(alloc.listing_ids, alloc.bids, strict=True)}
    for pid in set(prev) - set(new):
        store.set_flags(pid, boosted=False)
    for pid in new:
        store.set_flags(pid, boosted=True)
    pipe = r.pipeline(transaction=True)
    pipe.delete(BOOST_ACTIVE)
    if new:
        pipe.hset(BOOST_ACTIVE, mapping={str(k): f"{v:.4f}" for k, v in new.items()})
    mapping = booster.to_mapping()
    if mapping:
        pipe.hset(BOOST_ARMS, mapping=mapping)
    pipe.incrbyfloat(day_key, alloc.spend)
    pipe.expire(day_key, 3 * 86400)
    pipe.execute()
    return BoostRunSummary(len(new), len(set(prev) - set(new)), alloc.spend,
                           max(budget - spent_today - alloc.spend, 0.0), len(prev), fb_clicks,
                           time.perf_counter() - t0, tuple(new), tuple(new.values()))


# ---- simulation on the synthetic world -----------------------------------------------------------------
@dataclass
class SimWorld:
    model: object  # HiddenModel
    ids: np.ndarray  # product ids of in-stock listings
    pidx: np.ndarray  # their 0-based index in the hidden model
    rate: np.ndarray  # organic clicks per round (momentum mean)
    ctr: np.ndarray  # smoothed organic CTR (the contextual prior)
    user_p: np.ndarray  # user sampling weights (activity)


def load_sim_world(lake: Path, days: int = 3) -> SimWorld:
    from batch.lake import event_dates, read_events
    from batch.world.hidden import HiddenModel

    model = HiddenModel.load(lake)
    dates = event_dates(lake)[-days:]
    ev = read_events(lake, dates, ["event_type", "product_id"])
    n = model.n_products
    pid = ev["product_id"].to_numpy(np.int64)
    clicks = np.bincount(pid[(ev["event_type"] == "click").to_numpy()] - 1, minlength=n)[:n]
    impr = np.bincount(pid[(ev["event_type"] == "impression").to_numpy()] - 1, minlength=n)[:n]
    in_stock = np.asarray(model.product_in_stock, bool)
    idx = np.flatnonzero(in_stock)
    rounds = days * 24
    return SimWorld(model, idx + 1, idx, clicks[idx] / rounds,
                    np.asarray(smoothed_ctr(clicks[idx], impr[idx], xp=np), np.float64),
                    model.activity / model.activity.sum())


def _show(world: SimWorld, alloc: Allocation, users: np.ndarray, hour: int, rng: np.random.Generator
          ) -> tuple[np.ndarray, np.ndarray]:
    """Impressions and clicks of each boosted slot (slot k at position k, ``users`` [slots, m])."""
    n = len(alloc.listing_ids)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    m = users.shape[1]
    pidx = np.asarray(alloc.listing_ids, np.int64) - 1
    pos = np.arange(1, n + 1)[:, None]
    p = world.model.click_prob(users[:n], pidx[:, None], pos, hour)
    clicks = (rng.random((n, m)) < p).sum(axis=1)
    return np.full(n, m, np.int64), clicks.astype(np.int64)


def simulate(lake: Path, *, days: int = 7, rounds_per_day: int = 24, daily_budget: float = 2000.0,
             slot_cost: float = 20.0, users_per_slot: int = 40, seed: int = 0,
             config: BoostConfig | None = None) -> dict:
    """Clicks per budget of the bandit vs uniform vs random allocation (same budget, same user draws)."""
    world = load_sim_world(lake)
    config = config or BoostConfig()
    round_budget = daily_budget / rounds_per_day
    max_slots = int(round_budget // slot_cost) * 4  # at most this many trending slots per round
    out = {}
    for policy in ("bandit", "uniform", "random"):
        traffic = np.random.default_rng(seed)  # same momentum and users for every policy
        choice = np.random.default_rng(seed + 1)
        clicks_rng = np.random.default_rng(seed + 2)
        booster = ThompsonBooster(config)
        clicks = spend = slots = 0.0
        for t in range(days * rounds_per_day):
            velocity = traffic.poisson(world.rate)
            users = traffic.choice(len(world.user_p), size=(max_slots, users_per_slot), p=world.user_p)
            hour = t % 24
            if policy == "bandit":
                alloc = booster.allocate(world.ids, velocity, world.ctr, round_budget, slot_cost, choice, max_slots)
            elif policy == "uniform":
                alloc = uniform_allocation(world.ids, velocity, round_budget, slot_cost, t, config.candidates)
            else:
                n = int(round_budget // slot_cost)
                pick = choice.choice(len(world.ids), size=n, replace=False)
                alloc = Allocation(world.ids[pick], np.full(n, slot_cost), np.zeros(n))
            impr, c = _show(world, alloc, users, hour, clicks_rng)
            if policy == "bandit":
                booster.update(alloc.listing_ids, impr, c)
            clicks += float(c.sum())
            spend += alloc.spend
            slots += len(alloc.listing_ids)
        out[policy] = {"clicks": int(clicks), "spend_thb": round(spend, 2), "slots": int(slots),
                       "clicks_per_1000_thb": round(1000.0 * clicks / max(spend, 1e-9), 3)}
    out["bandit_vs_uniform"] = round(out["bandit"]["clicks_per_1000_thb"] / max(out["uniform"]["clicks_per_1000_thb"], 1e-9), 3)
    out["bandit_vs_random"] = round(out["bandit"]["clicks_per_1000_thb"] / max(out["random"]["clicks_per_1000_thb"], 1e-9), 3)
    out["config"] = {"days": days, "rounds_per_day": rounds_per_day, "daily_budget": daily_budget,
                     "slot_cost": slot_cost, "users_per_slot": users_per_slot, "seed": seed,
                     "candidates": config.candidates, "listings": int(len(world.ids))}
    return out
