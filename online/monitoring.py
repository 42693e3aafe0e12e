"""Service monitoring beyond the per-request Prometheus counters of :mod:`online.metrics`:

* :class:`FeedObserver`, an ASGI middleware on ``POST /v1/feed``: per model version (the one named in
  the response, or the arm's model on a 5xx) it counts requests, errors, fallbacks and a latency
  histogram in Redis (``jk:mv:{version}``, read by the canary), counts errors in Prometheus, and feeds
  the fallback-rate alert. Redis writes happen on a background thread, off the request path.
* :class:`FallbackAlerter`: the fallback rate over a sliding window (``alert_window_s``); when it
  crosses ``alert_fallback_rate`` (10 %) a Slack/PagerDuty-compatible JSON payload is POSTed to
  ``alert_webhook_url`` (``text`` for Slack, ``routing_key``/``event_action``/``payload`` for PagerDuty
  Events v2), and a ``resolve`` when it falls back below.
* :class:`StoreCollector`: gauges read from Redis at scrape time: per-feature PSI (written by the
  continuous-training job), CTR / requests per model version, stream lag and pending entries.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import orjson
from prometheus_client.core import GaugeMetricFamily

from gpu_core import ops
from gpu_core.settings import Settings, get_settings
from gpu_core.streams import DEAD_LETTER, DRIFT_PSI, STREAM_STATS, VERSION_STATS, latency_bucket

if TYPE_CHECKING:
    from online.wiring import Services

log = logging.getLogger("jaikod.monitoring")
OBSERVED = ("/v1/feed",)


class FallbackAlerter:
    """Sliding-window fallback rate with a webhook on each crossing of the threshold."""

    def __init__(self, settings: Settings | None = None, clock: Callable[[], float] = time.monotonic,
                 send: Callable[[dict], None] | None = None):
        s = settings or get_settings()
        self.window_s, self.threshold, self.min_requests = s.alert_window_s, s.alert_fallback_rate, \
            s.alert_min_requests
        self.url, self.routing_key = s.alert_webhook_url, s.alert_routing_key
        self.clock = clock
        self.send = send or self._post
        self.events: collections.deque[tuple[float, bool]] = collections.deque()
        self.n_fallback = 0
        self.firing = False
        self.sent: list[dict] = []
        self._lock = threading.Lock()

    @property
    def rate(self) -> float:
        return self.n_fallback / len(self.events) if self.events else 0.0

    def observe(self, used_fallback: bool) -> str | None:
        """Record one response; "trigger"/"resolve" when the alert changes state."""
        now = self.clock()
        with self._lock:
            self.events.append((now, used_fallback))
            self.n_fallback += used_fallback
            while self.events and self.events[0][0] < now - self.window_s:
                _, f = self.events.popleft()
                self.n_fallback -= f
            rate, n = self.rate, len(self.events)
            change = None
            if not self.firing and n >= self.min_requests and rate > self.threshold:
                self.firing, change = True, "trigger"
            elif self.firing and rate <= self.threshold:
                self.firing, change = False, "resolve"
        if change is not None:
            payload = self.payload(change, rate, n)
            self.sent.append(payload)
            if self.url:
                threading.Thread(target=self.send, args=(payload,), daemon=True).start()
        return change

    def payload(self, action: str, rate: float, n: int) -> dict:
        summary = (f"JaiKod feed fallback rate {rate:.1%} over the last {self.window_s:g} s ({n} requests) "
                   f"{'exceeds' if action == 'trigger' else 'is back under'} {self.threshold:.0%}")
        return {"text": (":rotating_light: " if action == "trigger" else ":white_check_mark: ") + summary,
                "routing_key": self.routing_key or "", "event_action": action,
                "dedup_key": "jaikod-fallback-rate",
                "payload": {"summary": summary, "severity": "critical" if action == "trigger" else "info",
                            "source": "jaikod-online", "component": "ranking",
                            "custom_details": {"fallback_rate": round(rate, 4), "requests": n,
                                               "window_s": self.window_s, "threshold": self.threshold}}}

    def _post(self, payload: dict) -> None:
        try:
            httpx.post(self.url, content=orjson.dumps(payload), headers={"content-type": "application/json"},
                       timeout=5.0)
        except httpx.HTTPError as exc:
            log.warning("alert webhook failed: %s", type(exc).__name__)


class FeedRecorder:
    """Records observed feed responses on a background thread (``Services.feed_recorder``)."""

    def __init__(self, services: Services):
        self.svc = services
        self.q: queue.Queue = queue.Queue(maxsize=100_000)
        self._worker: threading.Thread | None = None

    def submit(self, status: int, req: bytes, resp: bytes, seconds: float) -> None:
        if 400 <= status < 500:
            return  # the caller's mistake: neither a served request nor a service error
        if self._worker is None:
            self._worker = threading.Thread(target=self._run, name="jaikod-feed-observer", daemon=True)
            self._worker.start()
        try:
            self.q.put_nowait((status, req, resp, seconds))
        except queue.Full:
            pass

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until everything submitted is recorded (tests, shutdown)."""
        end = time.monotonic() + timeout
        while self.q.unfinished_tasks and time.monotonic() < end:
            time.sleep(0.005)

    def _run(self) -> None:
        while True:
            item = self.q.get()
            try:
                self.record(*item)
            except Exception as exc:  # monitoring never breaks serving
                log.warning("feed observation failed: %s", type(exc).__name__)
            finally:
                self.q.task_done()

    def record(self, status: int, req: bytes, resp: bytes, seconds: float) -> None:
        svc = self.svc
        st = svc.state
        version, fallbacks = None, []
        error = status >= 500
        if not error:
            try:
                body = orjson.loads(resp)
                version, fallbacks = body.get("model_version"), body.get("fallbacks_used") or []
            except orjson.JSONDecodeError:
                error = True
        if version is None and st is not None:
            arm = "production"
            try:
                arm = svc.arm_for(int(orjson.loads(req)["user_id"]))
            except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
                pass
            m = st.models.get(arm) or st.models.get("production")
            version = m.label if m is not None else "none"
        used_fallback = any(f != "cold_start" for f in fallbacks)
        metrics = svc.metrics
        if error:
            metrics.requests.labels("feed", "error", version).inc()
        if svc.alerter is not None:
            svc.alerter.observe(used_fallback or error)
            metrics.fallback_rate.set(svc.alerter.rate)
        if st is None:
            return
        key = VERSION_STATS.format(version)
        pipe = st.redis.pipeline(transaction=False)
        pipe.hincrby(key, "requests", 1)
        if error:
            pipe.hincrby(key, "errors", 1)
        if used_fallback:
            pipe.hincrby(key, "fallbacks", 1)
        pipe.hincrby(key, "lat:" + latency_bucket(seconds * 1000.0), 1)
        pipe.execute()



class FeedObserver:
    """Pure ASGI middleware: observe ``POST /v1/feed`` without touching the route."""

    def __init__(self, app: Any, recorder: FeedRecorder):
        self.app = app
        self.recorder = recorder

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") not in OBSERVED:
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        req_body: list[bytes] = []
        resp_body: list[bytes] = []
        status = [500]
        submitted = [False]

        def submit(code: int, body: bytes) -> None:
            if not submitted[0]:
                submitted[0] = True
                self.recorder.submit(code, b"".join(req_body), body, time.perf_counter() - t0)

        async def recv():
            msg = await receive()
            if msg["type"] == "http.request" and sum(map(len, req_body)) < 65536:
                req_body.append(msg.get("body", b""))
            return msg

        async def snd(msg):
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            elif msg["type"] == "http.response.body":
                if sum(map(len, resp_body)) < 1 << 20:
                    resp_body.append(msg.get("body", b""))
                if not msg.get("more_body", False):  # recorded before the client has the last byte, so a
                    submit(status[0], b"".join(resp_body))  # flush after the response sees it queued
            await send(msg)

        try:
            await self.app(scope, recv, snd)
        except Exception:
            submit(500, b"")
            raise
        submit(status[0], b"".join(resp_body))

class HttpMetrics:
    """Pure ASGI middleware: every HTTP response counted by method, route template (``/v1/listings/{listing_id}``,
    not the raw path, so the label set stays small; ``unmatched`` for 404s of unknown paths) and status code,
    and its latency by route."""

    def __init__(self, app: Any, metrics: Any):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = [500]

        async def snd(msg):
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)

        try:
            await self.app(scope, receive, snd)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.http_requests.labels(scope.get("method", ""), route, str(status[0])).inc()
            self.metrics.http_latency.labels(route).observe(time.perf_counter() - t0)


class StoreCollector:
    """Prometheus gauges read from Redis when /metrics is scraped."""

    def __init__(self, services: Services):
        self.svc = services

    def describe(self):
        return []

    def collect(self):
        st = self.svc.state
        if st is None:
            return
        r = st.redis
        psi = GaugeMetricFamily("jaikod_feature_psi", "PSI of a monitored feature (training vs last window)",
                                labels=["feature"])
        ctr = GaugeMetricFamily("jaikod_model_ctr", "CTR of events carrying the model version", labels=["model_version"])
        mreq = GaugeMetricFamily("jaikod_model_requests", "Feed requests served per model version",
                                 labels=["model_version", "kind"])
        lag = GaugeMetricFamily("jaikod_stream_lag", "Event stream entries not yet processed", labels=["kind"])
        attached = GaugeMetricFamily("jaikod_stream_consumers_attached", "Stream processors with a fresh heartbeat")
        age = GaugeMetricFamily("jaikod_stream_last_applied_age_seconds", "Seconds since an event was last applied")
        dead = GaugeMetricFamily("jaikod_stream_dead_letters", "Poison events waiting in the dead-letter stream")
        try:
            for k, v in r.hgetall(DRIFT_PSI).items():
                psi.add_metric([k.decode()], float(v))
            labels = {m.label for m in st.models.models.values()}
            for label in sorted(labels):
                raw = {k.decode(): int(v) for k, v in r.hgetall(VERSION_STATS.format(label)).items()}
                imp = raw.get("impressions", 0)
                ctr.add_metric([label], raw.get("clicks", 0) / imp if imp else 0.0)
                for kind in ("requests", "errors", "fallbacks", "impressions", "clicks"):
                    mreq.add_metric([label, kind], float(raw.get(kind, 0)))
            for kind, n in self.svc.event_bus().lag().items():
                lag.add_metric([kind], float(n))
            stats = {k.decode(): int(v) for k, v in r.hgetall(STREAM_STATS).items()}
            for kind in ("applied", "archived", "dead_lettered"):
                lag.add_metric([f"{kind}_total"], float(stats.get(kind, 0)))
            rep = ops.stream_report(r)
            attached.add_metric([], float(sum(c["attached"] for c in rep["consumers"])))
            if rep["last_applied_age_s"] is not None:
                age.add_metric([], rep["last_applied_age_s"])
            dead.add_metric([], float(r.xlen(DEAD_LETTER)))
        except Exception as exc:  # a scrape never fails because Redis is slow
            log.warning("store metrics unavailable: %s", type(exc).__name__)
        yield from (psi, ctr, mreq, lag, attached, age, dead)


def install_monitoring(app: Any, services: Services) -> FeedRecorder:
    services.alerter = FallbackAlerter()
    services.metrics.registry.register(StoreCollector(services))
    recorder = FeedRecorder(services)
    services.feed_recorder = recorder
    app.add_middleware(FeedObserver, recorder=recorder)
    app.add_middleware(HttpMetrics, metrics=services.metrics)
    return recorder
