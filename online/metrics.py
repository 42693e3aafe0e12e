"""Prometheus metrics of the service (one registry per app so tests can build several apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("jaikod_requests_total", "Ranking requests", ["endpoint", "status", "model_version"],
                                registry=r)
        self.latency = Histogram("jaikod_request_latency_seconds", "End-to-end ranking latency", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.stage_latency = Histogram("jaikod_stage_latency_seconds", "Per-stage latency", ["stage"],
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.fallbacks = Counter("jaikod_fallbacks_total", "Fallbacks used", ["fallback"], registry=r)
        self.responses_with_fallback = Counter("jaikod_responses_with_fallback_total",
                                               "Responses that used at least one fallback", ["endpoint"], registry=r)
        self.candidates_removed = Counter("jaikod_candidates_removed_total", "Candidates removed, by reason",
                                          ["reason"], registry=r)
        # streaming / monitoring (issue 5); PSI, CTR per version and stream lag: online.monitoring.StoreCollector
        self.events = Counter("jaikod_events_total", "Events posted to /v1/events", ["result"], registry=r)
        self.shed = Counter("jaikod_requests_shed_total", "Requests answered 429 by admission control",
                            ["admission_class", "reason"], registry=r)
        self.artifacts_refused = Counter("jaikod_artifacts_refused_total",
                                         "Published model/index versions refused (checksum mismatch, unreadable); "
                                         "the version loaded before keeps serving", ["kind"], registry=r)
        for kind in ("model", "index"):  # exported at 0 from the start, so the alert's increase() sees the first
            self.artifacts_refused.labels(kind)
        self.fallback_rate = Gauge("jaikod_fallback_rate_window",
                                   "Share of feed responses with a fallback over the alert's sliding window",
                                   registry=r)

        # every HTTP response by route template and status code (online.monitoring.HttpMetrics)
        self.http_requests = Counter("jaikod_http_requests_total", "HTTP responses by route and status code",
                                     ["method", "route", "status"], registry=r)
        self.http_latency = Histogram("jaikod_http_request_duration_seconds", "HTTP request latency by route",
                                      ["route"], buckets=LATENCY_BUCKETS, registry=r)

    def observe(self, endpoint: str, body: dict, removed: dict[str, int]) -> None:
        self.requests.labels(endpoint, "ok", body["model_version"]).inc()
        t = body["timings_ms"]
        self.latency.labels(endpoint).observe(t.get("total", 0.0) / 1000.0)
        for stage, ms in t.items():
            if stage != "total":
                self.stage_latency.labels(stage).observe(ms / 1000.0)
        for f in body["fallbacks_used"]:
            self.fallbacks.labels(f).inc()
        if [f for f in body["fallbacks_used"] if f != "cold_start"]:
            self.responses_with_fallback.labels(endpoint).inc()
        for reason, n in removed.items():
            if n:
                self.candidates_removed.labels(reason).inc(n)
