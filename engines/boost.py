"""Auto-boost autopilot: a contextual Thompson-sampling bandit that spends a daily budget on trending slots.

Each round (e.g. an hour) the autopilot

1. takes the listings with the highest **momentum** (view velocity, ``views_last_hour`` from the
   real-time features) as candidates;
2. draws, for each candidate, a click rate from its Beta posterior. The prior is *contextual*: its mean is
   the listing's recent smoothed CTR (``ctr_last_hour``) with the strength of ``prior_strength`` pseudo
   impressions, so a hot listing starts optimistic and evidence from its own boosts takes over;
3. ranks candidates by ``sampled rate x bid multiplier`` and buys trending slots in that order at
   ``bid = slot_cost x bid multiplier`` until the round's share of the daily budget is spent (a higher bid
   gets a higher slot);
4. after the round, updates each boosted listing's posterior with its clicks and impressions; a boost that
   got **no click lowers that listing's bid** (x ``bid_decay``), a boost with clicks restores it.

The state (posteriors and bid multipliers per listing) is a plain dict, persisted by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class BoostConfig:
    candidates: int = 50  # momentum shortlist per round
    prior_strength: float = 10.0  # pseudo impressions behind the contextual prior
    prior_floor: float = 0.005  # prior CTR of a listing with no recent views
    bid_decay: float = 0.7  # bid multiplier after a boost without clicks
    bid_recover: float = 1.25  # ... after a boost with clicks (capped at 1)
    min_bid: float = 0.2  # the multiplier never drops below this


@dataclass
class ArmStats:
    clicks: float = 0.0
    impressions: float = 0.0
    bid: float = 1.0
    boosts: int = 0


@dataclass
class Allocation:
    listing_ids: np.ndarray  # int64, in slot order (slot 1 first)
    bids: np.ndarray  # float64, THB paid per slot
    sampled: np.ndarray  # sampled click rates of the chosen listings

    @property
    def spend(self) -> float:
        return float(self.bids.sum())


@dataclass
class ThompsonBooster:
    config: BoostConfig = field(default_factory=BoostConfig)
    arms: dict[int, ArmStats] = field(default_factory=dict)

    def shortlist(self, ids: np.ndarray, velocity: np.ndarray) -> np.ndarray:
        """Indexes of the ``candidates`` listings with the highest view velocity (ties by id)."""
        ids = np.asarray(ids, dtype=np.int64)
        order = np.lexsort((ids, -np.asarray(velocity, dtype=np.float64)))
        return order[: self.config.candidates]

    def allocate(self, ids: np.ndarray, velocity: np.ndarray, ctr: np.ndarray, budget: float, slot_cost: float,
                 rng: np.random.Generator, max_slots: int | None = None) -> Allocation:
        c = self.config
        ids = np.asarray(ids, dtype=np.int64)
        idx = self.shortlist(ids, velocity)
        cand = ids[idx]
        prior = np.maximum(np.asarray(ctr, dtype=np.float64)[idx], c.prior_floor)
        stats = [self.arms.get(int(i), ArmStats()) for i in cand]
        clicks = np.array([a.clicks for a in stats])
        misses = np.array([max(a.impressions - a.clicks, 0.0) for a in stats])
        bid = np.array([a.bid for a in stats])
        theta = rng.beta(1.0 + c.prior_strength * prior + clicks, 1.0 + c.prior_strength * (1 - prior) + misses)
        order = np.argsort(-(theta * bid), kind="stable")
        chosen, paid, left = [], [], budget
        for k in order:
            price = slot_cost * bid[k]
            if price > left + 1e-9 or (max_slots is not None and len(chosen) >= max_slots):
                continue
            chosen.append(k)
            paid.append(price)
            left -= price
        chosen_arr = np.array(chosen, dtype=np.int64)
        paid_arr = np.array(paid, dtype=np.float64)
        by_bid = np.argsort(-paid_arr, kind="stable")  # the highest bid gets the first slot
        return Allocation(cand[chosen_arr][by_bid], paid_arr[by_bid], theta[chosen_arr][by_bid])

    def update(self, listing_ids: np.ndarray, impressions: np.ndarray, clicks: np.ndarray) -> None:
        c = self.config
        for lid, n, k in zip(np.asarray(listing_ids), np.asarray(impressions), np.asarray(clicks), strict=True):
            a = self.arms.setdefault(int(lid), ArmStats())
            a.impressions += float(n)
            a.clicks += float(k)
            a.boosts += 1
            a.bid = max(c.min_bid, a.bid * c.bid_decay) if k <= 0 else min(1.0, a.bid * c.bid_recover)

    # ---- persistence helpers ----------------------------------------------------------------
    def to_mapping(self) -> dict[str, str]:
        return {str(k): f"{a.clicks}:{a.impressions}:{a.bid}:{a.boosts}" for k, a in self.arms.items()}

    @classmethod
    def from_mapping(cls, mapping: dict, config: BoostConfig | None = None) -> ThompsonBooster:
        arms = {}
        for k, v in mapping.items():
            k = k.decode() if isinstance(k, bytes) else k
            v = v.decode() if isinstance(v, bytes) else v
            c, n, b, m = v.split(":")
            arms[int(k)] = ArmStats(float(c), float(n), float(b), int(m))
        return cls(config or BoostConfig(), arms)


# ---- baselines for the simulation -------------------------------------------------------------------
def uniform_allocation(ids: np.ndarray, velocity: np.ndarray, budget: float, slot_cost: float, round_no: int,
                       candidates: int) -> Allocation:
    """The same shortlist, the budget spread evenly: candidates take turns, round-robin, at the full bid."""
    ids = np.asarray(ids, dtype=np.int64)
    order = np.lexsort((ids, -np.asarray(velocity, dtype=np.float64)))[:candidates]
    n = min(int(budget // slot_cost), len(order))
    start = (round_no * n) % max(len(order), 1)
    pick = np.take(order, np.arange(start, start + n) % len(order))
    return Allocation(ids[pick], np.full(n, slot_cost), np.zeros(n))

