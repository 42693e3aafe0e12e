"""Traffic driver (``jaikod simulate --users N --minutes M``): the world's *hidden* preference model
(:class:`batch.world.hidden.HiddenModel`) plays users against the running API over HTTP.

Each step one simulated user (drawn by activity from ``N`` users of the world) asks for a feed or runs
a search (the world's queries for a category the user likes); every returned item becomes an
``impression`` at its position, clicked with the hidden model's probability at that position and the
Bangkok hour (search: query match), then ``add_to_cart`` and ``order`` with the hidden model's
probabilities. All events of a response go to ``POST /v1/events`` in one batch, echoing the response's
``request_id`` and ``model_version`` (the canary's CTR per model version counts only those).

``drift_category`` mimics the world builder's drift (``jaikod world build --drift-category``): from
``drift_after_s`` on, 35 % of requests become searches for that category with its surge queries, and
its click logit gets +0.8.

The probe (every ``probe_every_s``): one user's feed, a click on its 5th item, then the same feed
again until the ranking differs: the time from the click's acknowledgement to a changed feed is the
"a click changes the next feed" number (stream processor + real-time features + ranking).

This is a client of the service: it imports nothing of ``online`` and talks HTTP only.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from gpu_core.errors import ConfigError, JaikodError
from gpu_core.schema import CATEGORIES, DEVICE_TYPES

DRIFT_SEARCH_SHARE = 0.35
OWN_DEVICE_SHARE = 0.9  # requests on the user's own device (batch.world.generate: sessions)
DRIFT_LOGIT = 0.8
BANGKOK = dt.timezone(dt.timedelta(hours=7))


class ServiceUnreachable(JaikodError):
    http_status = 503


@dataclass
class SimConfig:
    users: int = 200
    minutes: float = 10.0
    url: str = "http://127.0.0.1:8000"
    rps: float = 10.0
    search_share: float = 0.2
    drift_category: str | None = None
    drift_after_s: float = 0.0
    seed: int = 0
    probe_every_s: float = 30.0
    report_every_s: float = 30.0
    timeout_s: float = 5.0


@dataclass
class SimReport:
    requests: int = 0
    errors: int = 0
    events: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    fallbacks: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    by_version_counts: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0, 0]))
    probes_ms: list[float] = field(default_factory=list)  # click ack -> changed feed
    probes_unchanged: int = 0
    probes_skipped: int = 0  # the feed moved without a click: not a measurement

    def add(self, version: str, impressions: int, clicks: int) -> None:
        c = self.by_version_counts[version]
        c[0] += 1
        c[1] += impressions
        c[2] += clicks

    @property
    def by_version(self) -> list[dict[str, Any]]:
        return [{"model_version": v, "requests": c[0], "impressions": c[1], "clicks": c[2],
                 "ctr": round(c[2] / c[1], 4) if c[1] else 0.0} for v, c in sorted(self.by_version_counts.items())]

    def as_rows(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies_ms or [0.0])
        probes = np.asarray(self.probes_ms) if self.probes_ms else None
        return {"requests": self.requests, "errors": self.errors, "events sent": self.events,
                "seconds": round(self.seconds, 1), "requests/s": round(self.requests / max(self.seconds, 1e-9), 2),
                "latency p50/p95/p99 ms": " / ".join(f"{np.percentile(lat, q):.1f}" for q in (50, 95, 99)),
                "fallbacks": ", ".join(f"{k} {v}" for k, v in sorted(self.fallbacks.items())) or "-",
                "click -> changed feed (probes)": "-" if probes is None else
                f"{len(probes)} probes: p50 {np.percentile(probes, 50):.0f} ms, max {probes.max():.0f} ms",
                "probes with no change within 2 s": self.probes_unchanged,
                "probes skipped (feed moved without a click)": self.probes_skipped}


class World:
    """The hidden model plus what a client needs to act as a user: home place, device, queries."""

    def __init__(self, lake: Path, n_users: int, rng: np.random.Generator):
        from batch.world.hidden import HiddenModel
        from batch.world.lexicon import DRIFT_QUERIES, QUERIES

        try:
            self.model = HiddenModel.load(lake)
        except FileNotFoundError as exc:
            raise ConfigError(f"no world under {lake} (run `jaikod world build`): {exc.filename}",
                              field="lake") from None
        m = self.model
        n = min(n_users, m.n_users)
        p = m.activity / m.activity.sum()
        self.users = rng.choice(m.n_users, size=n, replace=False, p=p)
        w = m.activity[self.users].astype(np.float64)
        self.user_p = w / w.sum()
        # each user's device in the world (its sessions use it 9 times in 10, like the world builder's):
        # devices drawn uniformly were "drift" on device_type by themselves (PSI 1.37 in a `make run`)
        users = pd.read_parquet(Path(lake) / "users", columns=["user_id", "device_type"]).sort_values("user_id")
        code = {d: i for i, d in enumerate(DEVICE_TYPES)}
        self.devices = users["device_type"].map(code).fillna(0).to_numpy(np.int64)[self.users]
        self.queries = QUERIES
        self.drift_queries = DRIFT_QUERIES


def _events(world: World, u: int, items: list[dict], body: dict, kind: str, query_cat: int,
            boost: np.ndarray | None, rng: np.random.Generator, device: str, session: str) -> tuple[list[dict], int]:
    m = world.model
    now = int(time.time() * 1000)
    hour = dt.datetime.now(BANGKOK).hour + dt.datetime.now(BANGKOK).minute / 60.0
    pids = np.array([it["product_id"] for it in items], np.int64)
    ok = (pids >= 1) & (pids <= m.n_products)
    pos = np.array([it["position"] for it in items], np.int64)
    p_click = np.zeros(len(items))
    if ok.any():
        p_click[ok] = m.click_prob(np.full(ok.sum(), u), pids[ok] - 1, pos[ok], hour,
                                   query_category=np.full(ok.sum(), query_cat), category_boost=boost)
    clicked = rng.random(len(items)) < p_click
    base = {"user_id": int(u + 1), "request_id": body["request_id"], "model_version": body["model_version"],
            "session_id": session, "device_type": device}
    if kind == "search":
        base["query"] = body.get("_query", "")
    out = []
    for i, it in enumerate(items):
        ev = {**base, "product_id": int(it["product_id"]), "position": int(it["position"])}
        out.append({**ev, "event_id": uuid.uuid4().hex, "event_type": "impression", "ts": now})
        if not clicked[i]:
            continue
        out.append({**ev, "event_id": uuid.uuid4().hex, "event_type": "click", "ts": now + 1})
        j = int(pids[i]) - 1
        if ok[i] and rng.random() < float(m.cart_prob(u, j)):
            out.append({**ev, "event_id": uuid.uuid4().hex, "event_type": "add_to_cart", "ts": now + 2})
            if rng.random() < float(m.order_prob(u, j)):
                out.append({**ev, "event_id": uuid.uuid4().hex, "event_type": "order", "ts": now + 3})
    return out, int(clicked.sum())


def _ranking(body: dict) -> list[int]:
    return [it["product_id"] for it in body.get("items", [])]


def probe(client: httpx.Client, user_id: int, lat: float, lon: float,
          max_wait_s: float = 2.0) -> tuple[str, float | None]:
    """``("changed", ms from the click's acknowledgement to the first feed whose ranking differs)``, or
    ``("unchanged", None)`` after ``max_wait_s``, or ``("skipped", None)`` when the feed moved between two
    requests without a click (other users' traffic) or had fewer than 5 items."""
    req = {"user_id": user_id, "lat": lat, "lon": lon}
    before = client.post("/v1/feed", json=req).json()
    items = before.get("items", [])
    if len(items) < 5 or _ranking(client.post("/v1/feed", json=req).json()) != _ranking(before):
        return "skipped", None
    it = items[4]
    ev = {"event_id": uuid.uuid4().hex, "event_type": "click", "ts": int(time.time() * 1000), "user_id": user_id,
          "product_id": it["product_id"], "position": it["position"], "request_id": before["request_id"],
          "model_version": before["model_version"]}
    client.post("/v1/events", json={"events": [ev]}).raise_for_status()
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < max_wait_s:
        after = client.post("/v1/feed", json=req).json()
        if _ranking(after) != _ranking(before):
            return "changed", (time.perf_counter() - t0) * 1000.0
        time.sleep(0.01)
    return "unchanged", None


def run_simulation(lake: Path, cfg: SimConfig, announce: Callable[[str], None] = print) -> SimReport:
    if cfg.users < 1 or cfg.minutes <= 0 or cfg.rps <= 0:
        raise ConfigError("--users, --minutes and --rps must be positive", field="users")
    if cfg.drift_category is not None and cfg.drift_category not in CATEGORIES:
        raise ConfigError(f"--drift-category must be one of {', '.join(CATEGORIES)}", field="drift_category")
    rng = np.random.default_rng(cfg.seed)
    world = World(Path(lake), cfg.users, rng)
    m = world.model
    drift_cat = CATEGORIES.index(cfg.drift_category) if cfg.drift_category else -1
    boost = np.zeros(len(CATEGORIES))
    if drift_cat >= 0:
        boost[drift_cat] = DRIFT_LOGIT
    report = SimReport()
    client = httpx.Client(base_url=cfg.url, timeout=cfg.timeout_s)
    try:
        client.get("/healthz").raise_for_status()
    except httpx.HTTPError as exc:
        raise ServiceUnreachable(f"the API does not answer at {cfg.url} ({type(exc).__name__}); start it with "
                                 "`make run` or `jaikod serve`", field="url") from None
    announce(f"simulating {len(world.users)} users at {cfg.rps:g} req/s for {cfg.minutes:g} min against {cfg.url}"
             + (f"; drift: {cfg.drift_category} from {cfg.drift_after_s:g} s" if drift_cat >= 0 else ""))
    sessions = {int(u): uuid.uuid4().hex[:16] for u in world.users}
    t_start = time.monotonic()
    end = t_start + cfg.minutes * 60.0
    next_report = t_start + cfg.report_every_s
    next_probe = t_start + min(5.0, cfg.probe_every_s)
    step = 1.0 / cfg.rps
    due = t_start
    try:
        while time.monotonic() < end:
            now = time.monotonic()
            if now < due:
                time.sleep(due - now)
            due += step
            k = int(rng.choice(len(world.users), p=world.user_p))
            u = int(world.users[k])
            device = DEVICE_TYPES[int(world.devices[k]) if rng.random() < OWN_DEVICE_SHARE
                                  else int(rng.integers(len(DEVICE_TYPES)))]
            drifting = drift_cat >= 0 and time.monotonic() - t_start >= cfg.drift_after_s
            fav = int(rng.choice(len(CATEGORIES), p=m.affinity[u] / m.affinity[u].sum()))
            kind, query, qcat = "feed", "", -1
            if drifting and rng.random() < DRIFT_SEARCH_SHARE:
                qs = world.drift_queries[CATEGORIES[drift_cat]]
                kind, qcat = "search", drift_cat
                query = qs[int(rng.integers(len(qs)))]
            elif rng.random() < cfg.search_share:
                qs = world.queries[CATEGORIES[fav]]
                kind, qcat = "search", fav
                query = qs[int(rng.integers(len(qs)))]
            req = {"user_id": u + 1, "lat": float(m.user_lat[u]), "lon": float(m.user_lon[u]), "device_type": device}
            if kind == "search":
                req["query"] = query
            t0 = time.perf_counter()
            try:
                resp = client.post(f"/v1/{kind}", json=req)
            except httpx.HTTPError:
                report.errors += 1
                continue
            report.requests += 1
            report.latencies_ms.append((time.perf_counter() - t0) * 1000.0)
            if resp.status_code != 200:
                report.errors += 1
                continue
            body = resp.json()
            body["_query"] = query
            for f in body.get("fallbacks_used", []):
                report.fallbacks[f] += 1
            events, clicks = _events(world, u, body.get("items", []), body, kind, qcat,
                                     boost if drifting else None, rng, device, sessions[u])
            if events:
                try:
                    client.post("/v1/events", json={"events": events}).raise_for_status()
                    report.events += len(events)
                except httpx.HTTPError:
                    report.errors += 1
            report.add(body["model_version"], len(body.get("items", [])), clicks)
            now = time.monotonic()
            if now >= next_probe:
                next_probe = now + cfg.probe_every_s
                pu = int(world.users[int(rng.integers(len(world.users)))])
                outcome, ms = probe(client, pu + 1, float(m.user_lat[pu]), float(m.user_lon[pu]))
                if outcome == "changed":
                    report.probes_ms.append(ms)
                elif outcome == "unchanged":
                    report.probes_unchanged += 1
                else:
                    report.probes_skipped += 1
            if now >= next_report:
                next_report = now + cfg.report_every_s
                report.seconds = now - t_start
                ctr = "; ".join(f"{r['model_version']}: {r['requests']} req, CTR {r['ctr']:.4f}"
                                for r in report.by_version)
                announce(f"[{report.seconds:5.0f} s] {report.requests} requests, {report.events} events, "
                         f"{report.errors} errors | {ctr}")
    finally:
        client.close()
        report.seconds = time.monotonic() - t_start
    return report
