"""Canary rollout of the ``staging`` ranker: ``settings.canary_share`` (5 %) of ``/v1/feed`` users,
sticky by a hash of the user id, are served by staging (:meth:`CanaryController.arm_for`).

Per model version the service counts requests, errors, fallbacks and a latency histogram, and the
stream processor counts impressions and clicks of events carrying that ``model_version`` (all in
Redis ``jk:mv:{version}``, shared by every worker). :meth:`CanaryController.tick` (one worker at a
time, a Redis lock) decides with :func:`decide`: after ``canary_min_requests`` staging requests,
promote when its CTR is not worse than production's and its error rate and p99 are within bounds,
roll back (drop the staging alias) otherwise. Registry calls go through :mod:`gpu_core.registry`.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import orjson
import redis

from gpu_core.redis_client import connect
from gpu_core.registry import PRODUCTION, RANKER, STAGING, Registry, promote, reject
from gpu_core.settings import Settings, get_settings
from gpu_core.streams import (
    CANARY,
    CANARY_BASELINE,
    CANARY_LOCK,
    CANARY_LOG,
    VERSION_STATS,
    quantile_from_buckets,
)

log = logging.getLogger("jaikod.canary")
SALT = "jaikod-canary"


def user_share(user_id: int, salt: str = SALT) -> float:
    """A stable number in [0, 1) per user (blake2b of the id): the canary's sticky assignment."""
    h = hashlib.blake2b(f"{salt}:{int(user_id)}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2.0**64


def in_canary(user_id: int, share: float) -> bool:
    return share > 0 and user_share(user_id) < share


@dataclass
class VersionStats:
    version: str
    requests: int = 0
    errors: int = 0
    fallbacks: int = 0
    impressions: int = 0
    clicks: int = 0
    latency: dict[str, int] = field(default_factory=dict)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def ctr(self) -> float:
        return self.clicks / self.impressions if self.impressions else 0.0

    @property
    def p99_ms(self) -> float:
        return quantile_from_buckets(self.latency, 0.99)

    def row(self) -> dict[str, Any]:
        return {"version": self.version, "requests": self.requests, "errors": self.errors,
                "error_rate": round(self.error_rate, 4), "impressions": self.impressions, "clicks": self.clicks,
                "ctr": round(self.ctr, 4), "p99_ms": self.p99_ms}


def _stats(version: str, raw: dict[str, int]) -> VersionStats:
    return VersionStats(version, raw.get("requests", 0), raw.get("errors", 0), raw.get("fallbacks", 0),
                        raw.get("impressions", 0), raw.get("clicks", 0),
                        {k[4:]: v for k, v in raw.items() if k.startswith("lat:")})


def _raw(r: redis.Redis, version: str) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in r.hgetall(VERSION_STATS.format(version)).items()}


def read_stats(r: redis.Redis, version: str) -> VersionStats:
    return _stats(version, _raw(r, version))


def stats_since_baseline(r: redis.Redis, production: str, staging: str) -> VersionStats:
    """Production's counters since the canary first saw ``staging`` (the snapshot is taken now when
    ``jk:canary:baseline`` holds another pair): the period the staging arm was measured on."""
    now = _raw(r, production)
    base = {k.decode(): v.decode() for k, v in r.hgetall(CANARY_BASELINE).items()}
    if base.get("staging") != staging or base.get("production") != production:
        pipe = r.pipeline(transaction=True)
        pipe.delete(CANARY_BASELINE)
        pipe.hset(CANARY_BASELINE, mapping={"staging": staging, "production": production, **now})
        pipe.execute()
        return _stats(production, {})
    return _stats(production, {k: v - int(base.get(k, 0)) for k, v in now.items()})


@dataclass(frozen=True)
class CanaryDecision:
    action: Literal["wait", "promote", "rollback"]
    reason: str


def decide(prod: VersionStats, staging: VersionStats, s: Settings) -> CanaryDecision:
    """The canary rule (pure): wait for enough traffic, then promote or roll back."""
    if staging.requests < s.canary_min_requests:
        return CanaryDecision("wait", f"{staging.requests} of {s.canary_min_requests} staging requests")
    if staging.error_rate > s.canary_max_error_rate:
        return CanaryDecision("rollback", f"error rate {staging.error_rate:.4f} > {s.canary_max_error_rate}")
    if staging.p99_ms > s.canary_max_p99_ms:
        return CanaryDecision("rollback", f"p99 {staging.p99_ms:g} ms > {s.canary_max_p99_ms:g} ms")
    if staging.impressions < s.canary_min_impressions or prod.impressions < s.canary_min_impressions:
        return CanaryDecision("wait", f"impressions staging {staging.impressions}, production {prod.impressions}"
                                      f" (< {s.canary_min_impressions})")
    floor = prod.ctr * (1.0 - s.canary_ctr_tolerance)
    if staging.ctr >= floor:
        return CanaryDecision("promote", f"CTR {staging.ctr:.4f} >= production {prod.ctr:.4f}; error rate "
                                         f"{staging.error_rate:.4f}, p99 {staging.p99_ms:g} ms within bounds")
    return CanaryDecision("rollback", f"CTR {staging.ctr:.4f} < production {prod.ctr:.4f}")


class CanaryController:
    """Arm assignment and the automatic promote/rollback loop of one service."""

    def __init__(self, services: Any, settings: Settings | None = None):
        self.svc = services  # online.wiring.Services (its state is set at start-up)
        self.s = settings or services.settings
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def state(self) -> Any:
        return self.svc.state

    def arm_for(self, user_id: int) -> str:
        st = self.state
        if self._thread is None and self.s.canary_interval_s > 0 and st is not None and st.registry is not None:
            self.start()
        if st is None or st.models.get(STAGING) is None or not in_canary(user_id, self.s.canary_share):
            return PRODUCTION
        return STAGING

    # ---- the decision loop ---------------------------------------------------------------------
    def tick(self, registry: Registry | None = None) -> CanaryDecision | None:
        """One check (skipped when another worker holds the lock); the decision taken, if any."""
        st = self.state
        registry = registry or (st.registry if st is not None else None)
        if st is None or registry is None:
            return None
        d = check(st.redis, registry, self.s)
        if d is not None and d.action != "wait":
            st.models.refresh()
        return d

    def start(self) -> None:
        if self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.wait(self.s.canary_interval_s):
                try:
                    self.tick()
                except Exception as exc:  # never take the service down
                    log.warning("canary check failed: %s", exc)

        self._thread = threading.Thread(target=loop, name="jaikod-canary", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()


def check(r: redis.Redis, registry: Registry, s: Settings) -> CanaryDecision | None:
    """One canary check under the Redis lock (None: another check runs, or nothing to decide): read both
    arms' stats, :func:`decide`, apply the decision to the registry and record it."""
    lock_ms = int(max(s.canary_interval_s, 1.0) * 1000)
    if not r.set(CANARY_LOCK, "1", nx=True, px=lock_ms):
        return None
    try:
        staging = registry.get(RANKER, STAGING)
        prod = registry.get(RANKER, PRODUCTION)
        if staging is None or prod is None or staging.version == prod.version:
            return None
        s_stats, p_stats = read_stats(r, staging.label), stats_since_baseline(r, prod.label, staging.label)
        d = decide(p_stats, s_stats, s)
        record = {"at_ms": int(time.time() * 1000), "staging": staging.label, "production": prod.label,
                  **asdict(d), "staging_stats": s_stats.row(), "production_stats": p_stats.row()}
        if d.action == "promote":
            promote(registry, staging.version)
        elif d.action == "rollback":
            reject(registry, staging.version)
        pipe = r.pipeline(transaction=False)
        pipe.hset(CANARY, mapping={"staging": staging.label, "production": prod.label, "action": d.action,
                                   "reason": d.reason, "at_ms": record["at_ms"]})
        if d.action != "wait":
            pipe.lpush(CANARY_LOG, orjson.dumps(record))
            pipe.ltrim(CANARY_LOG, 0, 99)
        pipe.execute()
        if d.action != "wait":
            log.info(orjson.dumps({"event": "canary_" + d.action, "staging": staging.label,
                                   "production": prod.label, "reason": d.reason}).decode())
        return d
    finally:
        r.delete(CANARY_LOCK)


def check_once(s: Settings, registry: Registry) -> CanaryDecision | None:
    """``jaikod model canary-check``: one :func:`check` against the deployment's Redis (the API workers
    hot-reload the models when the aliases move)."""
    r = connect(s.redis_url, socket_timeout=5.0, socket_connect_timeout=5.0)
    return check(r, registry, s)


def canary_status(r: redis.Redis, registry: Registry) -> dict[str, Any]:
    """What ``jaikod model status`` shows: share, arms with their stats, the last decisions."""
    s = get_settings()
    out: dict[str, Any] = {"share": s.canary_share, "min_requests": s.canary_min_requests, "arms": []}
    for alias in (PRODUCTION, STAGING):
        ref = registry.get(RANKER, alias)
        if ref is not None:
            out["arms"].append({"alias": alias, **read_stats(r, ref.label).row()})
    state = {k.decode(): v.decode() for k, v in r.hgetall(CANARY).items()}
    out["last"] = state
    out["log"] = [orjson.loads(x) for x in r.lrange(CANARY_LOG, 0, 4)]
    return out
